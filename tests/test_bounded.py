"""Bounded matching (core/bounded.py): after a correction, matching the deferred class (background) only where
labels need it gives the labels of matching every cell, bit for bit, and the same Check next ranking, on the CT
sample that ships with the package (liver and spleen painted on two slices from its reference)."""

import numpy as np
import pytest

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.bounded import Partial
from napari_fewshot.core.matching import MatchCache, matmul_dtype

from conftest import ct_liver_spleen_slices


@pytest.fixture(scope="module")
def ct_organs():
    """The CT sample's slices that show liver or spleen and a few around them (features of fewer slices: faster)."""
    volume, truth, both = ct_liver_spleen_slices(3)  # every third slice: a shorter test, the same loop
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(volume)
    run(segmenter.compute_features())
    return segmenter, truth, both


@pytest.mark.parametrize("precision", ["native", "float32", "int8"])  # forced: the test runs on every CPU
def test_corrections_give_the_labels_and_ranking_of_matching_every_cell(ct_organs, precision, monkeypatch):
    segmenter, truth, both = ct_organs
    if precision != "native":  # core/precision.py: int8 products are exact, so bounded = full bit for bit there too
        monkeypatch.setenv("NAPARI_FEWSHOT_MATMUL", precision)
    segmenter._matches = MatchCache()  # no query cells of another precision
    support = np.zeros_like(truth)
    painted = [both[len(both) // 3], both[2 * len(both) // 3]]
    support[painted] = truth[painted]
    segmenter.bounded = True
    run(segmenter.segment(support, refine_later=True))  # the first segmentation matches every cell
    assert not segmenter._matches._partial
    for z in (both[len(both) // 2], both[-1]):  # two corrections: the second starts from the first's partial maps
        support[z] = truth[z]
        bounded = run(segmenter.segment(support, refine_later=True))
        partial = [e for e in segmenter._matches._partial.values() if isinstance(e, Partial)]
        assert partial and any(e.pending.any() for e in partial)  # background left unmatched somewhere
        assert sum(e.pending.sum() for e in partial) > 0.5 * sum(e.pending.size for e in partial)
        kept, segmenter._matches = segmenter._matches, MatchCache()  # a full match, from nothing cached
        segmenter.bounded = False
        full = run(segmenter.segment(support, refine_later=True))
        segmenter.bounded, segmenter._matches = True, kept
        assert np.array_equal(bounded.labels, full.labels)
        assert (bounded.labels == 1).any() and (bounded.labels == 2).any()
        cells = next(iter(segmenter._matches._queries.values()))[0]
        assert cells.dtype == matmul_dtype("cpu")
        assert bounded.uncertainty.keys() == full.uncertainty.keys()
        # the same cells summed; a product of a few rows may round its last bit otherwise (seen: 1e-8 of 600 pixels)
        assert all(bounded.uncertainty[i] == pytest.approx(full.uncertainty[i], rel=1e-9, abs=1e-6)
                   for i in full.uncertainty)
        order = sorted(full.uncertainty, key=lambda i: -full.uncertainty[i])
        assert sorted(bounded.uncertainty, key=lambda i: -bounded.uncertainty[i]) == order
