"""Propose and select on 2D images: LiteMedSAM draws many candidate objects of a class, the one that stands
out most from its surroundings in LiteMedSAM's own embedding is kept (RefineParams.select, on for images).

    labels = select_plane(labels, scores, class_ids, decode, embedding, profiles)

Candidates (core/proposals.py propose_boxes): each predicted component's box at margins 0, 0.1 and 0.25;
boxes of 0.7, 1 and 1.4 times the support objects' typical size around the 5 strongest peaks of the class's
margin map; the box of the two largest components' strongest cells covering once and twice the support
objects' typical area (one batched decoder call). Score (:func:`embedding_contrast`): 1 minus the cosine
between the mean image embedding inside the candidate and in a ring around it (a quarter of its size wide,
at least 3 pixels). The prototype map finds
*where* (the candidates come from it); LiteMedSAM's embedding says *which outline* is an object: a blob that
spills over the lesion's surroundings, or half a lesion, looks like its ring. Measured on BUSI against
refine (BENCHMARKS.md, "BUSI: propose and select by embedding contrast"); volumes keep refine.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .candidate_score import SupportProfile
from .progress import Progress
from .proposals import decoded_masks, propose_boxes
from .sam_prompt import SIDE, PlaneEmbedding

MARGINS = (0.0, 0.1, 0.25)  # component boxes
PEAKS, PEAK_SIZES = 5, (0.7, 1.0, 1.4)  # peak boxes, in typical support-object sizes
TOP_AREAS = (1.0, 2.0)  # a component's strongest cells covering this many typical support-object areas
RING = 0.25  # ring width, as a share of the candidate's square-root area (at least 3 pixels)


def ring_around(mask: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool, non-empty -> the pixels within `width` (chessboard distance) outside it, (H, W) bool."""
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - width - 1), min(mask.shape[0], ys.max() + width + 2)
    x0, x1 = max(0, xs.min() - width - 1), min(mask.shape[1], xs.max() + width + 2)
    distance = ndimage.distance_transform_cdt(~mask[y0:y1, x0:x1], metric="chessboard")
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = (distance > 0) & (distance <= width)
    return out


