"""Image sets without a viewer: padding/cropping, reading a folder, channel modes, per-image mask export,
the npe2 reader's choice between a DICOM series and an image set, and the core on a mixed set."""

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fewshot.errors import ReadError, WriteError
from napari_fewshot.io.image_sets import (
    ImageSetInfo,
    crop_planes,
    existing_mask_targets,
    heatmap_targets,
    mask_file_names,
    pad_planes,
    read_image_set,
    write_image_set_heatmaps,
    write_image_set_masks,
)


def _planes(rgb=False):
    rng = np.random.default_rng(0)
    shapes = [(20, 30), (35, 12), (8, 40)]
    return [rng.integers(1, 255, (*s, 3) if rgb else s, dtype=np.uint8) for s in shapes]


@pytest.mark.parametrize("rgb", [False, True])
def test_pad_and_crop_round_trip_with_zero_padding(rgb):
    planes = _planes(rgb)
    stack = pad_planes(planes)
    assert stack.shape == ((3, 35, 40, 3) if rgb else (3, 35, 40)) and stack.dtype == np.uint8
    back = crop_planes(stack, [p.shape[:2] for p in planes])
    for plane, cropped in zip(planes, back):
        np.testing.assert_array_equal(cropped, plane)
    for i, (h, w) in enumerate(p.shape[:2] for p in planes):  # everything outside each plane is padding = 0
        assert not stack[i, h:].any() and not stack[i, :, w:].any()
    assert np.shares_memory(back[0], stack)  # crops are views: no copy of a big set
    with pytest.raises(ValueError, match="padded size"):
        crop_planes(stack[:, :30], [p.shape[:2] for p in planes])
    with pytest.raises(ValueError, match="all be grey or all be colour"):
        pad_planes([planes[0], np.zeros((5, 5), np.uint8) if rgb else np.zeros((5, 5, 3), np.uint8)])


def _png(path, array):
    Image.fromarray(array).save(path)


def test_read_folder_skips_masks_and_junk_and_says_why(tmp_path):
    grey = np.full((30, 40), 90, np.uint8)
    grey[10:20, 10:20] = 200
    _png(tmp_path / "scan (10).png", np.repeat(grey[..., None], 3, axis=-1))  # RGB with equal channels
    _png(tmp_path / "scan (2).png", grey[:25, :33])
    mask = np.zeros((30, 40), np.uint8)
    mask[10:20, 10:20] = 255
    _png(tmp_path / "scan (10)_mask.png", mask)
    _png(tmp_path / "scan (10)_mask_1.png", np.pad(mask[:, :35], ((0, 0), (5, 0))))  # a second lesion: OR-merged
    tifffile.imwrite(tmp_path / "third.tif", grey[:, :20])
    tifffile.imwrite(tmp_path / "cine.tif", np.stack([grey] * 4), photometric="minisblack")  # a cine loop
    _png(tmp_path / "icon.png", grey[:1, :1])  # a 1 x 1 icon would stop Segment for the whole set
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.txt").write_text("not an image")

    image_set = read_image_set(tmp_path)
    info = image_set.info
    assert info.names == ["scan (2).png", "scan (10).png", "third.tif"]  # natural order, masks not images
    assert info.shapes == [(25, 33), (30, 40), (30, 20)] and info.padded_shape == (30, 40)
    assert info.channel_mode == "grey" and all(p.ndim == 2 for p in image_set.planes)
    assert "grey" in info.channel_note()
    assert image_set.masks[0] is None and image_set.masks[2] is None
    assert image_set.masks[1].sum() == 100 + 50  # the union of both mask files
    assert len(image_set.skipped) == 3
    assert any("icon.png" in s and "1 x 1 pixels" in s for s in image_set.skipped)
    assert any("broken.png" in s and "not a readable PNG" in s for s in image_set.skipped)
    assert any("cine.tif" in s and "4 frames" in s for s in image_set.skipped)
    padded = image_set.padded_masks()
    assert padded.shape == (3, 30, 40) and padded[1].sum() == 150 and not padded[0].any()


def test_colour_doppler_makes_the_set_rgb_without_changing_grey_images(tmp_path):
    grey = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) % 251
    doppler = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    doppler[5:10, 5:10] = (255, 0, 0)
    _png(tmp_path / "a.png", grey.astype(np.uint8))
    _png(tmp_path / "b.png", doppler)
    info = read_image_set(tmp_path).info
    planes = read_image_set(tmp_path).planes
    assert info.channel_mode == "rgb" and info.colour_images == ["b.png"]
    assert "1 of 2 images have colour" in info.channel_note()
    assert planes[0].shape == (24, 32, 3) and all(np.array_equal(planes[0][..., c], grey) for c in range(3))


def test_empty_or_unreadable_folders_fail_in_one_sentence(tmp_path):
    with pytest.raises(ReadError, match="holds no PNG, JPEG or TIFF images"):
        read_image_set(tmp_path)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ReadError, match=r"Cannot read '.*x\.png'"):
        read_image_set(tmp_path)


