"""Fine-tuning from the widget: a few steps then a refreshed prediction; cancel; reset weights."""

import numpy as np
import pytest
from conftest import paint_support, wait_idle

pytestmark = pytest.mark.gui


def test_fine_tune_adapts_without_an_encoder_pass_then_refreshes_and_reset_is_instant(ct, qtbot, notes,
                                                                                        monkeypatch):
    import os

    import dataclasses

    from napari_fewshot.plugin import fine_tuning

    chosen = fine_tuning.chosen_params  # the default's settings, fewer steps: a test, not a benchmark
    monkeypatch.setattr(fine_tuning, "chosen_params", lambda *a: dataclasses.replace(chosen(*a), adapter_steps=6))
    _, widget, reference = ct
    support = paint_support(widget, reference)
    painted = support.data.copy()
    widget.segment("range", 84, 88)
    wait_idle(qtbot, widget)
    first = widget.prediction_layer.data[84:89].copy()
    seg = widget.session.segmenter
    calls = []
    forward = seg.encoder.forward
    monkeypatch.setattr(seg.encoder, "forward", lambda x: calls.append(x.shape) or forward(x))

    assert widget.ui.settings["method"].value == "decoder"  # the button's default (BENCHMARKS.md, "Fine-tune")
    widget.fine_tune()  # on a CPU volume LiteMedSAM does not refine: the default adapts nothing and says so
    wait_idle(qtbot, widget, 300)
    assert not seg.is_fine_tuned
    assert any(m.startswith("Adapted nothing (the LiteMedSAM decoder is tuned only where refinement runs (off "
                            "here)).") for _, m in notes), notes
    assert widget.ui.status_label.text().startswith("Adapted nothing")  # no re-segmentation: nothing changed
    if os.environ.get("TUNE_SHOTS"):
        widget.viewer.screenshot(os.path.join(os.environ["TUNE_SHOTS"], "default_on_cpu_volume.png"), canvas_only=False)
    widget.ui.settings["method"].value = "adapter+decoder"
    worker = widget.fine_tune()
    losses = []
    worker.returned.connect(losses.append)
    assert not widget.ui.fine_tune_button.isEnabled() and widget.ui.cancel_button.isEnabled()
    wait_idle(qtbot, widget, 300)  # adapting, then the chained re-segmentation
    assert len(losses) == 1 and len(losses[0]) == 6 and all(np.isfinite(losses[0]))
    assert seg.is_fine_tuned and seg.cache.adapter is not None
    channels = seg.cache.adapter.channels
    assert f"(fine-tuned: the feature adapter ({2 * channels} weights) on 3 signed slices in " in \
        widget.ui.model_label.text()
    # on a CPU volume LiteMedSAM does not refine (RefineParams.enabled_for), so only the features are adapted
    said = [m for _, m in notes if m.startswith("Adapted the")]
    assert len(said) == 1 and said[0].startswith(f"Adapted the feature adapter ({2 * channels} weights) on 3 signed "
                                                 "slices in "), said
    assert sum("Segmented 5 slices" in m for _, m in notes) == 2  # the prediction was refreshed
    assert calls == [] and len(seg.cache) == 8  # no encoder pass: the cached features were adapted
    np.testing.assert_array_equal(support.data, painted)
    folder = os.environ.get("TUNE_SHOTS")
    if folder:
        widget.ui.status_label.parentWidget().grab().save(os.path.join(folder, "status_after_refresh.png"))
        widget.viewer.dims.set_point(0, 86)
        widget.viewer.screenshot(os.path.join(folder, "fine_tuned.png"), canvas_only=False)
        widget.ui.fine_tune_group.grab().save(os.path.join(folder, "fine_tune_panel.png"))
        widget.ui.model_label.parentWidget().grab().save(os.path.join(folder, "model_status.png"))

    widget.reset_weights()
    wait_idle(qtbot, widget, 120)
    assert any(m == "Reset: the feature adapter is removed." for _, m in notes)
    assert not seg.is_fine_tuned and seg.cache.adapter is None
    assert sum("Segmented 5 slices" in m for _, m in notes) == 3
    assert calls == []
    np.testing.assert_array_equal(widget.prediction_layer.data[84:89], first)  # no adapter, same answer


def test_the_whole_encoder_fine_tune_is_kept_as_an_option(ct, qtbot, notes):
    _, widget, reference = ct
    paint_support(widget, reference)
    losses = []
    widget.fine_tune(steps=2, learning_rate=1e-3).returned.connect(losses.append)
    wait_idle(qtbot, widget, 400)
    assert len(losses) == 1 and len(losses[0]) == 2
    assert any("Fine-tuned the whole encoder 2 steps" in m for _, m in notes)
    seg = widget.session.segmenter
    assert seg.is_fine_tuned and not seg.encoder.training and seg.cache.adapter is None


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
    wait_idle(qtbot, widget, 300)
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