def embedding_mean(embedding: PlaneEmbedding, mask: np.ndarray) -> torch.Tensor | None:
    """Mean (C,) of the (1, C, 64, 64) embedding over an (H, W) mask of its plane (area-weighted on the
    embedding's grid, which covers the plane resized into the padded 256 x 256 input); None when empty."""
    h, w = embedding.resized
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(h, w), mode="area")
    m = F.pad(m, (0, SIDE - w, 0, SIDE - h))
    grid = embedding.features.shape[-1]
    weights = F.avg_pool2d(m, SIDE // grid)[0, 0].to(embedding.features.device)
    total = weights.sum()
    if total < 1e-6:
        return None
    return (embedding.features[0].float() * weights).sum((1, 2)) / total


MIN_COVER = 0.1
"""A candidate must cover at least this share of the class's coarse prediction: an image set of organs has other
distinct objects than the painted one (an MR slice set lost a liver to one). BUSI 5-shot, 50 episodes, offline on
the session-8 candidates: 0.620 / 0.612 (seeds 0 / 1) with it, 0.625 / 0.603 without (BENCHMARKS.md)."""


def embedding_contrast(embedding: PlaneEmbedding, mask: np.ndarray, ring: float = RING) -> float:
    """1 - cosine(mean embedding inside the (H, W) bool mask, mean in the ring around it): how much a candidate
    stands out from its surroundings in LiteMedSAM's embedding; -inf for an empty mask, 0 without a ring."""
    if not mask.any():
        return float("-inf")
    inside = embedding_mean(embedding, mask)
    around = embedding_mean(embedding, ring_around(mask, max(3, int(round(ring * np.sqrt(mask.sum()))))))
    if inside is None or around is None:
        return 0.0
    return float(1.0 - F.cosine_similarity(inside[None], around[None]).item())


def candidates(margin: np.ndarray, coarse: np.ndarray, decode: Callable, profile: SupportProfile | None,
               min_pixels: int = 64) -> list[np.ndarray]:
    """One class's candidate masks on one image (see module doc): (H, W) margin and coarse mask ->
    non-empty (H, W) bool masks. decode: (N, 4) boxes, None -> (N, H, W) probabilities."""
    boxes = propose_boxes(margin, coarse, profile, peaks=PEAKS, components=3, min_pixels=min_pixels,
                          box_margins=MARGINS, peak_sizes=PEAK_SIZES, top_areas=TOP_AREAS)
    if not len(boxes):
        return []
    masks = decoded_masks(boxes, decode(boxes, None))
    return [m for m in masks if m.any()]


def select_plane(labels: np.ndarray, scores: np.ndarray, class_ids: Sequence[int], decode: Callable,
                 embedding: PlaneEmbedding, profiles: dict[int, SupportProfile | None],
                 min_pixels: int = 64) -> np.ndarray:
    """One image's labels redrawn: per class, the candidate of highest embedding contrast.

    labels: (H, W) coarse label values; scores: (K + 1, H, W) class similarity (upsampled, class k of
    class_ids at k); profiles: class position k -> the support's objects of that class (or None). Classes
    without a candidate keep their coarse pixels. Returns a new (H, W) array of labels' dtype.
    """
    out = np.zeros_like(labels)
    chosen = []
    for k, class_id in enumerate(class_ids, start=1):
        coarse = labels == class_id
        margin = scores[k] - np.delete(scores, k, 0).max(0)
        masks = candidates(margin, coarse, decode, profiles.get(k), min_pixels)
        if coarse.any():  # the prototypes' own finding anchors the choice: a candidate must cover some of it
            masks = [m for m in masks if np.count_nonzero(m & coarse) >= MIN_COVER * np.count_nonzero(coarse)]
        if not masks:
            chosen.append((float("-inf"), class_id, coarse))
            continue
        contrast = [embedding_contrast(embedding, m) for m in masks]
        best = int(np.argmax(contrast))
        chosen.append((contrast[best], class_id, masks[best]))
    for _, class_id, mask in sorted(chosen, key=lambda item: item[0]):  # the most distinct wins overlaps
        out[mask] = class_id
    return out


def support_profiles(targets: dict[int, np.ndarray], n_classes: int) -> dict[int, SupportProfile | None]:
    """support slice -> (H, W) class index (SupportSet.targets) -> class position k -> its SupportProfile."""
    return {k: SupportProfile.from_masks([t == k for t in targets.values()]) for k in range(1, n_classes + 1)}


def select_planes(refiner, stack, labels: list, indices: Sequence[int], class_ids: Sequence[int],
                  coarse: dict[int, np.ndarray], profiles: dict[int, SupportProfile | None],
                  memo: dict | None = None) -> Generator[Progress, None, None]:
    """select_plane for labels[i] (in place), every i in `indices`, with the refiner's LiteMedSAM and its
    embedding cache. coarse: slice -> (K + 1, h, w) scores on the feature grid. Yields Progress per image.
    memo: image -> (digest of what its selection depends on, labels), kept by the caller: after a stroke,
    an image whose coarse scores, labels and support sizes did not change is not decoded again."""
    from .predict import upsample

    service = refiner.service  # core/sam_service.py: one model, one embedding cache
    setting = (stack.signature(), tuple(class_ids), refiner.params.refine.min_pixels, service.decoder_version)
    sizes = b"".join(p.log_area.tobytes() + p.box_shape.tobytes() for p in profiles.values() if p is not None)
    for n, i in enumerate(indices):
        digest = hashlib.blake2b(repr(setting).encode() + sizes + labels[i].tobytes() + coarse[i].tobytes(),
                                 digest_size=16).digest()
        done = None if memo is None else memo.get(i)
        if done is not None and done[0] == digest:
            labels[i] = done[1].copy()
        elif any((labels[i] == c).any() for c in class_ids):  # nothing predicted: no embedding computed
            cached = service.embedding_of(stack, i)
            embedding = PlaneEmbedding(cached.features.float(), cached.shape, cached.scale)
            scores = upsample(torch.from_numpy(coarse[i])[None], labels[i].shape)[0].numpy()
            decode = lambda boxes, masks, e=embedding: service.decode([(e, boxes, masks)])[0]  # noqa: E731
            labels[i] = select_plane(labels[i], scores, class_ids, decode, embedding, profiles,
                                     refiner.params.refine.min_pixels)
            if memo is not None:
                memo[i] = (digest, labels[i].copy())
        yield Progress(n + 1, len(indices), f"selected objects on image {i + 1} of {len(stack)}")
