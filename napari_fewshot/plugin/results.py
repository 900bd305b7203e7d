"""A worker's segmentation result into napari layers: the prediction (outlined labels) and one heatmap per
class, created the first time and updated afterwards, placed below the support being painted."""

from __future__ import annotations

from . import image_sets, layers


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
            layers.place_below(viewer, layer, session.prediction)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active  # keep painting where the user was painting
    return result


def summary(result, image) -> str:
    """"Segmented N slices from K support slices" (images for an image set), without the time."""
    n = len(set(result.segmented_slices) - set(result.support_slices))
    k = len(result.support_slices)
    unit = "image" if image_sets.set_info(image) is not None else "slice"
    return f"Segmented {n} {unit}{'s' * (n != 1)} from {k} support {unit}{'s' * (k != 1)}"
