"""The demo in a window: the CT sample with the support the demo painted, its prediction and
heatmaps, and the dock widget ready for the user to paint more and segment again."""

from __future__ import annotations

from . import CLASS_NAMES_KEY
from .layers import update_heatmaps, update_prediction
from .readers import volume_layer_data


def show_demo(outcome: dict, viewer=None, run: bool = True):
    """Open napari on `outcome` (what napari_fewshot.demo.run_demo returns); returns the viewer.

    viewer: an existing viewer to fill (tests); run: start Qt's event loop (blocks until closed).
    """
    import napari

    viewer = viewer or napari.Viewer(title="napari-fewshot demo")
    volume, names = outcome["volume"], outcome["names"]
    data, kwargs, _ = volume_layer_data(volume, "CT abdomen", class_names=names, as_labels=False)
    image = viewer.add_image(data, **kwargs)
    support = viewer.add_labels(outcome["support"], name="support", scale=kwargs["scale"],
                                metadata={CLASS_NAMES_KEY: dict(names)})
    result = outcome["result"]
    update_prediction(viewer, image, support, None, result.labels, None)
    update_heatmaps(viewer, image, support, {}, result.similarity, visible=True, prediction=result.labels)
    viewer.dims.set_current_step(0, outcome["support_slices"][len(outcome["support_slices"]) // 2]
                                 if outcome.get("support_slices") else len(data) // 2)
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.set_image_layer(image)
    widget.set_support_layer(support)
    viewer.layers.selection.active = support
    if run:
        napari.run()
    return viewer
