"""Writing masks and images with napari_fewshot.io: round trips in every format, overwrite rules, atomic
and umask-respecting writes, and the checks made before any compute."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fewshot.errors import WriteError
from napari_fewshot.io import Volume, read_labels, read_volume, write_image, write_mask
from napari_fewshot.io.targets import check_target
from napari_fewshot.io.writers import mask_targets


def _mask(shape=(3, 6, 7), high=4, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high + 1, size=shape)


@pytest.mark.parametrize("name", ["m.tif", "m.tiff", "m.npy", "m.nii", "m.nii.gz"])
def test_mask_round_trips(tmp_path, name):
    mask = _mask()
    like = Volume(np.zeros(mask.shape, np.float32), spacing=(2.5, 0.5, 0.75))
    written = write_mask(tmp_path / name, mask, like=like)
    assert written == [tmp_path / name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp files left behind
    back = read_labels(written[0], like=like)
    np.testing.assert_array_equal(back, mask)
    assert back.dtype == np.uint8
    if not name.endswith(".npy"):
        assert read_volume(written[0]).spacing == pytest.approx(like.spacing, rel=1e-5)


def test_tiff_mask_is_one_multipage_stack_uint16_when_needed(tmp_path):
    mask = _mask(high=1000)
    write_mask(tmp_path / "big.tif", mask)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert len(tif.pages) == 3 and tif.pages[0].dtype == np.uint16
    np.testing.assert_array_equal(read_labels(tmp_path / "big.tif"), mask)


def test_png_single_slice_writes_that_file(tmp_path):
    mask = _mask(shape=(1, 6, 7))
    assert write_mask(tmp_path / "one.png", mask) == [tmp_path / "one.png"]
    np.testing.assert_array_equal(read_labels(tmp_path / "one.png"), mask)


def test_png_stack_writes_one_numbered_file_per_slice_in_its_own_folder(tmp_path):
    mask = _mask(shape=(3, 6, 7), high=700)
    written = write_mask(tmp_path / "seg.png", mask)
    assert written == [tmp_path / "seg" / f"seg_{i:04d}.png" for i in range(3)]
    assert written == mask_targets(tmp_path / "seg.png", 3)
    assert not (tmp_path / "seg.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # no staging folder left behind
    for index, path in enumerate(written):
        assert Image.open(path).mode.startswith("I")  # 16-bit PNG for labels > 255
        np.testing.assert_array_equal(read_labels(path)[0], mask[index])


def test_existing_target_needs_overwrite(tmp_path):
    target = tmp_path / "m.tif"
    write_mask(target, _mask(seed=1))
    with pytest.raises(WriteError, match="exists.*overwrite=True"):
        write_mask(target, _mask(seed=2))
    np.testing.assert_array_equal(read_labels(target), _mask(seed=1))
    write_mask(target, _mask(seed=2), overwrite=True)
    np.testing.assert_array_equal(read_labels(target), _mask(seed=2))


def test_existing_png_stack_is_never_replaced_without_overwrite(tmp_path):
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "seg_0001.png").write_bytes(b"keep me")
    with pytest.raises(WriteError, match="seg"):
        check_target(tmp_path / "seg.png", 3)
    with pytest.raises(WriteError, match="seg"):
        write_mask(tmp_path / "seg.png", _mask())
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["seg_0001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]
    written = write_mask(tmp_path / "seg.png", _mask(), overwrite=True)  # replaced as a whole set
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [p.name for p in written]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


def test_png_stack_killed_mid_write_leaves_no_partial_stack(tmp_path, monkeypatch):
    """A crash after some slices (simulated: the third PNG fails) leaves nothing under the stack's name."""
    real_save = Image.Image.save
    saved = []

    def save(self, fp, *args, **kwargs):
        saved.append(fp)
        if len(saved) == 3:
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(WriteError, match="No space left"):
        write_mask(tmp_path / "seg.png", _mask(shape=(5, 6, 7)))
    assert list(tmp_path.iterdir()) == []  # no seg/, no seg_0000.png, no staging folder


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_masks_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for name in ("m.nii.gz", "m.tif", "m.npy", "one.png"):
            [path] = write_mask(tmp_path / name, _mask(shape=(1, 6, 7)))
            assert stat.S_IMODE(path.stat().st_mode) == mode, name
        stack = write_mask(tmp_path / "set.png", _mask(shape=(2, 6, 7)))
        assert {stat.S_IMODE(p.stat().st_mode) for p in stack} == {mode}
        assert stat.S_IMODE(stack[0].parent.stat().st_mode) == 0o777 & ~umask
    finally:
        os.umask(old)


