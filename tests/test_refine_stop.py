"""Cancel and close while LiteMedSAM's refinement streams: the refinement stops *inside* its step (a batch of a few
slices, each with an image embedding of ~0.8 CPU-s), not after it, and a closed viewer leaves no worker running
(one still running when Python exits prints superqt's "RuntimeError in aborted thread" warning). LiteMedSAM is
a stand-in whose embedding takes EMBED_S, so a batch of 4 slices is a step of 4 x EMBED_S."""

import threading
import time

import numpy as np
import pytest
from test_plugin_streaming import crop_viewer  # noqa: F401  (the fixture: 8 CT slices, liver painted on 2)
from test_refine import CountingPrompter
from test_refine_ahead import fake_segmenter, labels_with

EMBED_S = 1.5  # the stand-in's embedding: one step of 4 slices is 6 s


class SlowPrompter(CountingPrompter):
    """CountingPrompter whose embedding takes EMBED_S (in the worker thread); `embedding` is set on the first."""

    embedding = threading.Event()

    def embed(self, plane):
        SlowPrompter.embedding.set()
        time.sleep(EMBED_S)
        return super().embed(plane)


def test_a_stop_inside_the_step_raises_before_the_next_embedding_and_writes_nothing():
    from napari_fewshot.core.progress import Stopped

    volume = np.random.default_rng(0).random((12, 16, 16)).astype(np.float32)
    seg, stack = fake_segmenter(volume)
    labels = list(labels_with({1: (2, 9)}, slices=12))
    before = [p.copy() for p in labels]
    asked = []

    def stop():  # says stop once the first embedding of the batch has been computed
        asked.append(seg.refiner.service.computed)
        return seg.refiner.service.computed >= 1

    with pytest.raises(Stopped):
        list(seg.refiner.refine(stack, labels, [2, 3, 4, 5], [1, 2], stop))
    assert seg.refiner.service.computed == 1  # 1 of the batch's 4 embeddings, then the stop
    assert all(np.array_equal(a, b) for a, b in zip(labels, before))  # the stopped batch wrote nothing
    assert seg.refiner.service.prompter.calls == 0  # no decoder call
    reports = list(seg.refiner.refine(stack, labels, [2, 3, 4, 5], [1, 2]))  # no stop: runs as before
    assert len(reports) == 4 and seg.refiner.service.computed == 4  # the stopped batch's embedding is kept


@pytest.fixture
def slow_litemedsam(monkeypatch):
    """Every segmenter's LiteMedSAM is the SlowPrompter stand-in; LiteMedSAM's libraries are not imported."""
    from napari_fewshot.core.sam_service import LiteMedSAMService
    from napari_fewshot.core.segmenter import FewShotSegmenter
    from napari_fewshot.plugin import warm_up

    def sam(self):
        if self._sam is None:
            self._sam = LiteMedSAMService("cpu", 1 << 30, prompter_factory=SlowPrompter)
        return self._sam

    monkeypatch.setattr(FewShotSegmenter, "sam", property(sam))
    monkeypatch.setattr(warm_up, "start", lambda *a: None)
    SlowPrompter.embedding.clear()


def _refining_mid_step(qtbot, widget):
    """Segment, then wait until the refinement's worker is inside its first embedding; the worker and an Event set
    when it has finished (its `finished` signal, emitted in the worker thread)."""
    widget.segment("all")
    qtbot.waitUntil(lambda: widget.streaming.running, timeout=120_000)
    worker = widget.streaming.worker
    ended = threading.Event()
    worker.finished.connect(ended.set, type=_direct())
    qtbot.waitUntil(SlowPrompter.embedding.is_set, timeout=60_000)  # (Qt's loop runs: the worker starts from it)
    time.sleep(0.2)
    return worker, ended


def _direct():
    from qtpy.QtCore import Qt

    return Qt.ConnectionType.DirectConnection


@pytest.mark.gui
def test_cancel_stops_the_refinement_within_one_embedding(crop_viewer, qtbot, slow_litemedsam):  # noqa: F811
    """main: the worker ran on to the end of its 4-slice step (~6 s), here it ends after the embedding under way."""
    viewer, widget, support, reference = crop_viewer
    worker, ended = _refining_mid_step(qtbot, widget)
    widget.ui.cancel_button.click()
    assert ended.wait(30)
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "cancelled" in widget.ui.status_label.text()
    # counted, not timed (a loaded machine stretches seconds): the embedding under way at the click, and at most
    # one more that had begun, not the rest of the 4-slice step
    assert widget.session.segmenter.refiner.service.computed <= 2, "the worker finished its step"


@pytest.mark.gui
def test_closing_the_viewer_mid_step_ends_the_worker_within_one_embedding(crop_viewer, qtbot, capfd,  # noqa: F811
                                                                          slow_litemedsam):
    """The window goes at once; the worker ends after the embedding under way (main: at the end of its 4-slice step,
    ~6 s; a Python exit meanwhile printed superqt's warning), and nothing is left for Python's exit to wait for."""
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    from napari_fewshot.plugin import workers

    viewer, widget, support, reference = crop_viewer
    painted = np.array(support.data, copy=True)
    worker, ended = _refining_mid_step(qtbot, widget)
    capfd.readouterr()
    window = viewer.window._qt_window
    viewer.close()
    assert not window.isVisible()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # the window's deletion (WA_DeleteOnClose)
    assert ended.wait(2 * EMBED_S), "the worker ran on after the close"
    assert workers.stop_at_exit(0.1)  # Python's exit would find no worker running
    qtbot.wait(300)
    assert capfd.readouterr().err == ""
    np.testing.assert_array_equal(painted, support.data)  # the user's paint is untouched
