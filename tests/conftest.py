"""Shared test setup.

torch is imported before anything Qt: importing it after PyQt6 can crash the process (two OpenMP /
libstdc++ copies), see ../shared/DESIGN.md. GUI tests (marker ``gui``) need a display: run them
under ``xvfb-run -a``; without one they are skipped.
"""

import torch  # noqa: F401  (must stay the first import)

# isort: split
import dataclasses
import os
import time

import numpy as np
import pytest

HAS_DISPLAY = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
CT_IMAGE_NAME = "CT abdomen"
CT_REFERENCE_NAME = "CT abdomen: reference organs"
LIVER = 1
LIVER_SUPPORT_SLICES = (79, 90, 100)  # the liver spans slices 69-111 of the CT sample


def ct_liver_spleen_slices(step: int):
    """The CT sample's slices around liver and spleen, every `step`-th one: (volume (S, H, W), truth (S, H, W) uint8
    with liver 1 and spleen 2, the indices of the slices that show both)."""
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    ct = read_volume(CT_IMAGE)
    reference = read_labels(CT_LABELS, like=ct)
    truth = np.where(np.isin(reference, [1, 2]), reference, 0).astype(np.uint8)
    organ = [z for z in range(len(truth)) if truth[z].any()]
    keep = slice(max(0, organ[0] - step), organ[-1] + step + 1, step)
    volume, truth = ct.data[keep], truth[keep]
    return volume, truth, [z for z in range(len(truth)) if (truth[z] == 1).any() and (truth[z] == 2).any()]


def pytest_collection_modifyitems(config, items):
    if HAS_DISPLAY or os.environ.get("CI"):
        return  # in CI a missing display must fail the GUI tests, never skip them
    skip = pytest.mark.skip(reason="needs a display for napari's OpenGL canvas; run under xvfb-run -a")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def release_closed_napari_windows():
    """Let each test's closed napari windows be freed, with their layers and our dock widget.

    napari 0.9.2's Window._connect_theme connects a lambda to every theme's `canvas` event and _disconnect_theme
    disconnects a new lambda, which never matches, so every window stays reachable from the global themes. Over the
    suite that kept every viewer of every test (and each LiteMedSAM service in their widgets): one pytest process grew
    to ~18 GB. After the test (make_napari_viewer has closed its viewers by then) the lambdas of closed windows go."""
    yield
    import sys

    theme = sys.modules.get("napari.utils.theme")
    if theme is None:
        return
    for each in list(theme._themes.values()):
        emitter = each.events.canvas
        for callback in emitter.callbacks:
            if getattr(callback, "__qualname__", "") == "Window._connect_theme.<locals>.<lambda>":
                window = callback.__closure__[0].cell_contents
                if not hasattr(window, "_qt_window"):  # closed (napari's Window.close deletes it)
                    emitter.disconnect(callback)


