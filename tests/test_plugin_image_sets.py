"""2D images in napari: a folder of images of different sizes opened as one padded set (paint three, segment
the rest, export one NAME_mask.png per image), and a cine loop (multi-frame TIFF) that opens as a stack and
is segmented like a volume. The images are 2D PNG slices written from the shipped CHAOS MR case in BUSI's
layout (conftest.png_set: RGB with the grey repeated, NAME_mask*.png), so the workflow runs on a fresh
clone; accuracy on BUSI itself is test_accuracy's."""

import shutil
import time

import numpy as np
import pytest
import tifffile
from conftest import wait_idle
from PIL import Image

from napari_fewshot.core import dice
from napari_fewshot.io import read_busi_mask, read_volume
from napari_fewshot.plugin import IMAGE_SET_KEY, VOLUME_KEY

pytestmark = pytest.mark.gui

SUPPORT_NAMES = ("mr (1).png", "mr (4).png", "mr (7).png")  # of the 8 MR slices (208-256 px, each its own size)
# Mean liver Dice of the 5 unpainted images, efficientnet-lite0, no fine-tuning, defaults (384 px, LiteMedSAM
# refine for 2D images): measured 0.902 (per image 0.73-0.96).
DICE_FLOOR = 0.8
# Cine loop (8 frames panned over one MR slice, frames 0 and 7 painted): measured 0.981 on the 6 others.
CINE_DICE_FLOOR = 0.9


def _busi_folder(tmp_path, png_set):
    """A BUSI-style folder in tmp_path: the 8 MR slices of conftest.png_set with their NAME_mask*.png files."""
    folder = tmp_path / "ultrasound"
    shutil.copytree(png_set / "mr", folder)
    return png_set / "mr", folder


def _source(images, name):
    return images / name


