"""Never lose painted work: strokes are autosaved, offered back on reopening, and survive a kill.

Strokes are painted with the Labels layer's own brush API inside ``block_history`` (what napari's
mouse binding does), so napari emits ``paint`` at the end of each stroke as it does for a real one.
"""

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, wait_idle

from napari_fewshot.io.autosave import AutosaveStore, scan_signature
from napari_fewshot.plugin.layers import same_layer

pytestmark = pytest.mark.gui


def stroke(layer, z, y, x0, x1, label):
    """One brush stroke along row ``y`` of slice ``z`` (napari emits ``paint`` once, at its end)."""
    layer.selected_label = label
    with layer.block_history():
        for x in range(x0, x1, 3):
            layer.paint((z, y, x), label, refresh=False)
    layer.refresh()


def ct_signature(qtbot, widget):
    qtbot.waitUntil(lambda: widget.autosave.signature_of(widget.image_layer) is not None, timeout=10_000)
    return widget.autosave.signature_of(widget.image_layer)


def test_strokes_are_saved_and_offered_back_when_the_scan_is_reopened(ct, qtbot, notes, autosave_dir):
    viewer, widget, _ = ct
    signature = ct_signature(qtbot, widget)
    assert signature == scan_signature(viewer.layers[CT_IMAGE_NAME].data)
    assert not widget.ui.restore_button.isEnabled()  # nothing saved for this scan yet
    store = AutosaveStore()
    support = widget.create_support_layer()
    stroke(support, 50, 40, 20, 60, 1)
    qtbot.waitUntil(lambda: store.latest(signature) is not None, timeout=5000)
    stroke(support, 70, 45, 30, 70, 2)
    qtbot.waitUntil(lambda: store.latest(signature).painted.indices.tolist() == [50, 70], timeout=5000)
    assert np.array_equal(store.load(signature), support.data)
    support.undo()  # undo emits only set_data; the save must follow it too
    qtbot.waitUntil(lambda: store.latest(signature).painted.indices.tolist() == [50], timeout=5000)
    painted = support.data.copy()

    # the same scan opened again: a notification, and the Restore button brings the paint back
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    again = viewer.layers[-2]
    assert again.name != CT_IMAGE_NAME and np.array_equal(again.data, viewer.layers[CT_IMAGE_NAME].data)
    notes.clear()
    widget.set_image_layer(again)
    qtbot.waitUntil(widget.ui.restore_button.isEnabled, timeout=10_000)
    offers = [m for s, m in notes if "Found painting from" in m]
    assert len(offers) == 1 and "(1 slice)" in offers[0] and "Restore painting" in offers[0]
    n_layers = len(viewer.layers)
    viewer.dims.set_current_step(0, 0)  # the view on an unpainted slice
    widget.ui.restore_button.click()
    assert widget.current_slice() == 50  # Restore shows the first restored slice (issue 13, item 8)
    restored = viewer.layers[-1]
    assert len(viewer.layers) == n_layers + 1 and restored.name == "support (restored)"
    assert np.array_equal(restored.data, painted) and restored.data.shape == again.data.shape
    assert np.array_equal(support.data, painted)  # the user's layer is untouched
    assert same_layer(widget.support_layer, restored) and not widget.ui.restore_button.isEnabled()
    assert not [m for s, m in notes if s == "error"]


def test_closing_the_widget_writes_the_pending_stroke(ct, qtbot):
    viewer, widget, _ = ct
    signature = ct_signature(qtbot, widget)
    widget.autosave.timer.setInterval(60_000)  # the debounce would not fire before the close
    support = widget.create_support_layer()
    stroke(support, 60, 50, 20, 50, 3)
    assert AutosaveStore().latest(signature) is None
    widget.close()
    snap = AutosaveStore().latest(signature)
    assert snap is not None and snap.name == "support" and np.array_equal(snap.painted.to_labels(), support.data)


def test_damaged_autosave_is_reported_and_skipped(ct, qtbot, notes, autosave_dir):
    viewer, widget, _ = ct
    image = viewer.layers[CT_IMAGE_NAME]
    signature = ct_signature(qtbot, widget)
    autosave_dir.mkdir(parents=True, exist_ok=True)
    (autosave_dir / f"{signature}-000000000000-00000000000000000001.npz").write_bytes(b"PK\x03\x04 cut off")
    notes.clear()
    widget.set_image_layer(viewer.add_image(np.array(image.data), name="copy"))
    qtbot.waitUntil(lambda: any("damaged autosave" in m for _, m in notes), timeout=10_000)
    assert not widget.ui.restore_button.isEnabled()
    assert not [m for s, m in notes if s == "error"]


