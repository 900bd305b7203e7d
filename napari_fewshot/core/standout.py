"""How much the object drawn on an image of a set stands out from its surroundings in LiteMedSAM's embedding: Check
next's second sign on image sets (issue 20 item 3, session 25).

LiteMedSAM's IoU estimate of the prediction's box (Check next's first sign) says how cleanly the decoder outlined
*something* in that box. It cannot tell a lesion from a crisp blob of fat or shadow around a small lesion: on the
BUSI box loop's seed 5 the images left at Dice 0.00-0.04 were rated among the best. What separates them is how
little the drawn object differs from the tissue around it: 1 - cosine(mean embedding inside, mean in a ring around
it), :func:`core.select_objects.embedding_contrast`, the half of propose and select's score that needs no support.
Measured on the box loop's picks (BENCHMARKS.md, session 25): see :data:`core.uncertainty.STANDOUT_WEIGHT`.

    contrast = image_standout(service, stack, labels_i, i, class_ids)   # per image; None: nothing drawn
    sign = standout_sign(contrast)                                      # in [0, 1], higher = check first
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from .select_objects import embedding_contrast, low_res

STANDOUT_GOOD = 0.3
"""An object whose embedding contrast with its ring reaches this stands out as the painted lesions do (BUSI: the
boxed lesions and the images the loop drew right lie at 0.15-0.66, the confident misses at 0.06-0.13); below it the
sign grows linearly to 1 at no contrast."""


def standout_sign(contrast: float | None) -> float:
    """(STANDOUT_GOOD - contrast) / STANDOUT_GOOD clipped to [0, 1]; 0 for None (nothing measured)."""
    if contrast is None:
        return 0.0
    return float(np.clip((STANDOUT_GOOD - contrast) / STANDOUT_GOOD, 0.0, 1.0))


def image_standout(service, stack, labels: np.ndarray, index: int, class_ids: Sequence[int],
                   memo: dict | None = None) -> float | None:
    """The weakest embedding contrast over the classes drawn on image `index` of `stack`.

    service: core/sam_service.LiteMedSAMService (the image's embedding: cached when refine drew it); labels: (H, W)
    final labels of the image. Each class's pixels are taken at the embedding's grid (as propose and select scores
    its candidates) and compared with a ring around them. Returns None when no class is drawn. memo: remembered
    per (image, labels) there (~15 ms an image on the 2-core CPU: a 100-image set re-ranked after each stroke
    measures only the images whose labels changed); the caller keeps one memo per image set and embedding."""
    labels = np.ascontiguousarray(labels)
    key = ("standout", index, tuple(class_ids), hashlib.blake2b(labels.tobytes(), digest_size=16).digest())
    if memo is not None and key in memo:
        return memo[key]
    contrast = _weakest_contrast(service, stack, labels, index, class_ids)
    if memo is not None:
        memo[key] = contrast
    return contrast


def _weakest_contrast(service, stack, labels: np.ndarray, index: int, class_ids: Sequence[int]) -> float | None:
    drawn = [mask for mask in (labels == c for c in class_ids) if mask.any()]
    if not drawn:
        return None
    embedding = service.embedding_of(stack, index).in_float32()
    contrasts = []
    for mask in drawn:
        small = low_res(mask, embedding.resized) > 0.5
        if small.any():
            contrasts.append(embedding_contrast(embedding, small))
    return min(contrasts) if contrasts else None
