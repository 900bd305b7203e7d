"""Exporting the prediction and heatmaps from the widget, and File > Save through the npe2 writer."""

import nibabel as nib
import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, paint_support, wait_idle

pytestmark = pytest.mark.gui


def test_export_round_trips_and_never_overwrites(ct, qtbot, tmp_path, notes):
    from napari_fewshot.sample_data import CT_IMAGE

    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.io.sidecar import read_sidecar
    from napari_fewshot.plugin import VOLUME_KEY

    viewer, widget, reference = ct
    paint_support(widget, reference)
    widget.ui.heatmap_check.setChecked(True)
    widget.segment("range", 84, 88)
    wait_idle(qtbot, widget)
    mask = widget.prediction_layer.data.copy()
    assert mask[84:89].any()
    volume = viewer.layers[CT_IMAGE_NAME].metadata[VOLUME_KEY]

    for name in ("mask.nii.gz", "tiff/mask.tif", "npy/mask.npy"):
        path, sidecar = widget.export(str(tmp_path / name))  # the mask, then its class names beside it
        np.testing.assert_array_equal(read_labels(path, like=volume), mask)
        assert sidecar == path.parent / "mask.labels.json" and read_sidecar(path).names[1] == "liver"
    # NIfTI goes back on the source file's grid, with its affine
    np.testing.assert_allclose(nib.load(tmp_path / "mask.nii.gz").affine, nib.load(CT_IMAGE).affine)
    assert nib.load(tmp_path / "mask.nii.gz").shape == nib.load(CT_IMAGE).shape
    *pngs, sidecar = widget.export(str(tmp_path / "png" / "mask.png"))
    assert len(pngs) == 112 and pngs[0].name == "mask_0000.png" and sidecar.name == "mask.labels.json"
    np.testing.assert_array_equal(np.stack([read_volume(p).data[0] for p in pngs]), mask)

    before = (tmp_path / "tiff" / "mask.tif").read_bytes()
    notes.clear()
    assert widget.export(str(tmp_path / "tiff" / "mask.tif")) is None
    assert any(s == "error" and "exists" in m for s, m in notes)
    assert (tmp_path / "tiff" / "mask.tif").read_bytes() == before
    assert widget.export(str(tmp_path / "png" / "mask.png")) is None  # any existing slice file counts
    assert widget.export(str(tmp_path / "tiff" / "mask.tif"), overwrite=True)

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
    assert [str(p) for p in written] == [str(tmp_path / "support.nii.gz"), str(tmp_path / "support.labels.json")]
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
    # the mask and its class names beside it (mask.labels.json)
    assert questions == [f"'{target}' and 1 more file exist. Replace them?"] and target.stat().st_mtime_ns == before
    assert notes[-1] == ("info", "Export cancelled; nothing was written.")
    monkeypatch.setattr(exporting.QMessageBox, "question", answer(exporting.QMessageBox.StandardButton.Yes))
    widget.ui.export_button.click()
    assert len(questions) == 2 and target.stat().st_mtime_ns != before


def test_export_dialog_suggests_the_users_folder_and_adds_the_filter_extension(ct, qtbot, tmp_path, monkeypatch):
    """Issue 23: SCAN_mask.nii.gz suggested in the user's folder: never inside the installed package (the
    CT sample ships there), so home first, then the folder last exported to; a bare name gets the selected
    filter's extension."""
    from pathlib import Path

    from napari_fewshot.plugin import exporting
    from napari_fewshot.sample_data import CT_IMAGE

    _, widget, reference = ct
    paint_support(widget, reference)
    widget.segment("current")
    wait_idle(qtbot, widget)
    asked = []

    def dialog(parent, title, start, filters, initial, **kwargs):
        asked.append((start, initial))
        return str(tmp_path / "out" / "liver_out"), "NumPy (*.npy)"  # typed without an extension

    monkeypatch.setattr(exporting.QFileDialog, "getSaveFileName", staticmethod(dialog))
    widget.ui.export_button.click()
    stem = CT_IMAGE.name[: -len(".nii.gz")]
    assert asked == [(str(Path.home() / f"{stem}_mask.nii.gz"), "NIfTI (*.nii.gz *.nii)")]
    assert (tmp_path / "out" / "liver_out.npy").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "liver_out.npy"), widget.prediction_layer.data)
    monkeypatch.setattr(exporting.QMessageBox, "question",  # the same name again: "replace?" -> no
                        staticmethod(lambda *a, **k: exporting.QMessageBox.StandardButton.No))
    widget.ui.export_button.click()  # the next dialog opens where the last export went
    assert asked[-1][0] == str((tmp_path / "out").resolve() / f"{stem}_mask.nii.gz")


def test_the_suggested_folder_is_the_scans_own_unless_it_ships_with_the_package(tmp_path):
    from pathlib import Path

    from napari_fewshot.plugin.exporting import suggested_folder
    from napari_fewshot.sample_data import CT_IMAGE

    scan = tmp_path / "patient" / "ct.nii.gz"
    scan.parent.mkdir()
    assert suggested_folder(str(scan)) == scan.parent.resolve()
    assert suggested_folder(str(CT_IMAGE)) == Path.home()
    assert suggested_folder(str(scan), last_used=str(tmp_path)) == tmp_path
    assert suggested_folder(str(scan), last_used=str(tmp_path / "gone")) == scan.parent.resolve()
    assert suggested_folder(None) == Path.home()