@pytest.fixture
def blobs(make_napari_viewer):
    """A small synthetic volume (10 x 64 x 64, bright squares on slices 2-7) with the widget docked;
    class 1 painted on slices 3 and 6. Returns (viewer, widget, support layer)."""
    from napari_fewshot.plugin.widget import FewShotWidget

    viewer = make_napari_viewer()
    volume = np.random.default_rng(0).normal(0, 5, (10, 64, 64)).astype(np.float32)
    volume[2:8, 20:40, 16:36] += 100
    viewer.add_image(volume, name="blobs")
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.ui.settings["device"].value = "cpu"
    support = widget.create_support_layer()
    support.data[[3, 6], 20:40, 16:36] = 1
    support.refresh()
    return viewer, widget, support


def test_painting_during_fine_tuning_is_kept_and_does_not_change_it(blobs, qtbot, notes):
    from napari_fewshot.core import FewShotSegmenter, FineTuneParams, run

    viewer, widget, support = blobs
    before = support.data.copy()
    losses = []
    worker = widget.fine_tune(steps=1, learning_rate=1e-3)
    worker.returned.connect(losses.extend)
    assert widget.busy
    stroke(support, 4, 10, 5, 60, 2)  # a second class, painted while the encoder trains
    during = support.data.copy()
    assert not np.array_equal(during, before)
    wait_idle(qtbot, widget, 120)
    assert not [m for s, m in notes if s == "error"]
    np.testing.assert_array_equal(support.data, during)  # the stroke is kept

    def core_losses(painted):
        seg = FewShotSegmenter(widget.params())
        seg.set_image(np.asarray(viewer.layers["blobs"].data))
        return run(seg.fine_tune(painted, FineTuneParams(method="encoder", steps=1, learning_rate=1e-3)))

    assert losses == pytest.approx(core_losses(before), rel=1e-4)  # trained on the support as it was
    assert core_losses(during) != pytest.approx(losses, rel=1e-4)  # (the stroke would have changed it)


def test_painting_during_features_and_segmentation_is_kept(blobs, qtbot, notes):
    """Segment uses the support as it was when pressed; paint added meanwhile stays in the layer."""
    _, widget, support = blobs
    assert widget.compute_features() is not None and widget.busy
    stroke(support, 8, 50, 5, 60, 7)  # painted while the encoder runs
    wait_idle(qtbot, widget, 120)
    assert support.data[8, 50, 5] == 7
    assert widget.segment("all") is not None
    stroke(support, 1, 50, 5, 60, 9)  # a new class, painted while segmenting
    during = support.data.copy()
    wait_idle(qtbot, widget, 120)
    assert not [m for s, m in notes if s == "error"]
    prediction = widget.prediction_layer.data
    assert 7 in prediction and 9 not in prediction  # the job used the copy taken when it started
    np.testing.assert_array_equal(support.data, during)  # and nothing painted was touched


KILL_APP = textwrap.dedent("""
    import torch  # before Qt, as in the tests

    import sys

    import napari
    from qtpy.QtCore import QTimer

    n_strokes, gap_ms = int(sys.argv[1]), int(sys.argv[2])
    viewer = napari.Viewer()
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    image = widget.image_layer
    support = widget.create_support_layer()
    done = []

    def stroke():
        k = len(done)
        z, label = 20 + 10 * k, 1 + k % 3
        support.selected_label = label
        with support.block_history():  # one stroke: napari emits `paint` when it ends
            for x in range(20, 60, 3):
                support.paint((z, 30 + k, x), label, refresh=False)
        support.refresh()
        done.append(k)
        print(f"STROKE {k} {z} {30 + k} {label}", flush=True)
        if len(done) < n_strokes:
            QTimer.singleShot(gap_ms, stroke)

    def start():
        signature = widget.autosave.signature_of(image)
        if signature is None:
            QTimer.singleShot(50, start)
            return
        print("SIGNATURE", signature, flush=True)
        QTimer.singleShot(gap_ms, stroke)

    QTimer.singleShot(0, start)
    napari.run()
""")


