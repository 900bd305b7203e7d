"""The widget's Export buttons: save dialog, "replace?" question, write, notify.

Writing itself is :mod:`.writers` (format from the extension; NIfTI on the source grid), with the
layer's class names and colours (inside a DICOM SEG, else in ``STEM.labels.json`` beside the mask). A path
given programmatically never replaces files unless ``overwrite=True``; from the dialog the user
is asked first. For an image set (a folder of 2D images shown padded) the path is a folder: one
``NAME_mask.png`` per image at its own size, heatmaps one float TIFF per image and class
(:mod:`napari_fewshot.io.image_sets`); padding is never written.

The save dialog opens in the user's folder (the last one exported to, else the scan's unless the scan ships
with the package, else home: :func:`suggested_folder`) with a name suggested (``SCAN_mask.nii.gz``, in the
source's format where it can be written: DICOM and PNG/JPEG scans get NIfTI / PNG; see
:func:`napari_fewshot.io.naming.suggested_output`; a DICOM scan may also be saved as DICOM SEG ``.dcm``), its
filters are :func:`napari_fewshot.io.formats.qt_filter`,
and a name typed without an extension gets the selected filter's (Qt adds none when the native dialog is
not used).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget

from ..errors import FewShotError
from ..io.formats import qt_filter
from ..io.naming import suggested_output
from ..io.targets import check_target
from ..sample_data import HERE as SAMPLE_DATA_FOLDER
from . import IMAGE_SET_KEY, VOLUME_KEY, layers, writers

# What ships with the installed package: the package and its sample data (a folder of its own in a source checkout).
SHIPPED_FOLDERS = (Path(__file__).resolve().parents[1], SAMPLE_DATA_FOLDER)
LAST_FOLDER_ATTRIBUTE = "last_export_folder"  # on the widget: the folder of its last export


def export_prediction(parent: QWidget, layer, path: str | None, overwrite: bool) -> list[Path] | None:
    """Write the prediction Labels ``layer``; None (after telling the user why) when nothing was written."""
    if layer is None:
        show_warning("There is no prediction to export yet; press Segment first.")
        return None
    info = layer.metadata.get(IMAGE_SET_KEY)
    if info is not None:
        return export_set_masks(parent, info, layer.data, path, overwrite)
    volume = layer.metadata.get(VOLUME_KEY)
    filters = qt_filter("mask", getattr(volume, "format", None))
    shape = np.shape(layer.data)
    classes = writers.layer_classes(np.asarray(layer.data), layers.class_names(layer), layer.colormap)

    def check(p: str, replace: bool) -> None:
        check_target(p, shape[0] if len(shape) == 3 else 1, overwrite=replace, inputs=_sources(volume),
                     max_label=int(np.max(layer.data)), classes=bool(classes),
                     scan=writers.matching_volume(volume, shape))

    return _export(parent, "Export mask", filters, path, overwrite,
                   lambda p: writers.existing_targets(p, layer.data.shape),
                   lambda p, replace: save_mask(p, layer, volume, classes, replace),
                   choose=_save_dialog(filters, suggested_path(volume, "mask", parent)), check=check)


def save_mask(path: str, layer, volume, classes, overwrite: bool) -> list[Path]:
    """The one place the widget writes a mask: the Labels ``layer``'s data at ``path`` with its class names and
    colours (``classes``, a ClassTable or None), on ``volume``'s grid; returns the paths written. (What else an
    export writes beside a mask goes here.)"""
    return writers.export_mask(path, layer.data, volume, overwrite=overwrite, classes=classes)


def export_heatmaps(parent: QWidget, heatmaps: dict, names: dict[int, str], volume, path: str | None,
                    overwrite: bool) -> list[Path] | None:
    """Write each heatmap layer to ``STEM_classK_name.EXT`` beside ``path`` (see writers.heatmap_paths)."""
    if not heatmaps:
        show_warning("There are no heatmaps to export; tick Heatmaps and press Segment first.")
        return None
    classes = {c: names.get(c, "") for c in heatmaps}
    info = next(iter(heatmaps.values())).metadata.get(IMAGE_SET_KEY)
    if info is not None:
        return export_set_heatmaps(parent, info, layers.heatmap_arrays(heatmaps), classes, path, overwrite)
    filters = qt_filter("heatmap", getattr(volume, "format", None))

    def check(p: str, replace: bool) -> None:
        for target in writers.heatmap_paths(p, sorted(classes), classes).values():
            check_target(target, kind="heatmap", overwrite=replace, inputs=_sources(volume))

    return _export(parent, "Export heatmaps", filters, path, overwrite,
                   lambda p: writers.existing_targets(p, (), classes),
                   lambda p, replace: writers.export_heatmaps(p, layers.heatmap_arrays(heatmaps), names, volume,
                                                              overwrite=replace),
                   choose=_save_dialog(filters, suggested_path(volume, "heatmap", parent)), check=check)


def export_set_masks(parent: QWidget, info, labels, folder: str | None, overwrite: bool) -> list[Path] | None:
    """Write ``NAME_mask.png`` per image of an image set into ``folder`` (a folder dialog when None);
    labels: the padded ``(N, Hmax, Wmax)`` prediction, cropped to each image's size here."""
    from ..io.image_sets import crop_planes, existing_mask_targets, mask_targets, write_image_set_masks

    masks = crop_planes(labels, info.shapes)

    def check(f: str, replace: bool) -> None:
        top = max((int(np.max(m)) for m in masks), default=0)
        for target in mask_targets(f, info.names):
            check_target(target, 1, overwrite=replace, inputs=_set_sources(info), max_label=top)

    return _export(parent, "Export masks: choose a folder (one NAME_mask.png per image)", "", folder, overwrite,
                   lambda f: existing_mask_targets(f, info.names),
                   lambda f, replace: write_image_set_masks(f, masks, info.names, overwrite=replace),
                   choose=_folder_dialog(info), check=check)