def test_image_folder_paint_three_segment_the_rest_and_export(make_napari_viewer, qtbot, tmp_path, notes, monkeypatch,
                                                              png_set):
    from napari_fewshot.plugin import exporting

    busi, folder = _busi_folder(tmp_path, png_set)
    viewer = make_napari_viewer()
    started = time.perf_counter()
    viewer.open(str(folder), plugin="napari-fewshot")
    image, reference = viewer.layers["ultrasound"], viewer.layers["ultrasound: reference masks"]
    info = image.metadata[IMAGE_SET_KEY]
    assert len(info) == 8 and info.names[:3] == ["mr (1).png", "mr (2).png", "mr (3).png"]
    sizes = [Image.open(folder / name).size[::-1] for name in info.names]
    assert info.shapes == sizes and len(set(sizes)) == 8  # each image keeps its own size
    assert image.data.shape == (8, max(h for h, _ in sizes), max(w for _, w in sizes)) and not image.rgb
    assert info.channel_mode == "grey"  # the PNGs are RGB with equal channels, as BUSI's are
    assert any(s == "info" and "Opened 8 images" in m and "grey" in m for s, m in notes)
    assert not reference.visible

    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    # Organ slices, not lesions: propose-and-select (the 2D default, measured on BUSI) picks another organ on one
    # of these 8 (test_select_objects.py keeps that as a strict xfail); the panel's box is how a user turns it off.
    widget.ui.settings["refine.select"].value = False
    widget.set_image_layer(image)
    assert widget.support_layer is None  # the reference masks are never offered as the support
    viewer.dims.set_current_step(0, 4)  # the user steps through the set: the overlay names the file
    h, w = info.shapes[4]
    from napari_fewshot.plugin.image_sets import text_overlay

    overlay = text_overlay(viewer)
    assert overlay.visible and overlay.text == f"image: {info.names[4]} - 5 of 8, {w} x {h} px"
    support = widget.create_support_layer()
    assert support.data.shape == image.data.shape[:3]
    data = support.data
    support_index = [info.names.index(n) for n in SUPPORT_NAMES]
    for i in support_index:
        mask = read_busi_mask(_source(busi, info.names[i]))
        np.testing.assert_array_equal(reference.data[i, : mask.shape[0], : mask.shape[1]], mask)
        data[i, : mask.shape[0], : mask.shape[1]][mask] = 1
    smallest = min(support_index, key=lambda i: np.prod(info.shapes[i]))
    data[smallest, -3:, -3:] = 1  # a stroke in the padding is never given to the model
    support.data = data

    widget.ui.heatmap_check.setChecked(True)
    widget.segment("all")
    wait_idle(qtbot, widget, timeout_s=400)  # LiteMedSAM redraws each image's lesion: minutes on a loaded CPU
    prediction, heat = widget.prediction_layer, widget.heatmap_layers[1]
    assert prediction.data.shape == heat.data.shape == image.data.shape[:3]
    for i, (h, w) in enumerate(info.shapes):  # padding stays 0 in the prediction and the heatmap
        assert not prediction.data[i, h:].any() and not prediction.data[i, :, w:].any()
        assert not heat.data[i, h:].any() and not heat.data[i, :, w:].any()

    written = widget.export(str(tmp_path / "masks"))
    seconds = time.perf_counter() - started
    assert [p.name for p in written] == [name[: -len(".png")] + "_mask.png" for name in info.names]
    scores = []
    for i, path in enumerate(written):
        mask = np.asarray(Image.open(path))
        assert mask.shape == info.shapes[i] and set(np.unique(mask)) <= {0, 255}
        truth = read_busi_mask(_source(busi, info.names[i]))
        if i in support_index:
            np.testing.assert_array_equal(mask != 0, truth)  # painted images are exported as painted
        else:
            scores.append(dice(mask != 0, truth))
    print(f"MR slice set: mean Dice {np.mean(scores):.3f} on {len(scores)} unpainted images "
          f"({np.round(scores, 2).tolist()}); open + segment + export {seconds:.1f} s")
    assert np.mean(scores) >= DICE_FLOOR

    heat_files = widget.export_heatmaps(str(tmp_path / "heat"))
    assert len(heat_files) == 8 and heat_files[0].name == "mr (1)_heatmap_class1_lesion.tif"
    assert tifffile.imread(heat_files[5]).shape == info.shapes[5]

    # Export beside the images (the dialog's folder): their own masks are there, so the user is asked.
    before = (folder / "mr (1)_mask.png").read_bytes()
    monkeypatch.setattr(exporting.QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    questions = []

    def refuse(*args, **kwargs):
        questions.append(args[2])
        return exporting.QMessageBox.StandardButton.No

    monkeypatch.setattr(exporting.QMessageBox, "question", staticmethod(refuse))
    assert widget.export() is None
    assert questions and "mr (1)_mask.png" in questions[0] and "7 more files exist. Replace them?" in questions[0]
    assert (folder / "mr (1)_mask.png").read_bytes() == before
    assert widget.export(str(tmp_path / "masks")) is None  # programmatic: refused, nothing replaced
    assert any(s == "error" and "exists" in m for s, m in notes)


def test_cine_loop_tiff_opens_as_a_stack_and_segments_like_a_volume(make_napari_viewer, qtbot, tmp_path, png_set):
    frame = read_volume(png_set / "mr" / "mr (5).png").data[0]  # 224 x 232 px
    truth = read_busi_mask(png_set / "mr" / "mr (5).png")
    height, width, n_frames = 192, 192, 8  # the probe pans 4 px down and 5 px right per frame
    frames = np.stack([frame[4 * t: 4 * t + height, 5 * t: 5 * t + width] for t in range(n_frames)])
    masks = np.stack([truth[4 * t: 4 * t + height, 5 * t: 5 * t + width] for t in range(n_frames)])
    path = tmp_path / "cine.tif"
    tifffile.imwrite(path, frames, photometric="minisblack")

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-fewshot")
    assert layer.data.shape == (n_frames, height, width) and IMAGE_SET_KEY not in layer.metadata
    assert layer.metadata[VOLUME_KEY].format == "tiff"
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    support = widget.create_support_layer()
    data = support.data
    data[[0, n_frames - 1]] = masks[[0, n_frames - 1]]
    support.data = data
    widget.segment("all")
    wait_idle(qtbot, widget)
    prediction = widget.prediction_layer.data
    score = dice(prediction[1:-1] == 1, masks[1:-1])
    print(f"cine loop: Dice {score:.3f} on {n_frames - 2} unpainted frames")
    assert score >= CINE_DICE_FLOOR
    written = widget.export(str(tmp_path / "cine_mask.tif"))
    assert [p.name for p in written] == ["cine_mask.tif", "cine_mask.labels.json"]  # the mask, its class names
    np.testing.assert_array_equal(tifffile.imread(written[0]), prediction)


def test_fine_tune_live_and_banks_on_a_small_set(make_napari_viewer, qtbot, tmp_path, notes):
    """The rest of the volume flow on a set of 4 synthetic images of different sizes (one is colour)."""
    folder = tmp_path / "set"
    folder.mkdir()
    for n, (h, w) in enumerate([(60, 90), (80, 64), (72, 72), (50, 100)]):
        plane = np.full((h, w, 3), 30, np.uint8)
        plane[h // 4: h // 2, w // 4: w // 2] = 220  # a bright square lesion
        if n == 3:
            plane[:8, :8] = (200, 0, 0)  # a Doppler-coloured corner: the set becomes RGB
        Image.fromarray(plane).save(folder / f"us{n}.png")
    viewer = make_napari_viewer()
    [image] = viewer.open(str(folder), plugin="napari-fewshot")
    info = image.metadata[IMAGE_SET_KEY]
    assert image.rgb and image.data.shape == (4, 80, 100, 3) and info.colour_images == ["us3.png"]
    assert any("1 of 4 images have colour" in m for _, m in notes)
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    support = widget.create_support_layer()
    assert support.data.shape == (4, 80, 100)
    data = support.data
    for i in (0, 1):
        h, w = info.shapes[i]
        data[i, h // 4: h // 2, w // 4: w // 2] = 1
    support.data = data

    losses = []
    widget.fine_tune(steps=1, learning_rate=1e-4).returned.connect(losses.append)
    wait_idle(qtbot, widget, 120)
    assert len(losses) == 1 and np.isfinite(losses[0]).all() and widget.session.segmenter.is_fine_tuned
    widget.reset_weights()
    wait_idle(qtbot, widget)

    viewer.dims.set_current_step(0, 2)
    widget.ui.live_check.setChecked(True)  # a stroke re-segments the visible image only
    support.data_setitem((np.array([1]), np.array([70]), np.array([60])), 1)
    qtbot.waitUntil(lambda: widget.prediction_layer is not None and widget.prediction_layer.data[2].any(),
                    timeout=30_000)
    wait_idle(qtbot, widget)
    widget.ui.live_check.setChecked(False)
    assert not widget.prediction_layer.data[3].any()
    h, w = info.shapes[2]
    assert (widget.prediction_layer.data[2, h // 4 + 2: h // 2 - 2, w // 4 + 2: w // 2 - 2] == 1).mean() > 0.8

    bank = tmp_path / "lesion.fewshot"
    widget.save_prototypes(str(bank))
    wait_idle(qtbot, widget)
    assert bank.exists()
    viewer.layers.remove(widget.prediction_layer)
    viewer.layers.remove(support)
    widget.load_prototypes(str(bank))
    wait_idle(qtbot, widget)
    prediction = widget.prediction_layer.data
    h, w = info.shapes[3]
    assert (prediction[3, h // 4 + 2: h // 2 - 2, w // 4 + 2: w // 2 - 2] == 1).mean() > 0.8
    assert not prediction[3, h:].any() and not prediction[:, 80:].any()


def test_busi_root_opens_one_set_per_subfolder(tmp_path, notes, png_set):
    """Opening a top folder in BUSI's layout (subfolders of images, none directly in it) gives one set each."""
    from napari_fewshot.plugin.readers import get_reader

    root = tmp_path / "busi"
    for subset in ("ct", "mr"):
        (root / subset).mkdir(parents=True)
        for n in (1, 2):
            for path in (png_set / subset).glob(f"{subset} ({n})*.png"):
                shutil.copy(path, root / subset / path.name)
    (root / "notes").mkdir()  # a subfolder without images is not a set
    reader = get_reader(str(root))
    assert reader is not None
    layers = reader(str(root))
    images = [(data, meta) for data, meta, kind in layers if kind == "image"]
    assert [meta["name"] for _, meta in images] == ["ct", "mr"]
    assert all(len(meta["metadata"][IMAGE_SET_KEY]) == 2 for _, meta in images)
    assert sum(kind == "labels" for *_, kind in layers) == 2  # each set's reference masks
    assert sum("Opened 2 images" in m for _, m in notes) == 2
    assert get_reader(str(root / "notes")) is None