def test_killing_napari_mid_painting_loses_at_most_the_last_stroke(tmp_path, autosave_dir):
    from napari_fewshot.plugin.autosave import DELAY_MS
    from napari_fewshot.plugin.samples import ct_abdomen

    n_strokes, gap_ms = 4, DELAY_MS + 700
    script = tmp_path / "paint_then_die.py"
    script.write_text(KILL_APP)
    env = dict(os.environ, NAPARI_FEWSHOT_AUTOSAVE_DIR=str(autosave_dir))
    log = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, str(script), str(n_strokes), str(gap_ms)], stdout=subprocess.PIPE,
                            stderr=log, text=True, env=env, cwd=tmp_path)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    signature, strokes = None, []
    try:
        deadline = time.monotonic() + 60
        while len(strokes) < n_strokes:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic())).split()
            if line[0] == "SIGNATURE":
                signature = line[1]
            elif line[0] == "STROKE":
                strokes.append(tuple(int(v) for v in line[2:]))
        time.sleep(DELAY_MS / 1000)  # the last stroke's debounce interval, then the kill
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    except queue.Empty:
        proc.kill()
        pytest.fail(f"the napari process stopped early: {(tmp_path / 'stderr.txt').read_text()[-3000:]}")
    finally:
        log.close()
    assert signature == scan_signature(ct_abdomen()[0][0])  # the same key in a new process
    saved = AutosaveStore().load(signature)
    assert saved is not None, "nothing was autosaved"
    kept = [saved[z, y, 20:58].max() == label for z, y, label in strokes]
    assert all(kept[:-1]), f"strokes kept: {kept}"  # at most the last stroke is lost
    assert set(np.unique(saved)) <= {0} | {label for _, _, label in strokes}


def test_a_save_of_another_shape_does_not_hide_the_good_one(ct, qtbot, notes):
    """Issue 22, item 7: a newer, well-formed save of this scan's key but another shape is passed over;
    Restore offers (and restores) the older save that fits the image."""
    viewer, widget, _ = ct
    image = viewer.layers[CT_IMAGE_NAME]
    signature = ct_signature(qtbot, widget)
    good = np.zeros(image.data.shape, np.uint8)
    good[50, 40:60, 20:60] = 1
    store = AutosaveStore()
    store.save(signature, good, name="support")
    misfit = np.zeros((image.data.shape[0] - 1, *image.data.shape[1:]), np.uint8)
    misfit[10, 5:9, 5:9] = 2
    store.save(signature, misfit, name="support")  # newer, same key and layer name, another shape
    notes.clear()
    widget.set_image_layer(viewer.add_image(np.array(image.data), name="copy"))
    qtbot.waitUntil(widget.ui.restore_button.isEnabled, timeout=10_000)
    assert [m for _, m in notes if "Found painting from" in m and "(1 slice)" in m]
    widget.ui.restore_button.click()
    restored = viewer.layers[-1]
    assert restored.name == "support (restored)" and np.array_equal(restored.data, good)
    assert not [m for s, m in notes if s == "error" or "not restored" in m]


def test_a_failed_restore_adds_nothing_and_leaves_the_paint_alone(ct, qtbot, notes, monkeypatch):
    """A save that cannot be turned back into labels (here: out of memory) ends in one sentence; no
    layer is added, the user's support layer and the widget's choice of it are unchanged."""
    from napari_fewshot.io.autosave import Painted

    viewer, widget, _ = ct
    image = viewer.layers[CT_IMAGE_NAME]
    signature = ct_signature(qtbot, widget)
    saved = np.zeros(image.data.shape, np.uint8)
    saved[30, 10:20, 10:20] = 4
    AutosaveStore().save(signature, saved, name="earlier")
    copy = viewer.add_image(np.array(image.data), name="copy")
    widget.set_image_layer(copy)
    support = widget.create_support_layer()
    stroke(support, 50, 40, 20, 60, 1)
    painted = support.data.copy()
    qtbot.waitUntil(widget.ui.restore_button.isEnabled, timeout=10_000)

    def out_of_memory(self):
        raise MemoryError("Unable to allocate 1.2 GiB")

    monkeypatch.setattr(Painted, "to_labels", out_of_memory)
    n_layers = len(viewer.layers)
    notes.clear()
    widget.ui.restore_button.click()
    assert len(viewer.layers) == n_layers and same_layer(widget.support_layer, support)
    assert np.array_equal(support.data, painted)
    warnings = [m for s, m in notes if s == "warning"]
    assert len(warnings) == 1 and "could not be restored" in warnings[0] and "\n" not in warnings[0]
    assert not [m for s, m in notes if s == "error"]
