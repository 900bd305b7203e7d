"""A worker's segmentation result into napari layers: the prediction (outlined labels) and one heatmap per
class, created the first time and updated afterwards, placed below the support being painted and above
their own image (heatmaps under the prediction); the per-class volumes shown under the status line and
written beside an exported mask (core/volumes.py)."""

from __future__ import annotations

from pathlib import Path

from . import VOLUME_KEY, image_sets, layers


def show(viewer, session, image, support, result, whole: bool, heatmaps_visible: bool):
    """Put ``result`` (a SegmentationResult, or a WholeVolume whose heatmaps the worker assembled) into the
    prediction and heatmap layers of ``session`` (an ImageSession of ``image``), keeping the active layer.

    whole: the result covers every slice (the prediction layer is replaced, not patched slice by slice).
    Returns the SegmentationResult in the layer's layout (an image set: padded back, see image_sets).
    """
    from .workers import WholeVolume

    active = viewer.layers.selection.active
    similarity = result.heatmaps if isinstance(result, WholeVolume) else None
    result = result.result if isinstance(result, WholeVolume) else result
    result = image_sets.padded_result(image, result)
    similarity = similarity or result.similarity
    labels = result.labels[0] if len(layers.spatial_shape(image)) == 2 else result.labels
    slices = None if whole else sorted(set(result.segmented_slices) | set(result.support_slices))
    session.prediction = layers.unwrap(
        layers.update_prediction(viewer, image, support, session.prediction, labels, slices))
    layers.place_below(viewer, session.prediction, support)
    if similarity:
        shown = layers.update_heatmaps(viewer, image, support, session.heatmaps, similarity, heatmaps_visible,
                                       session.prediction.data, result.similarity_range)
        session.heatmaps = {c: layers.unwrap(layer) for c, layer in shown.items()}
        for layer in session.heatmaps.values():
            show_legend(layer, viewer)
        for layer in session.heatmaps.values():
            layers.place_below(viewer, layer, session.prediction)
    for layer in (session.prediction, *session.heatmaps.values()):  # the heatmaps end up under the prediction
        _keep_above(viewer, layer, image)  # a support of another (lower) layer must not hide them under the image
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active  # keep painting where the user was painting
    return result


LEGEND_BAR_SIZE = (16, 90)  # colour bar width, height in screen pixels: four classes' bars fit a laptop's canvas


def show_legend(layer, viewer) -> None:
    """Show the heatmap layer's name (its class and what its values are, layers.heatmap_name) as a title above its
    colour bar, which has numbers only: napari's layer-name overlay, in the colour bar's corner. That corner tiles
    its overlays top to bottom (title, bar, next title, bar...), where napari can: side by side, four classes'
    titles ran off the canvas and over each other's bars."""
    legend = layer.name_overlay
    legend.position = layer.colorbar.position
    legend.order, layer.colorbar.order = 0, 1  # the title above its own bar
    layer.colorbar.size = LEGEND_BAR_SIZE
    legend.visible = True
    tiling = getattr(viewer.canvas, "overlay_tiling", None)  # not in older napari: there they stay side by side
    if tiling is not None:
        setattr(tiling, str(legend.position), "vertical")


def show_heatmaps(widget, visible: bool) -> bool:
    """The Heatmaps box was ticked (or unticked): show (hide) the heatmap layers there are. True when there are
    none but a prediction from painted support: the caller segments again, which computes them (the features
    are cached, so only the matching runs). Otherwise the status line says when they will appear."""
    import numpy as np

    shown = widget.heatmap_layers
    for layer in shown.values():
        layer.visible = visible
    if not visible or shown or widget.prediction_layer is None:
        return False
    support = widget.support_layer
    if widget.runner.occupied or support is None or not np.any(support.data):
        widget.ui.status_label.setText("Heatmaps will be shown with the next Segment (or Load prototypes).")
        return False
    widget.ui.status_label.setText("Computing the heatmaps from the painted support...")
    return True


def _keep_above(viewer, layer, image) -> None:
    """Move ``layer`` (a result of ``image``) just above ``image`` when it is below it: the user sees the
    prediction and heatmaps over their own scan, never a bare scan (a scan opened after them, or a bank's
    result shown with a support that lies under the scan)."""
    ll, layer, image = viewer.layers, layers.unwrap(layer), layers.unwrap(image)
    if layer in ll and image in ll and ll.index(layer) < ll.index(image):
        ll.move(ll.index(layer), ll.index(image) + 1)


def summary(result, image) -> str:
    """"Segmented N slices from K support slices" (images for an image set), without the time."""
    n = len(set(result.segmented_slices) - set(result.support_slices))
    k = len(result.support_slices)
    unit = "image" if image_sets.set_info(image) is not None else "slice"
    return f"Segmented {n} {unit}{'s' * (n != 1)} from {k} support {unit}{'s' * (k != 1)}"