def export_set_heatmaps(parent: QWidget, info, heatmaps: dict, classes: dict[int, str], folder: str | None,
                        overwrite: bool) -> list[Path] | None:
    """Write each image's heatmaps (float32 TIFF per class, its own size) into ``folder``."""
    from ..io.image_sets import crop_planes, heatmap_targets, write_image_set_heatmaps

    planes = {c: crop_planes(data, info.shapes) for c, data in heatmaps.items()}

    def check(f: str, replace: bool) -> None:
        for target in heatmap_targets(f, info.names, classes):
            check_target(target, kind="heatmap", overwrite=replace, inputs=_set_sources(info))

    return _export(parent, "Export heatmaps: choose a folder", "", folder, overwrite,
                   lambda f: [p for p in heatmap_targets(f, info.names, classes) if p.exists()],
                   lambda f, replace: write_image_set_heatmaps(f, planes, info.names, classes, overwrite=replace),
                   choose=_folder_dialog(info), check=check)


def _sources(volume) -> list[str]:
    """The file (or DICOM folder) a layer's scan was read from: an export never replaces it."""
    source = getattr(volume, "source", None)
    return [source] if source else []


def _set_sources(info) -> list[Path]:
    """The image files of an image set: an export never replaces them."""
    return [Path(info.folder) / name for name in info.names] if info.folder else []


def _folder_dialog(info) -> Callable[[QWidget, str], str]:
    """A folder chooser opening beside the images' folder (not in it: BUSI keeps its masks there)."""
    start = str(Path(info.folder).parent) if info.folder else ""
    return lambda parent, title: QFileDialog.getExistingDirectory(parent, title, start)


def suggested_path(volume, kind: str, parent: QWidget | None = None) -> str:
    """``FOLDER/SCAN_mask.EXT`` (kind "mask") or ``FOLDER/SCAN_heatmap.EXT`` (kind "heatmap") named after the scan
    ``volume`` was read from (:func:`napari_fewshot.io.naming.suggested_output`), in the user's own folder
    (:func:`suggested_folder`); "" when the scan came from no file and no folder was used yet."""
    source = getattr(volume, "source", None)
    folder = suggested_folder(source, getattr(parent, LAST_FOLDER_ATTRIBUTE, None))
    if not source:
        return str(folder) if getattr(parent, LAST_FOLDER_ATTRIBUTE, None) else ""
    return str(folder / suggested_output(source, getattr(volume, "format", None), kind).name)


