"""Adapt to this scan: self-supervised test-time training on the scan being segmented, no labels needed.

SSL-ALPNet (Ouyang et al., ECCV 2020) trains few-shot segmentation on unlabelled scans by treating a
Felzenszwalb superpixel of a slice as the class: the slice is the support, an augmented copy of it
the query, and the network must find the superpixel again. Here the same episodes run at test time,
for a few dozen steps, on the user's own scan (or image set), before the support is pooled: the
encoder learns what separates regions of *this* scan. `FewShotSegmenter.adapt` runs it;
`reset_weights` undoes it.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
import torch
from skimage.segmentation import felzenszwalb

from .config import SegmentationParams
from .training_config import AdaptParams
from .finetune import Episode, augment
from .normalization import InputNormalization, to_encoder_input
from .stack import ImageStack

AIR = 0.02  # superpixels darker than this (windowed) are air or padding, not tissue
TRIES = 5  # slices tried per episode before giving up on it


def superpixels(grey: np.ndarray, params: AdaptParams) -> np.ndarray:
    """(h, w) float image in [0, 1] -> (h, w) int superpixel ids (Felzenszwalb; sigma 0.8)."""
    min_size = max(8, int(params.min_fraction * grey.size))
    return felzenszwalb(grey, scale=params.superpixel_scale, sigma=0.8, min_size=min_size)


def pick_superpixel(segments: np.ndarray, grey: np.ndarray, params: AdaptParams, rng: random.Random) -> np.ndarray | None:
    """A random tissue superpixel of a usable size as a (h, w) bool mask, or None when there is none."""
    sizes = np.bincount(segments.ravel())
    means = np.bincount(segments.ravel(), weights=grey.ravel()) / np.maximum(sizes, 1)
    fraction = sizes / segments.size
    eligible = np.flatnonzero((fraction >= params.min_fraction) & (fraction <= params.max_fraction) & (means > AIR))
    if not len(eligible):
        return None
    return segments == int(rng.choice(list(eligible)))


def _grey(x: torch.Tensor, normalization: InputNormalization) -> np.ndarray:
    """(1, 3, h, w) encoder input, normalised as `normalization` says -> (h, w) float in [0, 1] (channel mean)."""
    return normalization.undo(x).clamp(0, 1).mean(1)[0].cpu().numpy()


def superpixel_episodes(stack: ImageStack, seg: SegmentationParams, params: AdaptParams, device: torch.device,
                        normalization: InputNormalization, indices: Sequence[int] | None = None,
                        ) -> Callable[[random.Random], Episode | None]:
    """Episodes of `stack` (slices `indices`, default all): support = a slice with one of its
    superpixels as the class, query = an augmented copy; input normalised for the encoder (`normalization`).
    Returns rng -> Episode (None: none found)."""
    candidates = list(range(len(stack)) if indices is None else indices)
    size = seg.input_size_for(stack)

    def make(rng: random.Random) -> Episode | None:
        for _ in range(TRIES):
            x = to_encoder_input(stack.slice(rng.choice(candidates))[None], size, normalization).to(device)
            grey = _grey(x, normalization)
            mask = pick_superpixel(superpixels(grey, params), grey, params, rng)
            if mask is None:
                continue
            target = torch.from_numpy(mask).long().to(device)
            x_q, t_q = augment(x, target, rng, normalization)
            return x, target, x_q, t_q
        return None

    return make
