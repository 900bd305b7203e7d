"""Which of one painted image's local prototypes are kept when a class has more cells than the cap.

A 384 px image has ~2,300 feature cells; `SegmentationParams.image_max_local_prototypes` (512) keeps at most that
many per class and image, so background is subsampled ~4:1. How (`image_local_sampling`):

- random:  a seeded random subsample (`SegmentationParams.seed`); volumes always use it.
- grid:    spatially even: the class's cells in row-major order, every (n / cap)-th one (a lattice over the image).
- fps:     farthest-point sampling in feature space (cosine distance), from the cell nearest the class's mean:
           each next cell is the one least like any kept so far, so rare looks (shadows, calipers) are kept and
           the many near-identical cells of common tissue are thinned. A query cell is scored by its best match,
           so what matters is that every look has a prototype near it, which is what this covers.
- kmeans:  spherical k-means centroids (Lloyd, `KMEANS_STEPS` steps from the grid subsample): pooled prototypes,
           each the mean of the cells most like it; its origin is the member cell nearest the centroid.

None of them depends on `seed` except random, and each looks at one image only, so an image's prototypes never
depend on other images (a correction re-matches that image alone, core/matching.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FewShotError
from .config import LOCAL_SAMPLINGS as SAMPLINGS
KMEANS_STEPS = 5


def subsample(vectors: torch.Tensor, owner: torch.Tensor, cells: torch.Tensor, n_classes: int, cap: int,
              seed: int = 0, sampling: str = "random") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At most `cap` local prototypes per class, class by class (background first).

    vectors: (L, C); owner: (L,) long class index 0..n_classes; cells: (L, 2) long (y, x), -1 where unknown.
    Returns (vectors (L', C), owner (L',), cells (L', 2)); a class with `cap` or fewer entries is kept whole.
    """
    if sampling not in SAMPLINGS:
        raise FewShotError(f"Local prototype sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}.")
    generator = torch.Generator().manual_seed(seed) if sampling == "random" else None
    parts_v, parts_o, parts_c = [], [], []
    for k in range(n_classes + 1):
        mine = (owner == k).nonzero(as_tuple=True)[0]
        v, c = vectors[mine], cells[mine]
        if len(mine) > cap:
            if sampling == "kmeans":
                v, c = kmeans(v, c, cap)
            else:
                if sampling == "random":
                    pick = torch.randperm(len(mine), generator=generator)[:cap].to(mine.device)
                elif sampling == "grid":
                    pick = even_in_space(c, cap)
                else:
                    pick = farthest_points(v, cap)
                v, c = v[pick], c[pick]
        parts_v.append(v)
        parts_o.append(owner.new_full((len(v),), k))
        parts_c.append(c)
    return torch.cat(parts_v), torch.cat(parts_o), torch.cat(parts_c)


def even_in_space(cells: torch.Tensor, cap: int) -> torch.Tensor:
    """(n, 2) cells (y, x) -> (cap,) indices: every (n / cap)-th cell in row-major order (cells' own order
    where unknown, -1), the first pick half a step in."""
    n = len(cells)
    width = int(cells[:, 1].max()) + 1 if n else 1
    order = torch.argsort(cells[:, 0] * width + cells[:, 1], stable=True)
    steps = ((torch.arange(cap, dtype=torch.float64) + 0.5) * n / cap).long().clamp_max(n - 1)
    return order[steps.to(order.device)]


def farthest_points(vectors: torch.Tensor, cap: int) -> torch.Tensor:
    """(n, C) -> (cap,) indices by greedy farthest-point sampling under cosine distance, starting at the vector
    most like the mean (deterministic; ties go to the lower index)."""
    unit = F.normalize(vectors.float(), dim=1)
    first = int(torch.argmax(unit @ F.normalize(unit.mean(0), dim=0)))
    picks = torch.empty(cap, dtype=torch.long)
    picks[0] = first
    nearest = unit @ unit[first]  # (n,) best similarity to anything kept
    for j in range(1, cap):
        nxt = int(torch.argmin(nearest))
        picks[j] = nxt
        nearest = torch.maximum(nearest, unit @ unit[nxt])
    return picks.to(vectors.device)


def kmeans(vectors: torch.Tensor, cells: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, C) vectors, (n, 2) cells -> (cap, C) spherical k-means centroids (from the grid subsample, KMEANS_STEPS
    Lloyd steps; a cluster that empties keeps its centre) and (cap, 2) the cell of each centroid's nearest member."""
    unit = F.normalize(vectors.float(), dim=1)
    centres = unit[even_in_space(cells, cap)]
    for _ in range(KMEANS_STEPS):
        assign = torch.argmax(unit @ centres.T, dim=1)  # (n,)
        sums = torch.zeros_like(centres).index_add_(0, assign, unit)
        counts = torch.bincount(assign, minlength=cap)
        centres = torch.where(counts[:, None] > 0, F.normalize(sums, dim=1), centres)
    nearest = torch.argmax(centres @ unit.T, dim=1)  # (cap,) the member most like each centre
    return centres.to(vectors.dtype), cells[nearest]
