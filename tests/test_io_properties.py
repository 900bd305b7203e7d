"""Property tests of napari_fewshot.io: arbitrary arrays either read cleanly or raise ReadError."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from napari_fewshot.errors import ReadError
from napari_fewshot.io import Volume, read_labels, read_volume, write_mask

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DTYPES = st.sampled_from(
    [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.uint64,
     np.float16, np.float32, np.float64, np.complex64]
)
ANY_ARRAYS = arrays(dtype=DTYPES, shape=array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5))


def _assert_valid(volume: Volume) -> None:
    data = volume.data
    assert data.ndim == 3 or (data.ndim == 4 and data.shape[-1] == 3)
    assert data.size > 0 and data.dtype.kind in "iuf"
    assert len(volume.spacing) == 3 and all(s > 0 for s in volume.spacing)


def _read_or_read_error(path: Path) -> None:
    try:
        volume = read_volume(path)
    except ReadError as exc:
        assert str(path) in str(exc)
        return
    _assert_valid(volume)


@FAST
@given(array=ANY_ARRAYS)
def test_any_npy_reads_or_raises_read_error(array):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.npy"
        np.save(path, array)
        _read_or_read_error(path)


@FAST
@given(array=ANY_ARRAYS)
def test_any_tiff_reads_or_raises_read_error(array):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.tif"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tifffile's own notes on how it will store odd shapes
                tifffile.imwrite(path, array)
        except Exception:  # tifffile itself refuses some arrays (0-size, 0-d): nothing to read then
            assume(False)
        _read_or_read_error(path)


@FAST
@given(
    mask=arrays(np.uint16, array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6), elements=st.integers(0, 600)),
    extension=st.sampled_from([".npy", ".tif", ".nii.gz", ".png"]),
    spacing=st.tuples(*[st.floats(0.25, 8.0)] * 3),
)
def test_masks_round_trip_through_every_format(mask, extension, spacing):
    like = Volume(np.zeros(mask.shape, np.float32), spacing=spacing)
    with tempfile.TemporaryDirectory() as folder:
        written = write_mask(Path(folder) / f"m{extension}", mask, like=like)
        back = np.concatenate([read_labels(path) for path in written])
    np.testing.assert_array_equal(back, mask)


ORIENTATIONS = [a + b + c for a in "RL" for b in "AP" for c in "SI"]
AXIS_ORDERS = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


@FAST
@given(
    codes=st.sampled_from(ORIENTATIONS),
    order=st.sampled_from(AXIS_ORDERS),
    shape=st.tuples(*[st.integers(1, 5)] * 3),
    seed=st.integers(0, 2**16),
)
def test_nifti_mask_goes_back_to_the_file_grid(codes, order, shape, seed):
    labels = np.random.default_rng(seed).integers(0, 5, size=shape).astype(np.uint8)
    axcodes = tuple(codes[i] for i in order)
    xform = ornt_transform(axcodes2ornt(tuple("RAS")), axcodes2ornt(axcodes))
    file_labels = apply_orientation(labels, xform)
    affine = np.diag([1.5, 2.0, 3.0, 1.0]) @ inv_ornt_aff(xform, shape)
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "in.nii.gz", Path(folder) / "out.nii.gz"
        nib.Nifti1Image(file_labels, affine).to_filename(source)
        volume = read_volume(source)
        assert volume.meta["display_affine"][2, 0] > 0  # slices run toward superior
        write_mask(out, read_labels(source, like=volume), like=volume)
        written = nib.load(out)
        np.testing.assert_array_equal(np.asanyarray(written.dataobj), file_labels)
        np.testing.assert_array_equal(written.affine, nib.load(source).affine)
