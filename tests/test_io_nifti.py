"""Reading and writing NIfTI with napari_fewshot.io: the real CHAOS and TotalSegmentator scans and
synthetic files in every voxel order land on one display grid; masks and heatmaps go back on the source's grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from napari_fewshot.errors import ReadError
from napari_fewshot.io import Volume, read_labels, read_volume, write_image, write_mask

from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

from shared_data import CHAOS  # noqa: E402

CHAOS_IMAGE = CHAOS / "image_1.nii.gz"  # case 1 is shipped in tests/data/chaos_t2
CHAOS_LABEL = CHAOS / "label_1.nii.gz"
SAMPLE_LIVER = 1  # sample_data/ct_abdomen_organs.json: TotalSegmentator's liver, renumbered


@pytest.fixture(scope="module")
def chaos() -> Volume:
    return read_volume(CHAOS_IMAGE)


def test_chaos_reads_as_slices_first(chaos):
    header = nib.load(CHAOS_IMAGE)
    n_z = header.shape[2]
    assert chaos.data.shape == (n_z, 256, 256)
    assert chaos.spacing == pytest.approx((7.7, 1.25, 1.25), rel=1e-5)
    assert chaos.format == "nifti" and chaos.source == str(CHAOS_IMAGE)
    np.testing.assert_array_equal(chaos.affine, header.affine)


def test_chaos_display_grid_is_radiological(chaos):
    """Columns run toward the patient's left, rows toward posterior, slices toward superior."""
    display_affine = chaos.meta["display_affine"]
    slice_axis, row_axis, col_axis = display_affine[:3, 0], display_affine[:3, 1], display_affine[:3, 2]
    assert col_axis[0] < 0 and row_axis[1] < 0 and slice_axis[2] > 0  # RAS world: -x = left, -y = posterior
    # the file is stored L,A,S: display rows are the file's y axis reversed
    raw = np.asanyarray(nib.load(CHAOS_IMAGE).dataobj)
    np.testing.assert_array_equal(chaos.data, raw[:, ::-1, :].transpose(2, 1, 0))


def test_chaos_label_written_back_keeps_affine_and_voxel_order(chaos, tmp_path):
    labels = read_labels(CHAOS_LABEL, like=chaos)
    assert labels.shape == chaos.data.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4} and labels.max() == 4

    written = write_mask(tmp_path / "label.nii.gz", labels, like=chaos)
    assert written == [tmp_path / "label.nii.gz"]
    original, copy = nib.load(CHAOS_LABEL), nib.load(written[0])
    assert copy.shape == original.shape
    np.testing.assert_array_equal(copy.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), np.asanyarray(original.dataobj).astype(np.uint8))
    assert int(copy.header["qform_code"]) == int(original.header["qform_code"])
    assert int(copy.header["sform_code"]) == int(original.header["sform_code"])
    np.testing.assert_array_equal(read_labels(written[0], like=chaos), labels)


def test_totalseg_ct_and_labels_line_up():
    """The CT sample is TotalSegmentator's example_ct.nii.gz (same voxels and affine), with its organs."""
    ct = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=ct)
    assert ct.data.shape == (112, 101, 122)  # file is (x, y, z) = (122, 101, 112), RAS
    assert ct.spacing == pytest.approx((3.0, 3.0, 3.0))
    liver_hu = ct.data[labels == SAMPLE_LIVER]
    assert liver_hu.size > 0 and 0 < liver_hu.mean() < 150


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "LAS", "PIR", "SLA", "IRP"])
def test_any_voxel_order_reads_onto_the_same_display_grid(tmp_path, axcodes):
    rng = np.random.default_rng(0)
    ras_array = rng.integers(0, 9, size=(5, 6, 7)).astype(np.uint8)  # axes x(R), y(A), z(S)
    ras_affine = np.diag([2.0, 3.0, 4.0, 1.0])
    ras_affine[:3, 3] = (10, -20, 30)
    expected = ras_array[::-1, ::-1, :].transpose(2, 1, 0)  # x -> L, y -> P, then (z, y, x)

    xform = ornt_transform(axcodes2ornt(tuple("RAS")), axcodes2ornt(tuple(axcodes)))
    file_array = apply_orientation(ras_array, xform)
    file_affine = ras_affine @ inv_ornt_aff(xform, ras_array.shape)
    path = tmp_path / f"{axcodes}.nii.gz"
    nib.Nifti1Image(file_array, file_affine).to_filename(path)

    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, expected)
    assert volume.spacing == pytest.approx((4.0, 3.0, 2.0))
    np.testing.assert_allclose(volume.meta["display_affine"] @ [0, 0, 0, 1], ras_affine @ [4, 5, 0, 1])

    out = write_mask(tmp_path / f"{axcodes}_out.nii", volume.data, like=volume)[0]
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), file_array)
    np.testing.assert_allclose(nib.load(out).affine, file_affine)


def test_nifti_4d_single_volume_is_squeezed_and_multi_volume_rejected(tmp_path):
    single = tmp_path / "single.nii.gz"
    nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)).to_filename(single)
    assert read_volume(single).data.shape == (6, 5, 4)
    series = tmp_path / "series.nii.gz"
    nib.Nifti1Image(np.ones((4, 5, 6, 2), np.float32), np.eye(4)).to_filename(series)
    with pytest.raises(ReadError, match="series.nii.gz"):
        read_volume(series)


def test_nifti_with_degenerate_affine_is_a_read_error(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((3, 4, 5))
    header["qform_code"], header["sform_code"] = 0, 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]
    path = tmp_path / "flat_axis.nii"
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.float32), None, header=header), path)
    with pytest.raises(ReadError, match="flat_axis.nii.*zero length"):
        read_volume(path)


def test_nifti_2d_image_reads_as_one_slice(tmp_path):
    path = tmp_path / "flat.nii"
    nib.Nifti1Image(np.arange(12, dtype=np.int16).reshape(3, 4), np.eye(4)).to_filename(path)
    assert read_volume(path).data.shape == (1, 4, 3)


def test_float_image_written_on_nifti_grid(chaos, tmp_path):
    heat = np.linspace(0, 1, chaos.data.size, dtype=np.float32).reshape(chaos.data.shape)
    out = write_image(tmp_path / "heat.nii.gz", heat, like=chaos)[0]
    image = nib.load(out)
    assert image.shape == nib.load(CHAOS_IMAGE).shape and image.get_data_dtype() == np.float32
    np.testing.assert_array_equal(read_volume(out).data, heat)