@pytest.fixture(autouse=True)
def autosave_dir(tmp_path, monkeypatch):
    """Each test autosaves painting into its own folder (never the user's cache)."""
    folder = tmp_path / "autosave"
    monkeypatch.setenv("NAPARI_FEWSHOT_AUTOSAVE_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def coarse_volumes(request, monkeypatch):
    """LiteMedSAM refines volumes by default on every device (core/config.py RefineParams.enabled_for); on a
    2-core CPU that costs several times a volume's coarse segmentation, so a test keeps volumes coarse unless
    it is marked `refine_default` (or asks for refinement in its params). 2D images keep their default."""
    if request.node.get_closest_marker("refine_default") is None:
        monkeypatch.setattr("napari_fewshot.core.config.REFINE_VOLUMES_BY_DEFAULT", False)


@pytest.fixture
def real_data():
    """Skips without ../shared/data on a developer's machine; fails under CI=true (see shared_data)."""
    from shared_data import DATA, require

    return require(DATA)


@pytest.fixture(scope="session")
def chaos_case():
    """CHAOS-T2 case 1 (shipped in tests/data): (volume (S, H, W) float, labels (S, H, W) int) on one grid."""
    from shared_data import CHAOS

    from napari_fewshot.io import read_labels, read_volume

    volume = read_volume(CHAOS / "image_1.nii.gz")
    return volume.data, read_labels(CHAOS / "label_1.nii.gz", like=volume)


@pytest.fixture(scope="session")
def ct_dicom(tmp_path_factory):
    """A DICOM series written from the CT sample: 20 slices of 101 x 122 HU, 3 mm apart (shared_data.write_ct_dicom)."""
    from shared_data import write_ct_dicom

    return write_ct_dicom(tmp_path_factory.mktemp("dicom") / "ct_series")


@pytest.fixture(scope="session")
def png_set(tmp_path_factory):
    """A BUSI-style folder of 2D PNG images with NAME_mask.png files, made from the shipped scans:
    ``mr/mr (1..8).png`` (CHAOS case 1, sizes differ) and ``ct/ct (1..4).png`` (shared_data.write_png_slice_set)."""
    from shared_data import write_png_slice_set

    return write_png_slice_set(tmp_path_factory.mktemp("png_set"))


@pytest.fixture(scope="session")
def busi_layout(png_set, tmp_path_factory):
    """The PNG slices in BUSI's layout, which `evaluate busi` reads: benign/ (the 8 MR) and malignant/ (the 4 CT)."""
    root = tmp_path_factory.mktemp("busi_layout")
    (root / "benign").symlink_to(png_set / "mr", target_is_directory=True)
    (root / "malignant").symlink_to(png_set / "ct", target_is_directory=True)
    return root


@pytest.fixture
def notes():
    """Messages napari notifications showed during the test: list of (severity name, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(notification):
        seen.append((str(notification.severity).lower(), str(notification.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def ct(make_napari_viewer):
    """A viewer with the CT sample opened through the npe2 sample contribution and the widget docked.

    Returns (viewer, widget, reference labels array).
    """
    viewer = make_napari_viewer()
    viewer.open_sample("napari-fewshot", "ct_abdomen")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    reference = np.asarray(viewer.layers[CT_REFERENCE_NAME].data)
    return viewer, widget, reference


def paint_support(widget, reference, label=LIVER, slices=LIVER_SUPPORT_SLICES):
    """Create the support layer through the widget and paint `label` from the reference on `slices`."""
    support = widget.create_support_layer()
    data = support.data
    for z in slices:
        data[z][reference[z] == label] = label
    support.data = data  # emits the data event like an edit would
    return support


def ct_crop(make_napari_viewer, first: int, stop: int, refine: bool, painted, shown: int):
    """A viewer with slices `first`..`stop - 1` of the CT sample, the widget docked (cpu, 128 px features, LiteMedSAM's
    refinement on or off), the liver painted from the reference on the crop's slices `painted`, slice `shown` in view.
    Returns (viewer, widget, support layer, the crop's reference liver (S, H, W))."""
    from napari_fewshot.core import RefineParams
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    reference = np.where(read_labels(CT_LABELS, like=volume)[first:stop] == LIVER, LIVER, 0).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(volume.data[first:stop], name="CT crop", contrast_limits=(-200, 300))
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    params = widget.params
    widget.params = lambda: dataclasses.replace(params(), input_size=128, refine=RefineParams(enabled=refine))
    support = paint_support(widget, reference, slices=painted)
    viewer.dims.set_current_step(0, shown)
    return viewer, widget, support, reference


def use_input_size(widget, pixels: int) -> None:
    """Feed the widget's encoder `pixels`-px slices from now on (whatever the form says), so a job takes seconds."""
    params = widget.params
    widget.params = lambda: dataclasses.replace(params(), input_size=pixels)


def wait_idle(qtbot, widget, timeout_s: float = 90.0) -> float:
    """Wait until the widget runs no job (chained jobs included); returns the seconds waited."""
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: not widget.busy, timeout=int(timeout_s * 1000))
    return time.perf_counter() - t0


SPLIT_SETTING = {1: "0", 2: "2", 3: "1"}  # core/sam_decoder.SPLIT_ENV's value that converts each decoder graph


def convert_decoder_graphs(model, graphs) -> dict:
    """{graph: LiteMedSAM's mask decoder converted to OpenVINO as that graph (core/sam_decoder.py), compiled in f32}
    for each of `graphs` (1 SingleMaskGraph, 2 SharedImageGraph, 3 WindowGraph), in memory; `model` the LiteMedSAM
    torch module (BoxPrompter().model)."""
    import openvino

    from napari_fewshot.core import sam_decoder

    kept, sam_decoder.PRECISION = sam_decoder.PRECISION, "f32"
    out = {}
    try:
        for graph in graphs:
            os.environ[sam_decoder.SPLIT_ENV] = SPLIT_SETTING[graph]
            out[graph] = sam_decoder._openvino_decoder(openvino, model, None, "test", {})
    finally:
        sam_decoder.PRECISION = kept
        os.environ.pop(sam_decoder.SPLIT_ENV, None)
    assert tuple(out[g].graph for g in graphs) == tuple(graphs)
    return out
