"""Volumes at a glance (issue 23 item 4): per class its volume in mL (a pixel area without spacing), the
slices it spans and how many were painted / corrected / predicted; the widget shows it after each
segmentation and writes it as STEM_volumes.csv beside an exported mask. Batch's per-class mL comes from
the same function (core.metrics.class_volumes), so the figures agree."""

import csv

import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, LIVER, LIVER_SUPPORT_SLICES, paint_support, use_input_size, wait_idle

from napari_fewshot.core.metrics import class_volumes
from napari_fewshot.core.volumes import CSV_COLUMNS, volume_table
from napari_fewshot.io import read_labels, read_volume
from napari_fewshot.io.volumes_csv import volumes_csv_path, write_volumes_csv
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names


@pytest.fixture(scope="module")
def ct_reference():
    volume = read_volume(CT_IMAGE)
    return volume, read_labels(CT_LABELS, like=volume)


def test_volume_table_of_the_ct_reference(ct_reference, tmp_path):
    volume, labels = ct_reference
    names = ct_class_names()
    support = np.zeros_like(labels)
    for z in LIVER_SUPPORT_SLICES:
        support[z][labels[z] == LIVER] = LIVER
    table = volume_table(labels, sorted(names), volume.spacing, names, support, corrected={90})
    liver = table[0]
    voxels = int((labels == LIVER).sum())
    z = np.flatnonzero((labels == LIVER).any(axis=(1, 2)))
    assert (liver.name, liver.voxels, liver.first_slice, liver.last_slice) == ("liver", voxels, z[0], z[-1])
    assert liver.ml == pytest.approx(voxels * 27 / 1000)  # 3 mm isotropic voxels: 0.027 mL each
    assert liver.ml == class_volumes(labels, [LIVER], volume.spacing)[LIVER][1]  # batch's figure
    assert (liver.painted, liver.corrected, liver.predicted) == (2, 1, len(z) - 3)
    assert all(entry.painted == entry.corrected == 0 for entry in table[1:])
    assert liver.describe().startswith(f"liver: {liver.ml:.1f} mL, slices {z[0]}-{z[-1]} (2 painted, 1 corrected, ")

    path = write_volumes_csv(volumes_csv_path(tmp_path / "ct_mask.nii.gz"), [e.row() for e in table], CSV_COLUMNS)
    assert path == tmp_path / "ct_mask_volumes.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [names[c] for c in sorted(names)]
    assert float(rows[0]["volume_ml"]) == pytest.approx(liver.ml, abs=1e-4) and int(rows[0]["slices"]) == len(z)


def test_every_class_predicted_or_painted_is_reported_counted_slice_by_slice(ct_reference):
    """class_ids=None (the widget's table): every class in the prediction or the paint, absent ones not listed; the
    counts, slice by slice (session 21: a whole-volume count held the GIL and stalled the window), are the volume's."""
    from napari_fewshot.core.volumes import slice_counts

    volume, labels = ct_reference
    support = np.zeros_like(labels)
    support[40, :3, :3] = 9  # a class only painted
    table = volume_table(labels, None, volume.spacing, None, support)
    assert [e.class_id for e in table] == sorted({int(c) for c in np.unique(labels) if c} | {9})
    assert [e.voxels for e in table] == [int((labels == e.class_id).sum()) for e in table]
    painted_only = table[-1]
    assert (painted_only.voxels, painted_only.painted, painted_only.first_slice) == (0, 1, 40)
    counts = slice_counts(labels)
    assert counts.shape == (len(labels), int(labels.max()) + 1)
    assert (counts == np.stack([np.bincount(p.ravel(), minlength=counts.shape[1]) for p in labels])).all()


def test_without_spacing_the_size_is_a_pixel_area():
    labels = np.zeros((2, 10, 12), np.uint8)
    labels[1, 2:5, 3:7] = 2
    [entry] = volume_table(labels, [2], None, {2: "lesion"})
    assert entry.ml is None and entry.voxels == 12 and entry.row()["volume_ml"] == ""
    assert entry.describe("image") == "lesion: 12 px, image 1 (0 painted, 0 corrected, 1 predicted)"


@pytest.mark.gui
def test_widget_shows_volumes_after_segment_and_export_writes_them(ct, qtbot, tmp_path, monkeypatch):
    import threading

    from napari_fewshot.core import volumes

    viewer, widget, reference = ct
    use_input_size(widget, 128)  # a quick job
    assert widget.ui.volumes_label.text() == ""
    counted_on = []
    count = volumes.volume_table

    def counting(*args, **kwargs):
        counted_on.append(threading.current_thread())
        return count(*args, **kwargs)

    monkeypatch.setattr(volumes, "volume_table", counting)
    paint_support(widget, reference)
    widget.segment("all")
    wait_idle(qtbot, widget, timeout_s=180)
    prediction = np.asarray(widget.prediction_layer.data)
    ml = class_volumes(prediction, [LIVER], viewer.layers[CT_IMAGE_NAME].metadata["napari_fewshot_volume"].spacing)
    qtbot.waitUntil(lambda: widget.ui.volumes_label.text().startswith(f"liver: {ml[LIVER][1]:.1f} mL"), timeout=30_000)
    # counted beside the window, never on the Qt thread (1-3 s on 512 x 512 x 100: a frozen window)
    assert counted_on and threading.main_thread() not in counted_on, counted_on
    text = widget.ui.volumes_label.text()
    assert text.startswith(f"liver: {ml[LIVER][1]:.1f} mL, slices ") and "(3 painted, 0 corrected, " in text, text
    written = widget.export(str(tmp_path / "ct_mask.nii.gz"))
    assert written and (tmp_path / "ct_mask_volumes.csv").exists()
    with open(tmp_path / "ct_mask_volumes.csv", newline="") as handle:
        liver = next(r for r in csv.DictReader(handle) if r["class"] == str(LIVER))
    assert float(liver["volume_ml"]) == pytest.approx(ml[LIVER][1], abs=1e-4) and liver["painted_slices"] == "3"


def test_a_csv_of_the_users_is_never_replaced(tmp_path):
    from napari_fewshot.errors import WriteError

    theirs = tmp_path / "ct_mask_volumes.csv"
    theirs.write_text("my notes\n")
    entry = volume_table(np.ones((1, 2, 2), np.uint8), [1], (1.0, 1.0, 1.0))
    with pytest.raises(WriteError, match="not a volume table"):
        write_volumes_csv(theirs, [e.row() for e in entry], CSV_COLUMNS)
    assert theirs.read_text() == "my notes\n"
    ours = write_volumes_csv(tmp_path / "again.csv", [e.row() for e in entry], CSV_COLUMNS)
    assert write_volumes_csv(ours, [e.row() for e in entry], CSV_COLUMNS) == ours  # an earlier export: replaced
