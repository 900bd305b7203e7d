"""Reading TIFF, PNG and NPY with napari_fewshot.io (layouts, spacing, colour modes) and BUSI-like
folders (masks OR-merged, natural order)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fewshot.errors import ReadError
from napari_fewshot.io import list_images, read_busi_mask, read_volume


# ---------------------------------------------------------------- TIFF / PNG / NPY readers


def test_tiff_layouts(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.arange(20, dtype=np.uint8).reshape(4, 5))
    assert read_volume(tmp_path / "flat.tif").data.shape == (1, 4, 5)

    colour = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb")
    np.testing.assert_array_equal(read_volume(tmp_path / "rgb.tif").data, colour[np.newaxis])

    grey = np.repeat(np.arange(20, dtype=np.uint8).reshape(4, 5, 1), 4, axis=-1)
    tifffile.imwrite(tmp_path / "rgba.tif", grey, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_volume(tmp_path / "rgba.tif").data, grey[np.newaxis, ..., 0])

    tifffile.imwrite(tmp_path / "hyper.tif", np.zeros((2, 3, 4, 5), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(ReadError, match="hyper.tif"):
        read_volume(tmp_path / "hyper.tif")


def test_tiff_imagej_spacing_in_microns_becomes_mm(tmp_path):
    tifffile.imwrite(
        tmp_path / "um.tif",
        np.zeros((3, 4, 5), np.uint16),
        imagej=True,
        resolution=(1 / 500, 1 / 250),  # pixels per micron
        metadata={"spacing": 2000, "unit": "micron", "axes": "ZYX"},
    )
    assert read_volume(tmp_path / "um.tif").spacing == pytest.approx((2.0, 0.25, 0.5))


def test_png_modes(tmp_path):
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "rgba.png").data, grey[np.newaxis])

    colour = np.dstack([grey, grey[::-1], grey])
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.png")
    volume = read_volume(tmp_path / "colour.png")
    assert volume.is_rgb and volume.data.shape == (1, 5, 6, 3)

    Image.fromarray(grey > 10).convert("1").save(tmp_path / "bits.png")
    bits = read_volume(tmp_path / "bits.png").data
    assert bits.dtype == np.uint8 and set(np.unique(bits)) == {0, 1}

    deep = (np.arange(30, dtype=np.uint16).reshape(5, 6) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "deep.png").data, deep[np.newaxis])

    Image.fromarray(grey).save(tmp_path / "photo.jpg", quality=95)
    assert read_volume(tmp_path / "photo.jpg").format == "jpg"


def test_npy_layouts(tmp_path):
    np.save(tmp_path / "plane.npy", np.zeros((4, 5)))
    assert read_volume(tmp_path / "plane.npy").data.shape == (1, 4, 5)
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).random((1, 8, 9, 3)))
    assert read_volume(tmp_path / "rgb.npy").data.shape == (1, 8, 9, 3)
    np.save(tmp_path / "thin.npy", np.zeros((8, 9, 3)))  # 3D is always (S, H, W), never one RGB image
    assert read_volume(tmp_path / "thin.npy").data.shape == (8, 9, 3)
    np.save(tmp_path / "stack.npy", np.zeros((3, 8, 9), bool))
    volume = read_volume(tmp_path / "stack.npy")
    assert volume.data.shape == (3, 8, 9) and volume.data.dtype == np.uint8


# ---------------------------------------------------------------- BUSI and folders


def test_busi_image_reads_as_grey(png_set):
    """BUSI stores its grey images as RGB with the grey repeated; they read as one grey channel."""
    path = png_set / "mr" / "mr (4).png"
    assert Image.open(path).mode == "RGB"
    volume = read_volume(path)
    width, height = Image.open(path).size
    assert volume.data.shape == (1, height, width) and volume.data.dtype == np.uint8
    np.testing.assert_array_equal(volume.data[0], np.asarray(Image.open(path))[..., 0])
    assert volume.format == "png" and volume.affine is None


def test_busi_masks_are_or_merged(png_set):
    image = png_set / "mr" / "mr (3).png"  # its mask is split over _mask and _mask_1 (shared_data)
    first = np.asarray(Image.open(png_set / "mr" / "mr (3)_mask.png").convert("L")) > 0
    second = np.asarray(Image.open(png_set / "mr" / "mr (3)_mask_1.png").convert("L")) > 0
    merged = read_busi_mask(image)
    assert merged.dtype == bool and merged.shape == first.shape
    assert first.any() and second.any() and (second & ~first).any()
    np.testing.assert_array_equal(merged, first | second)


def test_busi_image_without_mask_is_a_read_error(png_set, tmp_path):
    shutil.copy(png_set / "mr" / "mr (4).png", tmp_path / "lonely.png")
    with pytest.raises(ReadError, match="lonely.png"):
        read_busi_mask(tmp_path / "lonely.png")


def test_list_images_on_busi_is_natural_and_skips_masks(png_set, tmp_path):
    folder = shutil.copytree(png_set / "mr", tmp_path / "mr")
    for path in folder.glob("mr (8)*"):  # image 8 becomes image 10: natural order puts it after 2
        path.rename(folder / path.name.replace("(8)", "(10)"))
    names = [p.name for p in list_images(folder)]
    assert len(names) == 8 and not any("_mask" in name for name in names)
    assert names.index("mr (2).png") < names.index("mr (10).png")
    assert names == [f"mr ({n}).png" for n in (1, 2, 3, 4, 5, 6, 7, 10)]


def test_list_images_filters_extensions(tmp_path):
    for name in ["b (10).PNG", "b (2).jpg", "b (2)_mask.png", "notes.txt", "c.tiff", "a (1).tif"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a (1).tif", "b (2).jpg", "b (10).PNG", "c.tiff"]
    with pytest.raises(ReadError):
        list_images(tmp_path / "missing")
