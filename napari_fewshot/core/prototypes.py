"""Prototypes by masked average pooling (PANet), global and local (SSL-ALPNet).

Masked average pooling in PANet upsamples the (C, h, w) features to the mask's (H, W) and averages
them under the mask. Bilinear upsampling is linear, so that average equals a weighted average of
the feature cells with weights U^T(mask), U^T being the adjoint of the upsampling; we compute the
weights that way and never hold a (C, H, W) tensor. Local prototypes pool the same weighted
features over small windows of cells where the class covers most of the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import FewShotError


@dataclass
class PrototypeSet:
    """Prototypes of background (class index 0) and K classes.

    vectors:   (P, C) float32, L2-normalised.
    owner:     (P,) long, class index of each prototype (0 = background, 1..K).
    is_global: (P,) bool, True for the one averaged prototype per class.
    class_ids: the K label values of classes 1..K.
    """

    vectors: torch.Tensor
    owner: torch.Tensor
    is_global: torch.Tensor
    class_ids: list[int]
    counts: dict[int, int] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    def to(self, device: torch.device) -> "PrototypeSet":
        return PrototypeSet(self.vectors.to(device), self.owner.to(device), self.is_global.to(device),
                            list(self.class_ids), dict(self.counts))


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
    pooling weight. Returns (vectors (P, C), owner (P,)).
    """
    pooled = features[None] * weights[:, None]  # (K+1, C, h, w)
    mass = weights
    if grid > 1:
        pooled = F.avg_pool2d(pooled, grid, ceil_mode=True)  # (K+1, C, h', w')
        mass = F.avg_pool2d(weights[:, None], grid, ceil_mode=True)[:, 0]  # (K+1, h', w')
    share = mass / mass.sum(0, keepdim=True).clamp_min(1e-6)
    keep = (share >= coverage) & (mass > 0)
    classes, rows, cols = keep.nonzero(as_tuple=True)
    vectors = pooled[classes, :, rows, cols] / mass[classes, rows, cols][:, None]
    return vectors, classes


@dataclass
class SlicePrototypes:
    """What one support slice contributes, before slices are combined.

    means: (K + 1, C) masked averages; mass: (K + 1,) pooling mass (0 where a class is absent);
    local_vectors: (L, C) local prototypes with local_owner: (L,) class indices (empty in "global" mode).
    """

    means: torch.Tensor
    mass: torch.Tensor
    local_vectors: torch.Tensor
    local_owner: torch.Tensor


def pool_slice(features: torch.Tensor, target: torch.Tensor, n_classes: int, mode: str = "local",
               grid: int = 1, coverage: float = 0.5) -> SlicePrototypes:
    """Masked average pooling (and local prototypes) of one support slice.

    features: (C, h, w); target: (H, W) long (0 bg, 1..K, -1 ignore).
    """
    weights = class_weights(target.to(features.device), n_classes, tuple(features.shape[-2:]))
    means, mass = masked_average_pooling(features, weights)
    if mode == "local":
        vectors, owner = local_prototypes(features, weights, grid, coverage)
    else:
        vectors, owner = features.new_zeros(0, features.shape[0]), torch.zeros(0, dtype=torch.long)
    return SlicePrototypes(means, mass, vectors, owner.to(features.device))


def global_prototypes(slices: Sequence[SlicePrototypes], class_ids: list[int]) -> torch.Tensor:
    """PANet's prototypes: for background and each class, the mean over the slices where it is painted of
    the slice's masked average. Returns (K + 1, C), not normalised; one-sentence errors for a missing class."""
    n = len(class_ids)
    sums = torch.zeros_like(slices[0].means)
    shots = torch.zeros(n + 1, device=sums.device)
    for piece in slices:
        present = piece.mass > 0
        sums[present] += piece.means[present]
        shots[present] += 1
    if shots[0] == 0:
        raise FewShotError("No background was painted or implied; leave some of a support slice unpainted "
                           "(dense mode) or paint background (scribble mode).")
    missing = [class_ids[k - 1] for k in range(1, n + 1) if shots[k] == 0]
    if missing:
        raise FewShotError(f"Label(s) {missing} cover too few pixels to form a prototype; paint a larger area.")
    return sums / shots[:, None]


def capped_local(piece: SlicePrototypes, n_classes: int, max_local: int, seed: int = 0):
    """One slice's local prototypes, at most `max_local` per class (seeded subsample): (vectors (L, C), owner (L,))."""
    if len(piece.local_vectors) == 0:
        return piece.local_vectors, piece.local_owner
    return _cap_per_class(piece.local_vectors, piece.local_owner, n_classes, max_local, seed)


def combine_slices(slices: Sequence[SlicePrototypes], class_ids: list[int], max_local: int = 4096,
                   seed: int = 0) -> PrototypeSet:
    """Global prototypes (see :func:`global_prototypes`) plus the local prototypes of every slice, at most
    `max_local` per class from each slice (so adding a slice never changes what another contributes)."""
    n = len(class_ids)
    means = global_prototypes(slices, class_ids)
    vectors = [means]
    owner = [torch.arange(n + 1, device=means.device)]
    is_global = [torch.ones(n + 1, dtype=torch.bool, device=means.device)]
    for piece in slices:
        lv, lo = capped_local(piece, n, max_local, seed)
        if len(lv):
            vectors.append(lv)
            owner.append(lo.to(means.device))
            is_global.append(torch.zeros(len(lo), dtype=torch.bool, device=means.device))
    vectors_t = F.normalize(torch.cat(vectors), dim=1)
    owner_t = torch.cat(owner)
    counts = {k: int((owner_t == k).sum()) for k in range(n + 1)}
    return PrototypeSet(vectors_t, owner_t, torch.cat(is_global), list(class_ids), counts)


def build_prototypes(
    features: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    class_ids: list[int],
    mode: str = "local",
    grid: int = 1,
    coverage: float = 0.5,
    max_local: int = 4096,
    seed: int = 0,
) -> PrototypeSet:
    """Prototypes from support slices: features per slice (C, h, w), targets per slice (H, W) long
    (0 bg, 1..K, -1 ignore). See :func:`pool_slice` and :func:`combine_slices`."""
    pieces = [pool_slice(f, t, len(class_ids), mode, grid, coverage) for f, t in zip(features, targets)]
    return combine_slices(pieces, class_ids, max_local, seed)


def _cap_per_class(vectors, owner, n_classes, cap, seed):
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for k in range(n_classes + 1):
        index = (owner == k).nonzero(as_tuple=True)[0]
        if len(index) > cap:
            index = index[torch.randperm(len(index), generator=generator)[:cap].to(index.device)]
        keep.append(index)
    keep_t = torch.cat(keep)
    return vectors[keep_t], owner[keep_t]
