"""The walkthrough's image-set story ``us`` (10 BUSI images, the Box tool) and its mistakes story ``bad``
(benchmarks/walkthrough_gui.py runs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
from walkthrough_gui import CT_SLICES, DATA, LIVER, Walk, answer_dialogs, dice, paint_from, press_key

def busi_folder(out: Path, n: int = 10) -> Path:
    folder = out / "busi10"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        for f in (DATA / "busi" / "benign").glob(f"benign ({i})*.png"):
            shutil.copy(f, folder / f.name)
    return folder


def story_us(w: Walk) -> None:
    from gui_driver import rectangle_drag

    from napari_fewshot.io import read_busi_mask
    from napari_fewshot.plugin import IMAGE_SET_KEY

    folder = busi_folder(w.out)
    viewer = w.open_viewer()
    viewer.open(str(folder), plugin="napari-fewshot")  # File > Open Folder..., reader napari-fewshot
    image = viewer.layers[folder.name]
    info = image.metadata[IMAGE_SET_KEY]
    masks = [read_busi_mask(folder / name) for name in info.names]
    w.step("set_open", "10 images as one set, a hidden reference-masks layer", layers=[ly.name for ly in viewer.layers],
           names=list(info.names))
    widget = w.dock()
    widget.ui.new_support_button.click()
    support = widget.support_layer
    widget.ui.box_button.click()
    boxes = viewer.layers["boxes"] if "boxes" in viewer.layers else None
    w.step("box_tool", "a boxes layer in rectangle mode; the status says what to do", boxes=boxes is not None)

    def box_of(i, pad=0.1):
        rows, cols = np.nonzero(masks[i])
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        dr, dc = pad * (r1 - r0), pad * (c1 - c0)
        h, wd = masks[i].shape
        return (max(0, r0 - dr), max(0, c0 - dc)), (min(h - 1, r1 + dr), min(wd - 1, c1 + dc))

    for i in range(3):
        viewer.dims.set_current_step(0, i)
        rectangle_drag(viewer, boxes, i, *box_of(i))
        w.wait()
        h, wd = masks[i].shape
        w.step(f"boxed_{i}", f"lesion of image {i} painted from the box",
               dice_box=round(dice(support.data[i, :h, :wd] != 0, masks[i]), 3), boxes_painted=widget.boxes.painted)
    painted = np.array(support.data, copy=True)
    widget.ui.segment_button.click()
    w.wait()
    pred = np.asarray(widget.prediction_layer.data)
    scores = [dice(pred[i, :m.shape[0], :m.shape[1]] != 0, m) for i, m in enumerate(masks)]
    viewer.dims.set_current_step(0, 5)
    w.step("segmented", "every unboxed image segmented", dice_unboxed=[round(s, 3) for s in scores[3:]],
           support_unchanged=bool(np.array_equal(painted, support.data)))
    widget.ui.heatmap_check.setChecked(True)
    w.wait()
    w.step("heatmaps", "a heatmap layer for the lesion class", heatmaps=[ly.name for ly in widget.heatmap_layers.values()])
    widget.ui.check_next_button.click()
    w.pump(1)
    k = widget.current_slice()
    w.step("check_next", "the view on the image most likely missed; status gives its estimated error", image=k,
           dice_there=round(scores[k], 3), worst=int(np.argmin(scores[3:]) + 3))
    before = np.array(support.data, copy=True)
    before_pred = np.array(widget.prediction_layer.data, copy=True)
    rectangle_drag(viewer, boxes, k, *box_of(k))
    w.wait()
    h, wd = masks[k].shape
    w.step("box_correct", f"image {k} signed by a box: its prediction replaced by the box's mask",
           dice_after=round(dice(support.data[k, :h, :wd] != 0, masks[k]), 3))
    viewer.layers.selection.active = boxes
    press_key(viewer, "Control-Z")
    w.pump(1)
    w.step("undo", "Ctrl+Z (boxes layer active) gives back the prediction and the unsigned image",
           support_back=bool(np.array_equal(before, support.data)),
           prediction_back=bool(np.array_equal(before_pred, widget.prediction_layer.data)))
    rectangle_drag(viewer, boxes, k, *box_of(k))  # the clinician boxes it again (wants it signed)
    w.wait()
    widget.ui.fine_tune_button.click()
    w.wait()
    pred = np.asarray(widget.prediction_layer.data)
    scores2 = [dice(pred[i, :m.shape[0], :m.shape[1]] != 0, m) for i, m in enumerate(masks)]
    w.step("fine_tune", "what was adapted and how long it took, then a new segmentation",
           dice_after=[round(s, 3) for s in scores2])
    out = w.out / "us_export"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    answer_dialogs(out)
    widget.ui.export_button.click()
    w.pump(1)
    files = sorted(p.name for p in out.iterdir())
    from PIL import Image

    sizes_ok = all(Image.open(out / f"{Path(n).stem}_mask.png").size[::-1] == m.shape for n, m in zip(info.names, masks))
    w.step("export", "one NAME_mask.png per image, each at its image's size", written=files, sizes_ok=sizes_ok)
    w.close()


def story_bad(w: Walk) -> None:
    viewer = w.open_viewer()
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    widget = w.dock()
    reference = np.asarray(viewer.layers["CT abdomen: reference organs"].data)
    widget.ui.segment_button.click()
    w.pump(1)
    w.step("segment_no_support", "one sentence: create a support and paint first")
    widget.ui.new_support_button.click()
    support = widget.support_layer
    widget.ui.segment_button.click()
    w.pump(1)
    w.step("segment_nothing_painted", "one sentence: paint a few slices first", painted=bool(support.data.any()))
    data = np.zeros_like(support.data)
    data[reference == LIVER] = LIVER
    data[:, :4, :4] = LIVER  # a stroke on every slice (e.g. painting with the slider moving, or a 3D fill)
    support.data = data
    every = np.array(support.data, copy=True)
    widget.ui.segment_button.click()
    w.wait()
    w.step("segment_every_slice_painted", "one sentence: nothing left to predict (or a result equal to the paint)",
           support_unchanged=bool(np.array_equal(every, support.data)))
    support.data = np.zeros_like(support.data)
    for z in CT_SLICES:
        paint_from(support, reference, z, LIVER)
    painted = np.array(support.data, copy=True)
    notes_file = w.out / "notes.txt"
    notes_file.write_text("patient list, not an image\n")
    for name, path, plugin in (("text_file_plugin", notes_file, "napari-fewshot"), ("text_file_any", notes_file, None),
                               ("fake_nifti", w.out / "broken.nii.gz", "napari-fewshot"),
                               ("fake_png_folder", w.out / "fakepng", "napari-fewshot")):
        if name == "fake_nifti":
            path.write_bytes(b"not a nifti file at all")
        if name == "fake_png_folder":
            path.mkdir(exist_ok=True)
            (path / "a.png").write_bytes(b"not a png")
        message = None
        try:
            viewer.open(str(path), plugin=plugin)
        except Exception as exc:  # noqa: BLE001 - napari's File > Open shows the exception's message
            message = f"{type(exc).__name__}: {exc}"
        w.pump(1)
        w.step(f"open_{name}", "one sentence naming the file, no traceback", raised=message,
               support_unchanged=bool(np.array_equal(painted, support.data)))
    widget.ui.segment_button.click()
    w.pump(0.5)
    widget.ui.segment_button.click()  # a second click while it runs
    w.pump(1)
    w.step("second_segment", "one sentence: Segmenting is still running; the first job continues",
           busy=widget.busy)
    w.wait(lambda: widget.streaming.running or not widget.busy)  # the coarse result is shown, refinement starts
    w.step("coarse_shown", "the first Segment's coarse result; refinement streaming",
           streaming=widget.streaming.running, support_unchanged=bool(np.array_equal(painted, support.data)))
    locked = w.out / "locked"
    if locked.exists():
        subprocess.run(["chattr", "-i", str(locked)], check=False)
        shutil.rmtree(locked)
    locked.mkdir()
    subprocess.run(["chattr", "+i", str(locked)], check=False)  # root ignores chmod: an immutable folder
    try:
        answer_dialogs(locked / "CT_mask.nii.gz")
        widget.ui.export_button.click()
        w.pump(1)
        w.step("export_not_writable", "one sentence: the folder cannot be written", written=os.listdir(locked))
        answer_dialogs(locked / "CT_heatmap.nii.gz")
        widget.ui.export_heatmaps_button.click()
        w.pump(1)
        w.step("export_heatmaps_no_heatmaps", "one sentence (no heatmaps yet / folder not writable)")
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)
    # closing the viewer while refinement streams (the support is compared before the window goes)
    w.step("streaming_before_close", "refinement still streaming", streaming=widget.streaming.running,
           support_unchanged=bool(np.array_equal(painted, support.data)))
    w.close()
    w.pump(3)
    w.step("closed_while_streaming", "the window closed, no traceback, no hang")