def test_never_overwrite_is_an_exclusive_create(tmp_path, monkeypatch):
    """Two writers to one name: the one that loses the race (the file appears after the check) fails and
    the first writer's file stays; before, the second silently replaced it."""
    import napari_fewshot.io.writers as writers

    target = tmp_path / "m.npy"
    check = writers._check_targets

    def check_then_lose_the_race(targets, overwrite):
        check(targets, overwrite)
        np.save(target, np.full((2, 3, 4), 7, np.uint8))  # the other writer, between check and write

    monkeypatch.setattr(writers, "_check_targets", check_then_lose_the_race)
    with pytest.raises(WriteError, match="exists"):
        write_mask(target, _mask())
    assert (np.load(target) == 7).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npy"]  # no temporary file left


def test_mask_targets_are_checked_before_any_compute(tmp_path):
    check_target(tmp_path / "new" / "m.nii.gz")  # fine: a missing folder will be created
    assert not (tmp_path / "new").exists()  # ... but not by the check
    with pytest.raises(WriteError, match="extensions"):
        check_target(tmp_path / "m.jpg")
    (tmp_path / "m.nii.gz").mkdir()
    with pytest.raises(WriteError, match="folder of that name"):
        check_target(tmp_path / "m.nii.gz", overwrite=True)
    (tmp_path / "m.tif").write_bytes(b"x")
    with pytest.raises(WriteError, match="exists"):
        check_target(tmp_path / "m.tif")
    check_target(tmp_path / "m.tif", overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError, match="is a file"):
        check_target(tmp_path / "afile" / "sub" / "m.tif")


def test_unwritable_folder_is_a_write_error(tmp_path):
    blocker = tmp_path / "afile.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(WriteError, match="afile.txt"):
        write_mask(blocker / "x.tif", _mask())
    with pytest.raises(WriteError):
        write_image(blocker / "sub" / "x.npy", np.zeros((2, 3, 4)))


def test_missing_folders_are_created(tmp_path):
    target = tmp_path / "new" / "deeper" / "m.npy"
    assert write_mask(target, _mask()) == [target] and target.is_file()


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.full((2, 3, 4), -1), "negative"),
        (np.full((2, 3, 4), 0.5), "non-integer"),
        (np.zeros((2, 2, 3, 4)), "shape"),
        (np.zeros((0, 3, 4)), "shape"),
    ],
)
def test_invalid_masks_are_write_errors(tmp_path, mask, message):
    with pytest.raises(WriteError, match=message):
        write_mask(tmp_path / "m.npy", mask)


def test_mask_must_match_like_and_extension_must_be_known(tmp_path):
    like = Volume(np.zeros((2, 3, 4)))
    with pytest.raises(WriteError, match=r"\(2, 3, 5\).*\(2, 3, 4\)"):
        write_mask(tmp_path / "m.npy", np.zeros((2, 3, 5), np.uint8), like=like)
    with pytest.raises(WriteError, match="extensions"):
        write_mask(tmp_path / "m.jpg", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(WriteError, match="extensions"):
        write_image(tmp_path / "h.png", np.zeros((2, 3, 4)))


def test_bool_and_2d_masks_are_accepted(tmp_path):
    mask = np.eye(4, dtype=bool)
    write_mask(tmp_path / "b.npy", mask)
    np.testing.assert_array_equal(read_labels(tmp_path / "b.npy"), mask[np.newaxis].astype(np.uint8))


@pytest.mark.parametrize("name", ["h.tif", "h.npy", "h.nii.gz"])
def test_float_image_round_trips_as_float32(tmp_path, name):
    heat = np.random.default_rng(3).random((2, 5, 6))
    heat[0, 0, 0] = np.nan
    write_image(tmp_path / name, heat, like=Volume(np.zeros((2, 5, 6)), spacing=(3.0, 1.5, 1.5)))
    back = read_volume(tmp_path / name)
    assert back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, heat.astype(np.float32))
