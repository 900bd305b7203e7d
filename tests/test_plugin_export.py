"""Exporting the prediction and heatmaps from the widget, and File > Save through the npe2 writer."""

import nibabel as nib
import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, paint_support, wait_idle

pytestmark = pytest.mark.gui


def test_export_round_trips_and_never_overwrites(ct, qtbot, tmp_path, notes):
    from napari_fewshot.sample_data import CT_IMAGE

    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.plugin import VOLUME_KEY

    viewer, widget, reference = ct
    paint_support(widget, reference)
    widget.ui.heatmap_check.setChecked(True)
    widget.segment("range", 84, 88)
    wait_idle(qtbot, widget)
    mask = widget.prediction_layer.data.copy()
    assert mask[84:89].any()
    volume = viewer.layers[CT_IMAGE_NAME].metadata[VOLUME_KEY]

    for name in ("mask.nii.gz", "mask.tif", "mask.npy"):
        [path] = widget.export(str(tmp_path / name))
        np.testing.assert_array_equal(read_labels(path, like=volume), mask)
    # NIfTI goes back on the source file's grid, with its affine
    np.testing.assert_allclose(nib.load(tmp_path / "mask.nii.gz").affine, nib.load(CT_IMAGE).affine)
    assert nib.load(tmp_path / "mask.nii.gz").shape == nib.load(CT_IMAGE).shape
    pngs = widget.export(str(tmp_path / "png" / "mask.png"))
    assert len(pngs) == 112 and pngs[0].name == "mask_0000.png"
    np.testing.assert_array_equal(np.stack([read_volume(p).data[0] for p in pngs]), mask)

    before = (tmp_path / "mask.tif").read_bytes()
    notes.clear()
    assert widget.export(str(tmp_path / "mask.tif")) is None
    assert any(s == "error" and "exists" in m for s, m in notes)
    assert (tmp_path / "mask.tif").read_bytes() == before
    assert widget.export(str(tmp_path / "png" / "mask.png")) is None  # any existing slice file counts
    assert widget.export(str(tmp_path / "mask.tif"), overwrite=True)

    [heat_path] = widget.export_heatmaps(str(tmp_path / "heat.nii.gz"))
    assert heat_path.name == "heat_class1_liver.nii.gz"
    heat = read_volume(heat_path).data
    np.testing.assert_allclose(heat, widget.heatmap_layers[1].data, atol=1e-6)
    assert widget.export_heatmaps(str(tmp_path / "heat.nii.gz")) is None


def test_file_save_uses_the_npe2_writer(ct, tmp_path):
    from napari_fewshot.io import read_labels

    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    viewer.layers.selection = {support}
    written = viewer.layers.save(str(tmp_path / "support.nii.gz"), selected=True, plugin="napari-fewshot")
    assert [str(p) for p in written] == [str(tmp_path / "support.nii.gz")]
    np.testing.assert_array_equal(read_labels(written[0]), support.data)
    with pytest.raises(Exception, match="exists"):  # File > Save never replaces a file silently either
        viewer.layers.save(str(tmp_path / "support.nii.gz"), selected=True, plugin="napari-fewshot")


def test_export_dialog_asks_before_replacing(ct, qtbot, tmp_path, monkeypatch, notes):
    from napari_fewshot.plugin import exporting

    _, widget, reference = ct
    paint_support(widget, reference)
    widget.segment("current")
    wait_idle(qtbot, widget)
    target = tmp_path / "mask.npy"
    monkeypatch.setattr(exporting.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    questions = []

    def answer(reply):
        def question(*args, **kwargs):
            questions.append(args[2])
            return reply
        return staticmethod(question)

    widget.ui.export_button.click()  # the button: dialog -> path
    assert target.exists() and not questions
    before = target.stat().st_mtime_ns
    monkeypatch.setattr(exporting.QMessageBox, "question", answer(exporting.QMessageBox.StandardButton.No))
    widget.ui.export_button.click()
    assert questions == [f"'{target}' exists. Replace it?"] and target.stat().st_mtime_ns == before
    assert notes[-1] == ("info", "Export cancelled; nothing was written.")
    monkeypatch.setattr(exporting.QMessageBox, "question", answer(exporting.QMessageBox.StandardButton.Yes))
    widget.ui.export_button.click()
    assert len(questions) == 2 and target.stat().st_mtime_ns != before


def test_export_dialog_opens_beside_the_scan_and_adds_the_filter_extension(ct, qtbot, tmp_path, monkeypatch):
    """Issue 13 item 4: SCAN_mask.nii.gz suggested beside the scan; a bare name gets the selected filter's extension."""
    from napari_fewshot.plugin import exporting
    from napari_fewshot.sample_data import CT_IMAGE

    _, widget, reference = ct
    paint_support(widget, reference)
    widget.segment("current")
    wait_idle(qtbot, widget)
    asked = []

    def dialog(parent, title, start, filters, initial, **kwargs):
        asked.append((start, initial))
        return str(tmp_path / "liver_out"), "NumPy (*.npy)"  # typed without an extension

    monkeypatch.setattr(exporting.QFileDialog, "getSaveFileName", staticmethod(dialog))
    widget.ui.export_button.click()
    stem = CT_IMAGE.name[: -len(".nii.gz")]
    assert asked == [(str(CT_IMAGE.parent / f"{stem}_mask.nii.gz"), "NIfTI (*.nii.gz *.nii)")]
    assert (tmp_path / "liver_out.npy").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "liver_out.npy"), widget.prediction_layer.data)


def test_save_prototypes_checks_the_paint_before_asking_for_a_name(ct, monkeypatch, notes):
    from napari_fewshot.plugin import banks

    _, widget, _ = ct
    widget.create_support_layer()  # nothing painted
    asked = []
    monkeypatch.setattr(banks.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: asked.append(a) or ("", "")))
    widget.ui.save_bank_button.click()
    assert asked == [] and not widget.busy
    assert any(s == "warning" and "Nothing is painted" in m for s, m in notes)