def suggested_folder(source: str | None, last_used: str | None = None) -> Path:
    """Where a save dialog opens: the folder last exported to, else the scan's folder when it is the user's
    (not inside the installed package, e.g. its sample data), else the home folder."""
    if last_used and Path(last_used).is_dir():
        return Path(last_used)
    if source:
        folder = Path(source).resolve().parent
        if not any(shipped in (folder, *folder.parents) for shipped in SHIPPED_FOLDERS):
            return folder
    return Path.home()


def remember_folder(parent: QWidget | None, path: str | Path) -> None:
    """Keep the folder of an export for the next dialog's suggestion (on the widget, for this session)."""
    if parent is not None:
        setattr(parent, LAST_FOLDER_ATTRIBUTE, str(Path(path).resolve().parent))


def filter_extensions(filters: str) -> list[str]:
    """Every extension the ``;;``-separated Qt name filters list, in order: ``.nii.gz``, ``.nii``, ..."""
    return [e.lower() for e in re.findall(r"\*(\.[\w.]+)", filters)]


def with_filter_extension(path: str, selected_filter: str) -> str:
    """``path`` with the selected filter's first extension added when it ends in none of the filter's."""
    extensions = filter_extensions(selected_filter)
    if not extensions or any(path.lower().endswith(e) for e in extensions):
        return path
    return path + extensions[0]


def _save_dialog(filters: str, suggested: str = "") -> Callable[[QWidget, str], str]:
    """A save dialog opening on ``suggested`` (folder and name) with the matching filter selected."""
    def choose(parent: QWidget, title: str) -> str:
        initial = next((f for f in filters.split(";;")
                        if any(suggested.lower().endswith(e) for e in filter_extensions(f))), "")
        path, selected = QFileDialog.getSaveFileName(parent, title, suggested, filters, initial,
                                                     options=QFileDialog.Option.DontConfirmOverwrite)
        return with_filter_extension(path, selected) if path else path
    return choose


def _export(parent: QWidget, title: str, filters: str, path: str | None, overwrite: bool,
            existing_at: Callable[[str], list[Path]], write: Callable[[str, bool], list[Path]],
            choose: Callable[[QWidget, str], str] | None = None,
            check: Callable[[str, bool], None] | None = None) -> list[Path] | None:
    """Choose (when `path` is None), ask before replacing, check every target (io/targets.py: never an
    input, never a folder the tool did not write), write, tell the user."""
    interactive = path is None
    if interactive:
        path = (choose or _save_dialog(filters))(parent, title)
        if not path:
            return None
    existing = existing_at(path)
    if existing and not overwrite:
        if not interactive:
            show_error(f"Not exported: '{existing[0]}' exists; choose another name.")
            return None
        if not confirm_replace(parent, existing):
            show_info("Export cancelled; nothing was written.")
            return None
    try:
        if check is not None:
            check(path, bool(existing))
        paths = write(path, bool(existing))
    except FewShotError as exc:
        show_error(str(exc))
        return None
    remember_folder(parent, paths[0])
    show_info(f"Wrote {paths[0]}" + (f" and {len(paths) - 1} more files." if len(paths) > 1 else "."))
    return paths


def confirm_replace(parent: QWidget, existing: list[Path]) -> bool:
    """Ask before replacing files; True when the user says yes."""
    if len(existing) > 1:
        others = len(existing) - 1
        text = f"'{existing[0]}' and {others} more file{'s' * (others != 1)} exist. Replace them?"
    else:
        text = f"'{existing[0]}' exists. Replace it?"
    answer = QMessageBox.question(parent, "Replace files?", text)
    return answer == QMessageBox.StandardButton.Yes


def painted(support) -> bool:
    """True when the support copy (an array, or a list of planes for an image set) has any paint; else
    tells the user to paint first (Save prototypes asks for a file name only after this)."""
    if support is not None and any(np.any(plane) for plane in support):
        return True
    show_warning("Nothing is painted on the support layer yet: paint a few slices of each class first.")
    return False
