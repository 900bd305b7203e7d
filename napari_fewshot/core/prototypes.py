"""Prototypes by masked average pooling (PANet), global and local (SSL-ALPNet).

Masked average pooling in PANet upsamples the (C, h, w) features to the mask's (H, W) and averages
them under the mask. Bilinear upsampling is linear, so that average equals a weighted average of
the feature cells with weights U^T(mask), U^T being the adjoint of the upsampling; we compute the
weights that way and never hold a (C, H, W) tensor. Local prototypes pool the same weighted
features over small windows of cells where the class covers most of the window.

Every prototype keeps its origin: the support slice it came from and a representative cell (y, x) on
that slice's feature grid (the cell itself; for a window, its cell of highest class weight), so a
predicted pixel can be explained by a painted cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import FewShotError
from .subsample import subsample


@dataclass
class PrototypeSet:
    """Prototypes of background (class index 0) and K classes.

    vectors:   (P, C) float32, L2-normalised.
    owner:     (P,) long, class index of each prototype (0 = background, 1..K).
    is_global: (P,) bool, True for the one averaged prototype per class.
    class_ids: the K label values of classes 1..K.
    origins:   (P, 3) long (support slice, y, x on its feature grid) of each prototype, aligned with
               `vectors`; -1 rows for the global prototypes (averaged over slices) and for prototypes of
               unknown origin (e.g. a bank's). None when nothing is known.
    """

    vectors: torch.Tensor
    owner: torch.Tensor
    is_global: torch.Tensor
    class_ids: list[int]
    counts: dict[int, int] = field(default_factory=dict)
    origins: torch.Tensor | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    def to(self, device: torch.device) -> "PrototypeSet":
        return PrototypeSet(self.vectors.to(device), self.owner.to(device), self.is_global.to(device),
                            list(self.class_ids), dict(self.counts), self.origins)


def upsample_adjoint(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adjoint of bilinear upsampling (align_corners=False) from `size` to the masks' size.

    masks: (N, K, H, W) float -> (N, K, h, w) with sum over (h, w) equal to the sum over (H, W).
    """
    with torch.enable_grad():
        probe = torch.zeros(masks.shape[0], masks.shape[1], *size, dtype=masks.dtype, device=masks.device,
                            requires_grad=True)
        up = F.interpolate(probe, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        (weights,) = torch.autograd.grad(up, probe, grad_outputs=masks)
    return weights


def class_weights(target: torch.Tensor, n_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """Pooling weights of each feature cell for background and each class.

    target: (H, W) long with 0 = background, 1..K classes, -1 ignore.
    Returns (K + 1, h, w): U^T of each class's binary mask (zero where the class is absent).
    """
    onehot = torch.stack([(target == k) for k in range(n_classes + 1)]).to(torch.float32)
    return upsample_adjoint(onehot[None], size)[0]


def masked_average_pooling(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PANet's masked average pooling.

    features: (C, h, w); weights: (K + 1, h, w) from :func:`class_weights`.
    Returns (prototypes (K + 1, C), mass (K + 1,)); a class with zero mass gets a zero prototype.
    """
    mass = weights.flatten(1).sum(1)
    pooled = weights.flatten(1) @ features.flatten(1).T
    return pooled / mass.clamp_min(1e-6)[:, None], mass


def local_prototypes(
    features: torch.Tensor, weights: torch.Tensor, grid: int, coverage: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local prototypes pooled over `grid` x `grid` windows of cells (SSL-ALPNet).

    A window yields a prototype of class k when class k holds at least `coverage` of the window's
    pooling weight. Returns (vectors (P, C), owner (P,), cells (P, 2) long: the window's cell (y, x) of
    highest class-k weight, the cell itself when grid is 1).
    """
    pooled = features[None] * weights[:, None]  # (K+1, C, h, w)
    mass = weights
    w = features.shape[-1]
    if grid > 1:
        pooled = F.avg_pool2d(pooled, grid, ceil_mode=True)  # (K+1, C, h', w')
        mass = F.avg_pool2d(weights[:, None], grid, ceil_mode=True)[:, 0]  # (K+1, h', w')
        _, where = F.max_pool2d(weights[:, None], grid, ceil_mode=True, return_indices=True)
        where = where[:, 0]  # (K+1, h', w') flat index into (h, w)
    share = mass / mass.sum(0, keepdim=True).clamp_min(1e-6)
    keep = (share >= coverage) & (mass > 0)
    classes, rows, cols = keep.nonzero(as_tuple=True)
    vectors = pooled[classes, :, rows, cols] / mass[classes, rows, cols][:, None]
    if grid > 1:
        flat = where[classes, rows, cols]
        rows, cols = flat // w, flat % w
    return vectors, classes, torch.stack([rows, cols], 1).long()


@dataclass
class SlicePrototypes:
    """What one support slice contributes, before slices are combined.

    means: (K + 1, C) masked averages; mass: (K + 1,) pooling mass (0 where a class is absent);
    local_vectors: (L, C) local prototypes with local_owner: (L,) class indices (empty in "global" mode);
    local_cells: (L, 2) long, each local prototype's representative cell (y, x) on the slice's feature grid
    (see the module docstring); the slice index is added by whoever knows it (:func:`combine_slices`).
    """

    means: torch.Tensor
    mass: torch.Tensor
    local_vectors: torch.Tensor
    local_owner: torch.Tensor
    local_cells: torch.Tensor | None = None

    def cells(self) -> torch.Tensor:
        """local_cells, or (L, 2) of -1 where they are unknown."""
        if self.local_cells is not None:
            return self.local_cells
        return torch.full((len(self.local_owner), 2), -1, dtype=torch.long, device=self.local_owner.device)


def pool_slice(features: torch.Tensor, target: torch.Tensor, n_classes: int, mode: str = "local",
               grid: int = 1, coverage: float = 0.5) -> SlicePrototypes:
    """Masked average pooling (and local prototypes) of one support slice.

    features: (C, h, w); target: (H, W) long (0 bg, 1..K, -1 ignore).
    """
    weights = class_weights(target.to(features.device), n_classes, tuple(features.shape[-2:]))
    means, mass = masked_average_pooling(features, weights)
    if mode == "local":
        vectors, owner, cells = local_prototypes(features, weights, grid, coverage)
    else:
        vectors, owner = features.new_zeros(0, features.shape[0]), torch.zeros(0, dtype=torch.long)
        cells = torch.zeros(0, 2, dtype=torch.long)
    return SlicePrototypes(means, mass, vectors, owner.to(features.device), cells.to(features.device))


def summed_means(slices: Sequence[SlicePrototypes]) -> tuple[torch.Tensor, torch.Tensor]:
    """The slices' masked averages summed per class, (K + 1, C), and how many slices show each class, (K + 1,)."""
    sums = torch.zeros_like(slices[0].means)
    shots = torch.zeros(len(sums), device=sums.device)
    for piece in slices:
        present = piece.mass > 0
        sums[present] += piece.means[present]
        shots[present] += 1
    return sums, shots


def global_prototypes(slices: Sequence[SlicePrototypes], class_ids: list[int]) -> torch.Tensor:
    """PANet's prototypes: for background and each class, the mean over the slices where it is painted of
    the slice's masked average. Returns (K + 1, C), not normalised; one-sentence errors for a missing class."""
    n = len(class_ids)
    sums, shots = summed_means(slices)
    if shots[0] == 0:
        raise FewShotError("No background was painted or implied; leave some of a support slice unpainted "
                           "(dense mode) or paint background (scribble mode).")
    missing = [class_ids[k - 1] for k in range(1, n + 1) if shots[k] == 0]
    if missing:
        raise FewShotError(f"Label(s) {missing} cover too few pixels to form a prototype; paint a larger area.")
    return sums / shots[:, None]


def capped_local(piece: SlicePrototypes, n_classes: int, max_local: int, seed: int = 0, slice_index: int = -1,
                 sampling: str = "random"):
    """One slice's local prototypes, at most `max_local` per class (core/subsample.py: `sampling` "random" is a
    subsample seeded by `seed`; "grid", "fps" and "kmeans" do not use it):
    (vectors (L, C), owner (L,), origins (L, 3) long: (slice_index, y, x))."""
    vectors, owner, cells = subsample(piece.local_vectors, piece.local_owner, piece.cells(), n_classes, max_local,
                                      seed, sampling)
    origins = torch.cat([torch.full((len(owner), 1), slice_index, dtype=torch.long, device=cells.device), cells], 1)
    return vectors, owner, origins


def combine_slices(slices: Sequence[SlicePrototypes], class_ids: list[int], max_local: int = 4096,
                   seed: int = 0, slice_indices: Sequence[int] | None = None, sampling: str = "random") -> PrototypeSet:
    """Global prototypes (see :func:`global_prototypes`) plus the local prototypes of every slice, at most
    `max_local` per class from each slice (so adding a slice never changes what another contributes).
    slice_indices: each piece's support slice, for the prototypes' origins (-1 when not given); sampling: see
    :func:`capped_local`."""
    n = len(class_ids)
    means = global_prototypes(slices, class_ids)
    vectors = [means]
    owner = [torch.arange(n + 1, device=means.device)]
    is_global = [torch.ones(n + 1, dtype=torch.bool, device=means.device)]
    origins = [torch.full((n + 1, 3), -1, dtype=torch.long)]
    for j, piece in enumerate(slices):
        where = -1 if slice_indices is None else int(slice_indices[j])
        lv, lo, lorigin = capped_local(piece, n, max_local, seed, where, sampling)
        if len(lv):
            vectors.append(lv)
            owner.append(lo.to(means.device))
            is_global.append(torch.zeros(len(lo), dtype=torch.bool, device=means.device))
            origins.append(lorigin.cpu())
    vectors_t = F.normalize(torch.cat(vectors), dim=1)
    owner_t = torch.cat(owner)
    counts = {k: int((owner_t == k).sum()) for k in range(n + 1)}
    return PrototypeSet(vectors_t, owner_t, torch.cat(is_global), list(class_ids), counts, torch.cat(origins))


def build_prototypes(
    features: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    class_ids: list[int],
    mode: str = "local",
    grid: int = 1,
    coverage: float = 0.5,
    max_local: int = 4096,
    seed: int = 0,
    sampling: str = "random",
) -> PrototypeSet:
    """Prototypes from support slices: features per slice (C, h, w), targets per slice (H, W) long
    (0 bg, 1..K, -1 ignore); origins name the slices by their position in `features`.
    See :func:`pool_slice` and :func:`combine_slices`."""
    pieces = [pool_slice(f, t, len(class_ids), mode, grid, coverage) for f, t in zip(features, targets)]
    return combine_slices(pieces, class_ids, max_local, seed, range(len(pieces)), sampling)
