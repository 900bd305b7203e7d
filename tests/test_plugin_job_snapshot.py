"""Jobs carry what they need from the Qt thread: no worker reads a napari layer (#19 item 4).

Every attribute read of a layer made outside the main (Qt) thread is recorded while the widget computes
features, segments, fine-tunes, saves and applies a prototype bank; the list must stay empty. Small
synthetic images and 128 px encoder input keep each job to seconds. The snapshot a job carries
(:func:`~napari_fewshot.plugin.session.image_planes`) is views of the layer's data, never a copy.
"""

import threading

import numpy as np
import pytest
from conftest import use_input_size, wait_idle

SMALL_INPUT = 128  # px


@pytest.fixture
def off_thread_layer_reads(monkeypatch):
    """(layer type, attribute, thread name) of every layer attribute read outside the main thread."""
    from napari.layers import Layer

    main = threading.main_thread().ident
    original = Layer.__getattribute__
    seen: list[tuple[str, str, str]] = []

    def guarded(self, name):
        if threading.get_ident() != main:
            seen.append((type(self).__name__, name, threading.current_thread().name))
        return original(self, name)

    monkeypatch.setattr(Layer, "__getattribute__", guarded)
    return seen


def _widget(viewer):
    from napari_fewshot.plugin.widget import FewShotWidget

    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.ui.settings["device"].value = "cpu"
    use_input_size(widget, SMALL_INPUT)
    return widget


def _colour_image_set(viewer):
    """Four RGB images of different sizes, a bright square in each, opened as one padded set."""
    from napari_fewshot.io.image_sets import ImageSet, ImageSetInfo
    from napari_fewshot.plugin.image_sets import image_set_layer_data

    shapes = [(60, 80), (72, 64), (64, 96), (56, 70)]
    planes = []
    for h, w in shapes:
        plane = np.full((h, w, 3), 30, np.uint8)
        plane[20:40, 20:40] = (220, 160, 90)
        planes.append(plane)
    info = ImageSetInfo(None, [f"image {i}.png" for i in range(len(shapes))], shapes, channel_mode="rgb")
    ((data, kwargs, _),) = image_set_layer_data(ImageSet(info, planes, [None] * len(planes)), name="set")
    return viewer.add_image(data, **kwargs)


@pytest.mark.gui
def test_no_worker_reads_a_layer_on_an_image_set(make_napari_viewer, qtbot, tmp_path, off_thread_layer_reads):
    viewer = make_napari_viewer()
    image = _colour_image_set(viewer)
    assert image.rgb and image.data.shape == (4, 72, 96, 3)
    widget = _widget(viewer)
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    data = support.data
    data[0, 20:40, 20:40] = 1
    data[1, 22:38, 22:38] = 1
    support.data = data

    widget.compute_features()
    wait_idle(qtbot, widget)
    assert len(widget.session.segmenter.cache) == 4
    widget.segment("all")
    wait_idle(qtbot, widget)
    prediction = widget.prediction_layer
    assert prediction is not None and (prediction.data[2, 24:36, 24:36] == 1).mean() > 0.5
    assert not prediction.data[3, 56:].any()  # the padding below image 3 stays 0
    widget.fine_tune(steps=1, learning_rate=1e-4)
    wait_idle(qtbot, widget, 180)  # fine-tuning, then the chained re-segmentation
    assert widget.session.segmenter.is_fine_tuned
    target = tmp_path / "square.fewshot"
    widget.save_prototypes(str(target))
    wait_idle(qtbot, widget)
    assert target.exists()
    widget.load_prototypes(str(target))
    wait_idle(qtbot, widget)
    assert widget.prediction_layer is not None

    assert off_thread_layer_reads == []


@pytest.mark.gui
def test_no_worker_reads_a_layer_on_a_volume(make_napari_viewer, qtbot, off_thread_layer_reads):
    viewer = make_napari_viewer()
    volume = np.full((5, 48, 48), 0.1, np.float32)
    volume[:, 16:32, 16:32] = 0.9
    image = viewer.add_image(volume, name="volume")
    widget = _widget(viewer)
    widget.set_image_layer(image)
    support = widget.create_support_layer()
    data = support.data
    data[[0, 4], 16:32, 16:32] = 1
    support.data = data

    widget.segment("all")
    wait_idle(qtbot, widget)
    assert (widget.prediction_layer.data[2, 18:30, 18:30] == 1).mean() > 0.5
    image.data = volume[:, ::-1].copy()  # another image in the same layer: the next job sets it anew
    widget.segment("current")
    wait_idle(qtbot, widget)
    assert widget.session.image_ref is image.data

    assert off_thread_layer_reads == []


def test_image_planes_are_views_of_the_layer_data():
    import dask.array as da
    from napari.layers import Image

    from napari_fewshot.errors import FewShotError
    from napari_fewshot.io.image_sets import ImageSet, ImageSetInfo
    from napari_fewshot.plugin.image_sets import image_set_layer_data
    from napari_fewshot.plugin.session import image_planes

    volume = Image(np.zeros((3, 16, 16), np.float32))
    planes = image_planes(volume)
    assert planes.planes is volume.data and planes.source is volume.data and not planes.rgb

    lazy = Image(da.zeros((3, 16, 16), chunks=(1, 16, 16)))
    assert image_planes(lazy).planes is lazy.data  # read by the core in the worker, not here

    photo = Image(np.zeros((20, 30, 3), np.uint8), rgb=True)
    planes = image_planes(photo)
    assert planes.rgb and len(planes.planes) == 1 and planes.planes[0] is photo.data

    shapes = [(10, 12), (8, 16)]
    info = ImageSetInfo(None, ["a.png", "b.png"], shapes)
    ((data, kwargs, _),) = image_set_layer_data(ImageSet(info, [np.ones(s, np.uint8) for s in shapes], [None, None]))
    image_set = Image(data, **kwargs)
    planes = image_planes(image_set)
    assert isinstance(planes.planes, tuple) and [p.shape for p in planes.planes] == shapes
    assert all(np.shares_memory(p, image_set.data) for p in planes.planes)

    with pytest.raises(FewShotError, match="has 4 dimensions"):
        image_planes(Image(np.zeros((2, 3, 16, 16))))
    with pytest.raises(FewShotError, match="Multiscale"):  # never its coarsest level segmented silently
        image_planes(Image([np.zeros((3, 32, 32)), np.zeros((3, 16, 16))], multiscale=True))
