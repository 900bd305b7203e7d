"""Cosine similarity to prototypes -> class scores -> labels (PANet's non-parametric segmentation)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .prototypes import PrototypeSet

_CHUNK = 2048  # prototypes matched per matrix product, bounds memory at (h*w, _CHUNK)


def class_similarity(features: torch.Tensor, prototypes: PrototypeSet) -> torch.Tensor:
    """Best cosine similarity of each cell to each class.

    features: (B, C, h, w). Returns (B, K + 1, h, w) in [-1, 1]: for each class, the maximum over
    its prototypes (with one prototype per class this is PANet's cosine map).
    """
    b, c, h, w = features.shape
    query = F.normalize(features.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    vectors = prototypes.vectors.to(query.device, query.dtype)
    owner = prototypes.owner.to(query.device)
    best = torch.full((query.shape[0], prototypes.n_classes + 1), -1.0, device=query.device, dtype=query.dtype)
    for start in range(0, len(vectors), _CHUNK):
        sims = query @ vectors[start:start + _CHUNK].T
        index = owner[start:start + _CHUNK].expand(query.shape[0], -1)
        best = best.scatter_reduce(1, index, sims, reduce="amax", include_self=True)
    return best.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def self_supported_similarity(features: torch.Tensor, prototypes: PrototypeSet, margin: float) -> torch.Tensor:
    """Class similarity after the query supports itself (self-support matching, Fan et al., ECCV 2022).

    A query is closer to itself than to another patient's support: every cell whose best class beats the
    runner-up by more than `margin` (cosine) becomes a local prototype of that class for its own slice,
    and the similarity is computed again. Uncertain cells then follow the confident cells they resemble.

    features: (B, C, h, w). Returns (B, K + 1, h, w) in [-1, 1], like :func:`class_similarity`.
    """
    first = class_similarity(features, prototypes)
    top = first.topk(2, dim=1)
    confident = (top.values[:, 0] - top.values[:, 1]) > margin  # (B, h, w)
    out = torch.empty_like(first)
    for b in range(features.shape[0]):
        cells = confident[b].reshape(-1)
        if not cells.any():
            out[b] = first[b]
            continue
        own = F.normalize(features[b].float(), dim=0).reshape(features.shape[1], -1).T[cells]
        owner = top.indices[b, 0].reshape(-1)[cells]
        mine = PrototypeSet(torch.cat([prototypes.vectors.to(own.device, own.dtype), own]),
                            torch.cat([prototypes.owner.to(owner.device), owner]),
                            torch.cat([prototypes.is_global.to(owner.device), torch.zeros_like(owner).bool()]),
                            prototypes.class_ids)
        out[b] = class_similarity(features[b:b + 1], mine)[0]
    return out


def query_similarity(features: torch.Tensor, prototypes: PrototypeSet, self_support: float | None) -> torch.Tensor:
    """(B, C, h, w) -> (B, K + 1, h, w): :func:`self_supported_similarity` with margin `self_support`, or
    plain :func:`class_similarity` when `self_support` is None."""
    if self_support is None:
        return class_similarity(features, prototypes)
    return self_supported_similarity(features, prototypes, self_support)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, N, h, w) -> (B, N, H, W), bilinear as PANet upsamples its score maps."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def segment(features: torch.Tensor, prototypes: PrototypeSet, size: tuple[int, int],
            self_support: float | None = None):
    """Segment query slices (with self-support when `self_support` is a margin; see query_similarity).

    features: (B, C, h, w). Returns (class_index (B, H, W) long with 0 = background,
    similarity (B, K + 1, H, W) in [-1, 1]). The class is the argmax of softmax(scale x similarity),
    which is the argmax of the similarity itself; see :func:`probabilities` for the softmax.
    """
    similarity = upsample(query_similarity(features, prototypes, self_support), size)
    return similarity.argmax(1), similarity


def probabilities(similarity: torch.Tensor, scale: float) -> torch.Tensor:
    """PANet's class probabilities: softmax over classes of scale x cosine similarity, (B, K + 1, H, W)."""
    return torch.softmax(scale * similarity, dim=1)


def labels_from_scores(scores: torch.Tensor, size: tuple[int, int], keep_scores: bool = False):
    """Class index of every pixel: the argmax of the bilinearly upsampled coarse class scores.

    scores: (K + 1, h, w). Returns (index (H, W) int64 numpy, upsampled (K + 1, H, W) tensor or None).
    A pixel's scores are a convex combination of its (up to) four surrounding cells, so where one
    class wins at all four it wins at the pixel: only pixels on a boundary between winners are
    interpolated (a few percent of a slice; none on a slice far from every organ). Same labels as
    upsampling everything (`keep_scores=True` does that, for heatmaps).
    """
    if keep_scores:
        upsampled = upsample(scores[None], size)[0]
        return upsampled.argmax(0).numpy(), upsampled
    (y0, y1, wy), (x0, x1, wx) = _bilinear_axis(scores.shape[1], size[0]), _bilinear_axis(scores.shape[2], size[1])
    winner = scores.argmax(0).numpy()
    if scores.shape[0] <= 256:  # gather bytes, not int64: 8x less memory to move on a 512 x 512 slice
        winner = winner.astype(np.uint8)
    rows_of = {id(ys): winner.take(ys, axis=0) for ys in (y0, y1)}  # row gathers, then columns of each
    corners = [rows_of[id(ys)].take(xs, axis=1) for ys in (y0, y1) for xs in (x0, x1)]
    index = corners[0].astype(np.int64)
    mixed = (corners[0] != corners[1]) | (corners[0] != corners[2]) | (corners[0] != corners[3])
    rows, cols = np.nonzero(mixed)
    if len(rows):
        s = scores.float().numpy()
        ry0, ry1, rwy = y0[rows], y1[rows], wy[rows]
        cx0, cx1, cwx = x0[cols], x1[cols], wx[cols]
        values = ((1 - rwy) * ((1 - cwx) * s[:, ry0, cx0] + cwx * s[:, ry0, cx1])
                  + rwy * ((1 - cwx) * s[:, ry1, cx0] + cwx * s[:, ry1, cx1]))
        index[rows, cols] = values.argmax(0)
    return index, None


def _bilinear_axis(n_in: int, n_out: int):
    """Source cells and weight of each output position along one axis, as torch's bilinear
    interpolation with align_corners=False computes them: (lower (n_out,), upper (n_out,), weight of upper)."""
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5, 0)
    lower = np.minimum(src.astype(np.int64), n_in - 1)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (src - lower).astype(np.float32)