def test_save_prototypes_checks_the_paint_before_asking_for_a_name(ct, monkeypatch, notes):
    from napari_fewshot.plugin import banks

    _, widget, _ = ct
    widget.create_support_layer()  # nothing painted
    asked = []
    monkeypatch.setattr(banks.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: asked.append(a) or ("", "")))
    widget.ui.save_bank_button.click()
    assert asked == [] and not widget.busy
    assert any(s == "warning" and "Nothing is painted" in m for s, m in notes)


def test_a_clinician_corrects_an_existing_seg_of_a_dicom_series_and_saves_a_seg(make_napari_viewer, qtbot, tmp_path,
                                                                               notes):
    """Issue 23 items 1 and 2: a DICOM series and a SEG of it (the liver on two slices) open beside each other;
    the SEG is a Labels layer with its segment's name and colour, the widget takes it as the support, and the
    prediction exports as a SEG of the series (read back: the prediction, on the series' grid), its class
    named and coloured as the SEG was. The same prediction of a scan not from DICOM gets no SEG."""
    from dicom_series import make_series

    from napari_fewshot.io import read_volume, write_mask
    from napari_fewshot.io.class_table import ClassTable
    from napari_fewshot.plugin import layers

    (tmp_path / "series").mkdir()
    folder, volume, reference, _ = make_series(tmp_path / "series")
    earlier = np.where(reference == 1, 1, 0).astype(np.uint8)
    earlier[[1, 2, 4, 5]] = 0  # the liver on slices 0 and 3 only
    write_mask(tmp_path / "earlier.dcm", earlier, like=volume, classes=ClassTable({1: "liver"}, {1: (0.2, 0.8, 0.3)}))

    viewer = make_napari_viewer()
    [image] = viewer.open(str(folder), plugin="napari-fewshot")
    [seg] = viewer.open(str(tmp_path / "earlier.dcm"), plugin="napari-fewshot")
    assert seg._type_string == "labels" and layers.class_names(seg) == {1: "liver"}
    np.testing.assert_array_equal(seg.data, earlier)
    np.testing.assert_allclose(seg.colormap.map(np.array([1]))[0][:3], (0.2, 0.8, 0.3), atol=0.02)

    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    widget.ui.image_combo.setCurrentText(image.name)
    assert seg.name in [widget.ui.support_combo.itemText(i) for i in range(widget.ui.support_combo.count())]
    widget.ui.support_combo.setCurrentText(seg.name)
    layers.check_support(viewer, seg, image)  # the user's segmentation is this image's support
    widget.segment("all")
    wait_idle(qtbot, widget)
    prediction = np.asarray(widget.prediction_layer.data)
    assert prediction[[1, 2]].any()  # the slices without paint were segmented

    [path] = widget.export(str(tmp_path / "corrected.dcm"))
    back = read_volume(path)
    np.testing.assert_array_equal(back.data, prediction)
    np.testing.assert_allclose(back.meta["display_affine"], volume.meta["display_affine"], atol=1e-4)
    assert back.meta["classes"].names == {1: "liver"}
    np.testing.assert_allclose(back.meta["classes"].colours[1][:3], (0.2, 0.8, 0.3), atol=0.02)

    notes.clear()
    widget.prediction_layer.metadata.pop("napari_fewshot_volume")  # as if the scan had come from no DICOM file
    assert widget.export(str(tmp_path / "other.dcm")) is None and not (tmp_path / "other.dcm").exists()
    assert any(s == "error" and "save the mask as NIfTI" in m for s, m in notes)


def test_names_and_colours_survive_a_nifti_export_and_reopening(ct, tmp_path):
    """Issue 23 item 3: a mask saved as NIfTI opens again with its class names and colours (sidecar)."""
    from napari_fewshot.plugin import layers

    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    support.data = np.where(np.isin(reference, [1, 2]), reference, 0).astype(np.uint8)
    support.colormap = {None: (0, 0, 0, 1), 0: (0, 0, 0, 0), 1: (1.0, 0.5, 0.0, 1.0), 2: (0.1, 0.3, 1.0, 1.0)}
    viewer.layers.selection = {support}
    viewer.layers.save(str(tmp_path / "organs.nii.gz"), selected=True, plugin="napari-fewshot")
    [reopened] = viewer.open(str(tmp_path / "organs.nii.gz"), plugin="napari-fewshot")
    assert reopened._type_string == "labels"
    assert layers.class_names(reopened) == layers.class_names(support)
    np.testing.assert_allclose(reopened.colormap.map(np.array([1, 2]))[:, :3], [(1.0, 0.5, 0.0), (0.1, 0.3, 1.0)])
    np.testing.assert_array_equal(reopened.data, support.data)
