"""The widget's Export buttons: save dialog, "replace?" question, write, notify.

Writing itself is :mod:`.writers` (format from the extension; NIfTI on the source grid). A path
given programmatically never replaces files unless ``overwrite=True``; from the dialog the user
is asked first. For an image set (a folder of 2D images shown padded) the path is a folder: one
``NAME_mask.png`` per image at its own size, heatmaps one float TIFF per image and class
(:mod:`napari_fewshot.io.image_sets`); padding is never written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget

from ..errors import FewShotError
from . import IMAGE_SET_KEY, VOLUME_KEY, layers, writers

MASK_FILTER = "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff);;PNG, one file per slice (*.png);;NumPy (*.npy)"
HEATMAP_FILTER = "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff);;NumPy (*.npy)"


def export_prediction(parent: QWidget, layer, path: str | None, overwrite: bool) -> list[Path] | None:
    """Write the prediction Labels ``layer``; None (after telling the user why) when nothing was written."""
    if layer is None:
        show_warning("There is no prediction to export yet; press Segment first.")
        return None
    info = layer.metadata.get(IMAGE_SET_KEY)
    if info is not None:
        return export_set_masks(parent, info, layer.data, path, overwrite)
    return _export(parent, "Export mask", MASK_FILTER, path, overwrite,
                   lambda p: writers.existing_targets(p, layer.data.shape),
                   lambda p, replace: writers.export_mask(p, layer.data, layer.metadata.get(VOLUME_KEY),
                                                          overwrite=replace))


def export_heatmaps(parent: QWidget, heatmaps: dict, names: dict[int, str], volume, path: str | None,
                    overwrite: bool) -> list[Path] | None:
    """Write each heatmap layer to ``STEM_classK_name.EXT`` beside ``path``."""
    if not heatmaps:
        show_warning("There are no heatmaps to export; tick Heatmaps and press Segment first.")
        return None
    classes = {c: names.get(c, "") for c in heatmaps}
    info = next(iter(heatmaps.values())).metadata.get(IMAGE_SET_KEY)
    if info is not None:
        return export_set_heatmaps(parent, info, layers.heatmap_arrays(heatmaps), classes, path, overwrite)
    return _export(parent, "Export heatmaps", HEATMAP_FILTER, path, overwrite,
                   lambda p: writers.existing_targets(p, (), classes),
                   lambda p, replace: writers.export_heatmaps(p, layers.heatmap_arrays(heatmaps), names, volume,
                                                              overwrite=replace))


def export_set_masks(parent: QWidget, info, labels, folder: str | None, overwrite: bool) -> list[Path] | None:
    """Write ``NAME_mask.png`` per image of an image set into ``folder`` (a folder dialog when None);
    labels: the padded ``(N, Hmax, Wmax)`` prediction, cropped to each image's size here."""
    from ..io.image_sets import crop_planes, existing_mask_targets, write_image_set_masks

    masks = crop_planes(labels, info.shapes)
    return _export(parent, "Export masks: choose a folder (one NAME_mask.png per image)", "", folder, overwrite,
                   lambda f: existing_mask_targets(f, info.names),
                   lambda f, replace: write_image_set_masks(f, masks, info.names, overwrite=replace),
                   choose=_folder_dialog(info))


def export_set_heatmaps(parent: QWidget, info, heatmaps: dict, classes: dict[int, str], folder: str | None,
                        overwrite: bool) -> list[Path] | None:
    """Write each image's heatmaps (float32 TIFF per class, its own size) into ``folder``."""
    from ..io.image_sets import crop_planes, heatmap_targets, write_image_set_heatmaps

    planes = {c: crop_planes(data, info.shapes) for c, data in heatmaps.items()}
    return _export(parent, "Export heatmaps: choose a folder", "", folder, overwrite,
                   lambda f: [p for p in heatmap_targets(f, info.names, classes) if p.exists()],
                   lambda f, replace: write_image_set_heatmaps(f, planes, info.names, classes, overwrite=replace),
                   choose=_folder_dialog(info))


def _folder_dialog(info) -> Callable[[QWidget, str], str]:
    """A folder chooser opening beside the images' folder (not in it: BUSI keeps its masks there)."""
    start = str(Path(info.folder).parent) if info.folder else ""
    return lambda parent, title: QFileDialog.getExistingDirectory(parent, title, start)


def _save_dialog(filters: str) -> Callable[[QWidget, str], str]:
    def choose(parent: QWidget, title: str) -> str:
        path, _ = QFileDialog.getSaveFileName(parent, title, "", filters,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        return path
    return choose


def _export(parent: QWidget, title: str, filters: str, path: str | None, overwrite: bool,
            existing_at: Callable[[str], list[Path]], write: Callable[[str, bool], list[Path]],
            choose: Callable[[QWidget, str], str] | None = None) -> list[Path] | None:
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
        paths = write(path, bool(existing))
    except FewShotError as exc:
        show_error(str(exc))
        return None
    show_info(f"Wrote {paths[0]}" + (f" and {len(paths) - 1} more files." if len(paths) > 1 else "."))
    return paths


def confirm_replace(parent: QWidget, existing: list[Path]) -> bool:
    """Ask before replacing files; True when the user says yes."""
    more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
    answer = QMessageBox.question(parent, "Replace files?", f"'{existing[0]}'{more} exists. Replace?")
    return answer == QMessageBox.StandardButton.Yes
