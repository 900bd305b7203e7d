"""The 3D clean-up's connected-component choice (core/postprocess.keep_connected) labels only the mask's bounding
box and keeps components by a lookup: the same voxels as labelling the whole volume (the rule as it was before
session 13), ties between equal largest components included."""

import numpy as np
from scipy import ndimage

from napari_fewshot.core.postprocess import keep_connected


def whole_volume_rule(mask, seeds=None):
    """keep_connected as it was: the whole volume labelled, np.isin for the seeded components."""
    labelled, n = ndimage.label(mask)
    if n <= 1:
        return mask
    if seeds is not None and seeds.any():
        touched = np.unique(labelled[seeds & mask])
        touched = touched[touched > 0]
        if len(touched):
            return np.isin(labelled, touched)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def test_the_bounding_box_rule_keeps_what_the_whole_volume_rule_keeps():
    rng = np.random.default_rng(0)
    for trial in range(40):
        mask = np.zeros((12, 40, 40), bool)
        s, h, w = rng.integers(0, 6), rng.integers(0, 20), rng.integers(0, 20)
        mask[s:s + 6, h:h + 18, w:w + 18] = rng.random((6, 18, 18)) > rng.uniform(0.4, 0.8)
        seeds = np.zeros_like(mask)
        if trial % 3:
            seeds[rng.integers(0, 12), rng.integers(0, 40), rng.integers(0, 40)] = True
            seeds[s + 2, h:h + 5, w:w + 5] = trial % 2 == 0
        for given in (seeds, None):
            np.testing.assert_array_equal(keep_connected(mask, given), whole_volume_rule(mask, given))
    ties = np.zeros((4, 10, 10), bool)
    ties[1, 5:7, 1:3] = ties[2, 1:3, 6:8] = True  # two components of 4 voxels: the first in raster order wins
    np.testing.assert_array_equal(keep_connected(ties), whole_volume_rule(ties))
    empty = np.zeros((3, 5, 5), bool)
    assert not keep_connected(empty).any() and not keep_connected(empty, empty | True).any()
