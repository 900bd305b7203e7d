"""Fine-tuning from the widget: a few steps then a refreshed prediction; cancel; reset weights."""

import numpy as np
import pytest
from conftest import paint_support, wait_idle

pytestmark = pytest.mark.gui


def test_fine_tune_then_prediction_is_refreshed(ct, qtbot, notes):
    _, widget, reference = ct
    support = paint_support(widget, reference)
    painted = support.data.copy()
    widget.segment("range", 84, 88)
    wait_idle(qtbot, widget)
    first = widget.prediction_layer.data[84:89].copy()

    worker = widget.fine_tune(steps=2, learning_rate=1e-3)
    losses = []
    worker.returned.connect(losses.append)
    assert not widget.ui.fine_tune_button.isEnabled() and widget.ui.cancel_button.isEnabled()
    wait_idle(qtbot, widget, 120)  # fine-tuning, then the chained re-segmentation
    assert len(losses) == 1 and len(losses[0]) == 2 and all(np.isfinite(losses[0]))
    seg = widget.session.segmenter
    assert seg.is_fine_tuned and not seg.encoder.training
    assert "(fine-tuned)" in widget.ui.model_label.text()
    assert any("Fine-tuned 2 steps" in m for _, m in notes)
    assert sum("Segmented 5 slices" in m for _, m in notes) == 2  # the prediction was refreshed
    assert len(seg.cache) == 8  # features recomputed with the new weights: 3 support + 5 segmented
    assert widget.prediction_layer.data[84:89].shape == first.shape
    np.testing.assert_array_equal(support.data, painted)

    widget.reset_weights()
    wait_idle(qtbot, widget, 120)
    assert not seg.is_fine_tuned
    assert sum("Segmented 5 slices" in m for _, m in notes) == 3
    np.testing.assert_array_equal(widget.prediction_layer.data[84:89], first)  # original weights, same answer


def test_fine_tune_can_be_cancelled_and_reset(ct, qtbot, notes):
    from napari_fewshot.core import create_encoder

    _, widget, reference = ct
    support = paint_support(widget, reference)
    painted = support.data.copy()
    worker = widget.fine_tune(steps=50)
    steps = []

    def first_step(progress):
        steps.append(progress.done)
        widget.cancel()

    worker.yielded.connect(first_step)
    aborted = []
    worker.aborted.connect(lambda: aborted.append(True))
    wait_idle(qtbot, widget, 60)
    assert aborted and 1 <= len(steps) <= 3  # stopped right after the first step (a step may be in flight)
    assert any("stopped after" in m for _, m in notes)
    seg = widget.session.segmenter
    assert seg.is_fine_tuned and not seg.encoder.training
    assert widget.ui.fine_tune_button.isEnabled() and not widget.ui.cancel_button.isEnabled()

    assert widget.reset_weights() is None  # no prediction to refresh
    assert not seg.is_fine_tuned
    original = create_encoder("efficientnet-lite0").state_dict()
    for name, tensor in seg.encoder.state_dict().items():
        assert np.array_equal(tensor.cpu().numpy(), original[name].numpy()), name
    np.testing.assert_array_equal(support.data, painted)