def volume_table(image, prediction, support, corrected=()) -> list:
    """The per-class statistics (core.volumes.ClassVolume) of the ``prediction`` layer of ``image``: mL from the
    scan's voxel spacing (NIfTI, DICOM, a TIFF that states one), a pixel area otherwise (image sets, PNG)."""
    if prediction is None:
        return []
    return _table(*_table_inputs(image, prediction, support, corrected))


def _table_inputs(image, prediction, support, corrected, copy: bool = False) -> tuple:
    """What the volume table is computed from, read on the Qt thread: (labels, painted or None, class names,
    spacing or None, corrected slices); `copy`: the arrays copied, for a thread that runs beside new edits."""
    import numpy as np

    labels = np.array(prediction.data, copy=copy)
    painted = None if support is None or support.data.shape != labels.shape else np.array(support.data, copy=copy)
    volume = image.metadata.get(VOLUME_KEY) if image is not None else None
    known = volume is not None and image_sets.set_info(image) is None and (
        getattr(volume, "affine", None) is not None or tuple(volume.spacing) != (1.0, 1.0, 1.0))
    return labels, painted, layers.class_names(support, image), volume.spacing if known else None, tuple(corrected)


def _table(labels, painted, names, spacing, corrected) -> list:
    from ..core.volumes import volume_table as table

    return table(labels, None, spacing, names, painted, corrected)  # every class predicted or painted


class VolumesLine:
    """The per-class volumes under the status line, recounted after each segmentation in a background thread:
    on a 512 x 512 x 100 prediction the count takes 1-3 s (every class's voxels and slices), which froze the
    window after every result (BENCHMARKS.md, session 12 "stall"). The arrays are copied first (tens of ms), so
    strokes made meanwhile do not mix into the count; a newer count supersedes one still running."""

    def __init__(self, widget):
        self.widget, self.pending = widget, None

    def later(self) -> None:
        """:meth:`refresh` on a later turn of Qt's event loop: its copies (~10 ms of the Qt thread on 512 x 512 x
        100) are not added to the turn that shows a result (BENCHMARKS.md, session 17 "draw")."""
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: None if self.widget.runner.closed else self.refresh())

    def refresh(self) -> None:
        from napari.qt.threading import create_worker

        widget = self.widget
        if widget.prediction_layer is None or widget.image_layer is None:
            self.pending = None
            widget.ui.volumes_label.setText("")
            return
        support, image = widget.support_layer, widget.image_layer
        inputs = _table_inputs(image, widget.prediction_layer, support,
                               widget.corrections.corrected_slices(support), copy=True)
        worker = self.pending = create_worker(_table, *inputs, _start_thread=False)

        def show(table) -> None:
            if self.pending is worker and not widget.runner.closed:
                self.pending = None
                widget.ui.volumes_label.setText(describe_volumes(table, image))

        worker.returned.connect(show)
        worker.start()


def describe_volumes(table, image) -> str:
    """The widget's lines: one per class (see core.volumes.ClassVolume.describe)."""
    unit = "image" if image_sets.set_info(image) is not None else "slice"
    return "\n".join(entry.describe(unit) for entry in table)


def write_volumes_beside(mask_paths, table) -> Path | None:
    """Write ``table`` as ``STEM_volumes.csv`` beside the exported mask (beside the folder, as
    ``FOLDER_volumes.csv``, for masks written as several files); None when there is nothing to write."""
    from napari.utils.notifications import show_warning

    from ..core.volumes import CSV_COLUMNS
    from ..errors import FewShotError
    from ..io.volumes_csv import volumes_csv_path, write_volumes_csv

    from ..io.sidecar import SIDECAR_SUFFIX

    mask_paths = [p for p in mask_paths or () if not str(p).endswith(SIDECAR_SUFFIX)]  # the class names' file
    if not mask_paths or not table:
        return None
    first = Path(mask_paths[0])
    target = volumes_csv_path(first.parent if len(mask_paths) > 1 else first)  # a folder: FOLDER_volumes.csv
    try:
        return write_volumes_csv(target, [entry.row() for entry in table], CSV_COLUMNS)
    except FewShotError as exc:  # the mask is written; only its volume table is not
        show_warning(str(exc))
        return None


def widget_volumes(widget) -> list:
    """The volume table of the widget's current image, prediction and support (corrections from its Corrections)."""
    support = widget.support_layer
    return volume_table(widget.image_layer, widget.prediction_layer, support,
                        widget.corrections.corrected_slices(support))
