"""A closed window lets go of what the widget computed: segmenters, features and LiteMedSAM (GBs).

napari 0.9.2 never frees a closed window (its global themes keep a lambda of each; see
conftest.release_closed_napari_windows), so a researcher who opens and closes viewers in one notebook would keep
every widget's segmenter and LiteMedSAM service unless the widget lets go of them itself when its window goes."""

import gc
import weakref

import pytest
from conftest import ct_crop

pytestmark = pytest.mark.gui


def test_closing_the_window_lets_go_of_the_segmenter_and_litemedsam(make_napari_viewer, qtbot):
    viewer, widget, _, _ = ct_crop(make_napari_viewer, 78, 82, True, (0,), 1)
    widget.segment("all")
    qtbot.waitUntil(lambda: not widget.busy, timeout=600_000)  # the coarse result, then LiteMedSAM's refinement
    segmenter = widget.session.segmenter
    assert segmenter._sam is not None and widget.prediction_layer is not None  # LiteMedSAM was loaded and used
    gone = [weakref.ref(segmenter), weakref.ref(segmenter._sam)]
    del segmenter
    viewer.close()
    qtbot.wait(100)
    gc.collect()
    assert [ref() for ref in gone] == [None, None]
