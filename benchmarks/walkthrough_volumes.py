"""The walkthrough's volume stories (benchmarks/walkthrough_gui.py runs them): ``ct`` on the CT sample and ``dicom``
on a DICOM series (DICOM SEG export)."""

from __future__ import annotations

import shutil
import time

import numpy as np
from walkthrough_gui import CT_SLICES, DATA, LIVER, SPLEEN, Walk, answer_dialogs, dice, missed_stroke, paint_from

def story_ct(w: Walk) -> None:
    from gui_driver import canvas_drag

    from napari_fewshot.io import read_labels

    viewer = w.open_viewer()
    viewer.open_sample("napari-fewshot", "ct_abdomen")  # File > Open Sample > napari-fewshot > Abdominal CT
    w.step("sample_open", "the CT and a hidden reference layer", layers=[ly.name for ly in viewer.layers])
    widget = w.dock()
    reference = np.asarray(viewer.layers["CT abdomen: reference organs"].data)
    w.step("widget", "the panel docked, image picked, a hint what to do next",
           restore_enabled=widget.ui.restore_button.isEnabled())
    widget.ui.new_support_button.click()
    support = widget.support_layer
    w.step("new_support", "an empty support layer, selected for painting", support=support.name if support else None)
    for z in CT_SLICES:
        viewer.dims.set_current_step(0, z)
        paint_from(support, reference, z, LIVER)
        paint_from(support, reference, z, SPLEEN)
        w.step(f"painted_{z}", f"liver (1) and spleen (2) filled on slice {z}",
               labels=sorted(int(v) for v in np.unique(support.data[z])))
    painted = np.array(support.data, copy=True)
    viewer.dims.set_current_step(0, 80)  # the clinician looks at an unpainted slice while it segments
    started = time.perf_counter()
    widget.ui.segment_button.click()
    w.wait(lambda: widget.streaming.running or (not widget.busy and time.perf_counter() - started > 5))
    coarse_s = time.perf_counter() - started
    coarse = np.array(widget.prediction_layer.data, copy=True) if widget.prediction_layer is not None else None
    w.step("coarse", "the coarse prediction (outlines), refinement starting in the activity dock",
           seconds=round(coarse_s, 1), streaming=widget.streaming.running)
    w.pump(8)
    w.step("refining", "refined slices replacing coarse ones, progress in the activity dock",
           streaming=widget.streaming.running,
           slices_changed=int(sum(not np.array_equal(coarse[z], widget.prediction_layer.data[z])
                                  for z in range(len(coarse)))) if coarse is not None else None)
    w.wait()
    total_s = time.perf_counter() - started
    pred = np.asarray(widget.prediction_layer.data)
    unpainted = [z for z in range(len(pred)) if z not in CT_SLICES]
    w.step("refined", "every slice refined; status says done",
           seconds=round(total_s, 1), support_unchanged=bool(np.array_equal(painted, support.data)),
           dice_liver=round(dice(pred[unpainted] == LIVER, reference[unpainted] == LIVER), 3),
           dice_spleen=round(dice(pred[unpainted] == SPLEEN, reference[unpainted] == SPLEEN), 3))
    widget.ui.heatmap_check.setChecked(True)
    w.wait()
    w.step("heatmaps", "one heatmap layer per class (liver, spleen) with colour bars",
           heatmaps=[ly.name for ly in widget.heatmap_layers.values()])
    widget.ui.check_next_button.click()
    w.pump(1)
    z = widget.current_slice()
    w.step("check_next", "the view on the least sure predicted slice; status says how many pixels may be wrong",
           slice=z, dice_liver_here=round(dice(pred[z] == LIVER, reference[z] == LIVER), 3),
           dice_spleen_here=round(dice(pred[z] == SPLEEN, reference[z] == SPLEEN), 3))
    pred = np.asarray(widget.prediction_layer.data)
    options = []  # (run length, organ, mode, points): a stroke adding missed organ, or erasing a false positive
    for c in (LIVER, SPLEEN):
        for mode, want, have in (("paint", reference[z] == c, pred[z] == c), ("erase", pred[z] == c, reference[z] == c)):
            for margin in (3, 2):
                points = missed_stroke(have, want, margin=margin)
                if points is not None:
                    options.append((points[-1][1] - points[0][1], c, mode, points))
                    break
    before = np.array(support.data, copy=True)
    organ = mode = points = None
    if options:
        _, organ, mode, points = max(options)
        canvas_drag(viewer, support, z, points, label=organ, mode=mode, brush=5)
    w.pump(1)
    w.step("corrected", f"slice {z} took the prediction and the stroke ({mode} organ {organ}) changed only what it "
           "touched; the slice is now support", slice=z, stroke=points, organ=organ, mode=mode,
           dice_slice_after=None if organ is None else round(dice(support.data[z] == organ, reference[z] == organ), 3),
           slice_became_support=bool(np.any(support.data[z])),
           other_slices_unchanged=bool(np.array_equal(np.delete(before, z, 0), np.delete(support.data, z, 0))))
    widget.ui.segment_button.click()
    w.wait()
    pred2 = np.asarray(widget.prediction_layer.data)
    rest = [i for i in range(len(pred2)) if i not in (*CT_SLICES, z)]
    w.step("resegmented", "the prediction after the correction",
           dice_liver=round(dice(pred2[rest] == LIVER, reference[rest] == LIVER), 3),
           dice_spleen=round(dice(pred2[rest] == SPLEEN, reference[rest] == SPLEEN), 3))
    widget.ui.fine_tune_button.click()
    w.wait()
    w.step("fine_tune", "one clear sentence: on a volume it adapts nothing unless 'Decoder on volumes' is ticked")
    out = w.out / "ct_export"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    answer_dialogs(out / "CT_mask.nii.gz")
    widget.ui.export_button.click()
    w.pump(1)
    written = sorted(p.name for p in out.iterdir())
    back = read_labels(out / "CT_mask.nii.gz") if (out / "CT_mask.nii.gz").exists() else None
    w.step("export_nifti", "CT_mask.nii.gz (+ labels.json, volumes.csv) written, reads back with the same shape",
           written=written, shape_back=None if back is None else list(np.shape(back)),
           equal_back=None if back is None else bool(np.array_equal(np.asarray(back), widget.prediction_layer.data)))
    answer_dialogs(out / "CT_mask.dcm")
    widget.ui.export_button.click()
    w.pump(1)
    w.step("export_seg_not_dicom", "one sentence: DICOM SEG needs a scan read from DICOM; save as NIfTI",
           written=sorted(p.name for p in out.iterdir()))
    answer_dialogs(out / "CT_heatmap.nii.gz")
    widget.ui.export_heatmaps_button.click()
    w.pump(1)
    w.step("export_heatmaps", "one heatmap file per class", written=sorted(p.name for p in out.iterdir()))
    final_support = np.array(support.data, copy=True)
    w.pump(1.5)  # the autosave waits half a second after a stroke
    w.close()  # closed without saving
    viewer = w.open_viewer()
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    widget = w.dock()
    w.wait(lambda: widget.ui.restore_button.isEnabled(), timeout_s=60)
    w.step("reopened", "Restore painting offered (enabled) for the same scan",
           restore_enabled=widget.ui.restore_button.isEnabled(), restore_text=widget.ui.restore_button.text(),
           restore_tip=widget.ui.restore_button.toolTip())
    widget.ui.restore_button.click()
    w.pump(1)
    restored = widget.support_layer
    w.step("restored", "the painting (2 slices + the corrected one) back as a new layer",
           layer=restored.name if restored is not None else None,
           equal_to_last_painting=bool(restored is not None and np.array_equal(restored.data, final_support)))
    w.close()


