"""`napari-fewshot demo` with a display: the window shows the scan, support, prediction, heatmaps and the widget."""

import numpy as np
import pytest

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.demo import paint_support_from_labels
from napari_fewshot.io import read_labels, read_volume
from napari_fewshot.io.volume import Volume
from napari_fewshot.plugin.demo_viewer import show_demo
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names

pytestmark = pytest.mark.gui


def test_demo_window_shows_every_result_and_the_widget(make_napari_viewer):
    full = read_volume(CT_IMAGE)
    volume = Volume(full.data[72:], full.spacing, full.affine, None, "nifti", {})  # the organs' slices
    labels = read_labels(CT_LABELS, like=full)[72:]
    names = ct_class_names()
    support = paint_support_from_labels(labels, list(names), 1)
    segmenter = FewShotSegmenter(SegmentationParams())
    segmenter.set_image(volume.data)
    result = run(segmenter.segment(support, similarity=True))
    painted = np.flatnonzero(support.any((1, 2))).tolist()
    outcome = {"volume": volume, "names": names, "support": support, "result": result, "support_slices": painted}

    viewer = show_demo(outcome, viewer=make_napari_viewer(), run=False)
    layer_names = [layer.name for layer in viewer.layers]
    assert layer_names[:3] == ["CT abdomen", "support", "prediction"]
    assert "liver (1): cosine similarity" in layer_names
    assert np.array_equal(viewer.layers["prediction"].data, result.labels)
    assert np.array_equal(viewer.layers["support"].data, support)
    assert tuple(viewer.layers["support"].scale) == tuple(viewer.layers["CT abdomen"].scale) == (3.0, 3.0, 3.0)
    widget = next(iter(viewer.window.dock_widgets.values()))
    assert widget.image_layer.name == "CT abdomen" and widget.support_layer.name == "support"