def test_mask_names_follow_busi_and_never_collide():
    assert mask_file_names(["benign (1).png", "scan.JPG", "b.tif"]) == [
        "benign (1)_mask.png", "scan_mask.png", "b_mask.png"]
    assert mask_file_names(["a.png", "a.jpg"]) == ["a_png_mask.png", "a_jpg_mask.png"]
    targets = heatmap_targets("/out", ["a.png", "b.png"], {1: "lesion", 2: ""})
    assert [t.name for t in targets] == ["a_heatmap_class1_lesion.tif", "b_heatmap_class1_lesion.tif",
                                         "a_heatmap_class2.tif", "b_heatmap_class2.tif"]


def test_mask_export_one_file_per_image_at_its_size_never_overwriting(tmp_path):
    names = ["benign (1).png", "b.jpg"]
    one_class = [np.zeros((20, 30), np.uint8), np.zeros((35, 12), np.uint8)]
    one_class[0][5:10, 5:10] = 1
    written = write_image_set_masks(tmp_path, one_class, names)
    assert [p.name for p in written] == ["benign (1)_mask.png", "b_mask.png"]
    back = [np.asarray(Image.open(p)) for p in written]
    assert [b.shape for b in back] == [(20, 30), (35, 12)]
    assert set(np.unique(back[0])) == {0, 255} and (back[0] == 255).sum() == 25 and not back[1].any()

    before = written[0].read_bytes()
    with pytest.raises(WriteError, match="exists"):
        write_image_set_masks(tmp_path, one_class, names)
    assert written[0].read_bytes() == before
    assert existing_mask_targets(tmp_path, names) == written
    two_classes = [m.copy() for m in one_class]
    two_classes[1][:3] = 2
    write_image_set_masks(tmp_path, two_classes, names, overwrite=True)
    assert set(np.unique(np.asarray(Image.open(written[0])))) == {0, 1}  # several classes: the label values
    assert set(np.unique(np.asarray(Image.open(written[1])))) == {0, 2}

    heat = {1: [np.full((20, 30), 0.5, np.float32), np.zeros((35, 12), np.float32)]}
    paths = write_image_set_heatmaps(tmp_path / "heat", heat, names, {1: "lesion"})
    assert [p.name for p in paths] == ["benign (1)_heatmap_class1_lesion.tif", "b_heatmap_class1_lesion.tif"]
    assert tifffile.imread(paths[0]).shape == (20, 30) and tifffile.imread(paths[0]).dtype == np.float32


def test_info_checks_its_lengths():
    with pytest.raises(ValueError):
        ImageSetInfo("f", ["a.png"], [(3, 4), (5, 6)])


def test_reader_opens_an_image_folder_as_one_set_and_a_dicom_folder_as_a_series(tmp_path, ct_dicom):
    from napari_fewshot.plugin import IMAGE_SET_KEY, ROLE_KEY
    from napari_fewshot.plugin.readers import get_reader

    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png", np.full((20, 30), 7, np.uint8))
    _png(images / "b.png", np.full((25, 10), 9, np.uint8))
    _png(images / "a_mask.png", np.full((20, 30), 255, np.uint8))
    empty = tmp_path / "empty"
    (empty / "nothing").mkdir(parents=True)
    assert get_reader(str(empty)) is None  # no image inside, nor in a subfolder
    layers = get_reader(str(images))(str(images))
    [(data, kwargs, kind), (masks, mask_kwargs, mask_kind)] = layers
    assert kind == "image" and data.shape == (2, 25, 30) and kwargs["rgb"] is False
    assert kwargs["metadata"][IMAGE_SET_KEY].names == ["a.png", "b.png"]
    assert mask_kind == "labels" and masks.shape == data.shape and masks[0, :20, :30].all() and not masks[1].any()
    assert mask_kwargs["metadata"][ROLE_KEY] == "reference" and mask_kwargs["visible"] is False

    dicom = ct_dicom
    mixed = tmp_path / "dicom"
    mixed.mkdir()
    for path in sorted(dicom.iterdir())[:3]:
        shutil.copy(path, mixed / path.name)
    _png(mixed / "screenshot.png", np.zeros((20, 20), np.uint8))
    [(data, kwargs, kind)] = get_reader(str(mixed))(str(mixed))
    assert kind == "image" and data.shape == (3, 101, 122)  # still a DICOM series
    assert IMAGE_SET_KEY not in kwargs["metadata"]


def test_core_segments_a_mixed_grey_and_colour_set_as_independent_images():
    from napari_fewshot.core.stack import ImageStack

    grey = np.full((20, 30), 100, np.uint8)
    colour = np.zeros((25, 12, 3), np.uint8)
    colour[..., 0] = 200
    stack = ImageStack([grey, colour])
    assert stack.is_rgb and not stack.is_volume
    assert stack.raw(0).shape == (20, 30, 3) and np.array_equal(stack.raw(0)[..., 2], grey)
    assert stack.shape_of(1) == (25, 12)


def test_reader_tells_the_channel_mode(tmp_path, notes):
    from napari_fewshot.plugin.readers import get_reader

    grey = np.full((20, 30), 60, np.uint8)
    doppler = np.repeat(grey[..., None], 3, axis=-1)
    doppler[2:6, 2:6] = (250, 30, 30)
    _png(tmp_path / "grey.png", grey)
    _png(tmp_path / "doppler.png", doppler)
    [(data, kwargs, _)] = get_reader(str(tmp_path))(str(tmp_path))
    assert data.shape == (2, 20, 30, 3) and kwargs["rgb"] is True
    assert any(s == "info" and "1 of 2 images have colour" in m and "'doppler.png'" in m for s, m in notes)