def story_dicom(w: Walk) -> None:
    """A DICOM series: paint liver on 2 slices, Segment (coarse, to keep it short), export DICOM SEG, read back."""
    from napari_fewshot.io import read_labels, read_volume

    folder = DATA / "ct_totalseg" / "example_ct_dicom"
    viewer = w.open_viewer()
    viewer.open(str(folder), plugin="napari-fewshot")
    widget = w.dock()
    image = widget.image_layer
    volume = read_volume(folder)
    seg = read_labels(DATA / "ct_totalseg" / "example_seg_dicom.nii.gz", like=volume)
    w.step("dicom_open", "the DICOM series (20 slices of 512 x 512)", shape=list(image.data.shape))
    widget.ui.new_support_button.click()
    support = widget.support_layer
    liver_slices = [z for z in range(len(seg)) if (seg[z] == 5).sum() > 2000]
    for z in (liver_slices[2], liver_slices[-3]):
        viewer.dims.set_current_step(0, z)
        paint_from(support, seg, z, 1, source_label=5)
    support.events.selected_label  # noqa: B018
    w.step("dicom_painted", "liver painted on 2 slices", slices=[liver_slices[2], liver_slices[-3]])
    widget.ui.segment_button.click()
    w.wait()
    w.step("dicom_segmented", "liver predicted on the other slices")
    out = w.out / "dicom_export"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    answer_dialogs(out / "series_mask.dcm")
    widget.ui.export_button.click()
    w.pump(1)
    written = sorted(p.name for p in out.iterdir())
    back = None
    if (out / "series_mask.dcm").exists():
        from napari_fewshot.io.dicom_seg import read_dicom_seg

        try:
            back = read_dicom_seg(out / "series_mask.dcm", like=volume)
        except TypeError:
            back = read_dicom_seg(out / "series_mask.dcm")
    data = getattr(back, "data", back)
    w.step("dicom_seg", "series_mask.dcm written; reads back with the scan's shape and the same labels",
           written=written, shape_back=None if data is None else list(np.shape(data)),
           equal_back=None if data is None else bool(np.array_equal(np.asarray(data), widget.prediction_layer.data)))
    viewer.open(str(out / "series_mask.dcm"), plugin="napari-fewshot")
    w.pump(1)
    w.step("dicom_seg_reopened", "the SEG opens as a Labels layer named by its classes",
           layers=[f"{ly.name} ({type(ly).__name__})" for ly in viewer.layers])
    w.close()
