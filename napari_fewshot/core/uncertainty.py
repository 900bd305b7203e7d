"""Which predicted slice to check next: an estimate of how many of its pixels are wrong.

Errors of a prototype segmentation sit where the labels change: along the boundary of each predicted
organ, and where a slice disagrees with its neighbours (an organ that ends a slice too early or too
late). The estimate sums, over the feature cells of that band, the probability that the label there
is wrong (1 - the top class probability, PANet's softmax of scale x cosine), in pixels. Cells far
from any boundary add nothing, however unsure the matching is there: the final labels (after the
3D clean-up) decide there, and they are what the clinician signs.

Chosen by measurement (BENCHMARKS.md, "Interactive correction"): summed over the whole slice, the same
probability ranked slices far from the organs first (unsure, but already empty after the clean-up);
along the boundaries it follows the true number of wrong pixels closely.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def cell_labels(labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The (H, W) labels sampled at the centres of an (h, w) grid of feature cells -> (h, w)."""
    rows = ((np.arange(grid[0]) + 0.5) * labels.shape[0] / grid[0]).astype(np.int64)
    cols = ((np.arange(grid[1]) + 0.5) * labels.shape[1] / grid[1]).astype(np.int64)
    return labels[np.ix_(rows, cols)]


def boundary_band(cells: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """Cells on or next to a label change within the slice, or where a neighbouring slice's label differs.

    cells: (h, w) labels; neighbours: the (h, w) labels of the adjacent slices (none for a 2D image).
    Returns (h, w) bool."""
    change = np.zeros(cells.shape, bool)
    change[1:] |= cells[1:] != cells[:-1]
    change[:-1] |= cells[1:] != cells[:-1]
    change[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    change[:, :-1] |= cells[:, 1:] != cells[:, :-1]
    for other in neighbours:
        change |= other != cells
    return ndimage.binary_dilation(change, iterations=1)


def expected_errors(scores: np.ndarray, labels: np.ndarray, neighbours: list[np.ndarray], scale: float) -> float:
    """Expected wrong pixels of one slice.

    scores: (K + 1, h, w) class similarity on the feature grid; labels: (H, W) final labels of the slice;
    neighbours: final labels (H, W) of the adjacent slices of a volume (empty list for a 2D image).
    """
    grid = scores.shape[1:]
    band = boundary_band(cell_labels(labels, grid), [cell_labels(n, grid) for n in neighbours])
    if not band.any():
        return 0.0
    top = torch.softmax(scale * torch.from_numpy(scores).float(), dim=0).amax(0).numpy()
    return float((1.0 - top)[band].sum()) * labels.size / top.size


def rank_slices(coarse: dict[int, np.ndarray], labels, is_volume: bool, scale: float) -> dict[int, float]:
    """Expected wrong pixels of every slice in `coarse` (slice -> (K + 1, h, w) scores).

    labels: (S, H, W) array or list of (H_i, W_i) final labels; neighbours count only in a volume."""
    out = {}
    for i, scores in coarse.items():
        near = [labels[j] for j in (i - 1, i + 1) if is_volume and 0 <= j < len(labels)]
        out[i] = expected_errors(scores, labels[i], near, scale)
    return out
