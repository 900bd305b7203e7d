"""A support layer belongs to the image it was made for (issue 22): with two scans of one shape open,
switching the Image picker never leaves the Support picker on the other scan's paint, Segment never
uses it, and that paint is never changed."""

import numpy as np
import pytest
from conftest import wait_idle

from napari_fewshot.plugin import SUPPORT_OF_KEY, layers

pytestmark = pytest.mark.gui

SHAPE = (6, 48, 48)


def scan_volume(seed: int) -> np.ndarray:
    """(S, H, W) noise with a bright square on every slice (where depends on ``seed``)."""
    volume = np.random.default_rng(seed).normal(20, 5, SHAPE).astype(np.float32)
    volume[:, 10 + seed:30 + seed, 12:30] += 100
    return volume


def paint(support, z: int, value: int = 1) -> None:
    data = support.data
    data[z, 14:28, 14:28] = value
    support.data = data  # the data event, as an edit sends it


@pytest.fixture
def two_scans(make_napari_viewer, monkeypatch):
    """(viewer, widget, image A, image B, supports each Segment ran with): two scans of one shape, the
    widget docked on A."""
    from napari_fewshot.plugin import widget as widget_module
    from napari_fewshot.plugin.widget import FewShotWidget

    viewer = make_napari_viewer()
    a = viewer.add_image(scan_volume(0), name="scan A")
    b = viewer.add_image(scan_volume(4), name="scan B")
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.ui.settings["device"].value = "cpu"
    widget.set_image_layer(a)
    used = []
    segment_job = widget_module.segment_job

    def recording(job, *args):
        used.append(None if job.support is None else np.array(job.support))
        return (yield from segment_job(job, *args))

    monkeypatch.setattr(widget_module, "segment_job", recording)
    return viewer, widget, a, b, used


def offered(widget) -> list[str]:
    combo = widget.ui.support_combo
    return [combo.itemText(i) for i in range(combo.count())]


def test_switching_the_image_never_segments_it_with_the_other_scans_paint(two_scans, qtbot, notes):
    viewer, widget, a, b, used = two_scans
    support_a = widget.create_support_layer()
    paint(support_a, 2)
    painted_a = support_a.data.copy()
    assert layers.same_layer(layers.owner_of(viewer, support_a), a)

    widget.set_image_layer(b)
    assert widget.support_layer is None  # not A's support, although it has B's shape
    assert support_a.name not in offered(widget)
    notes.clear()
    assert widget.segment("all") is None
    errors = [m for s, m in notes if s == "error"]
    assert errors == ["Create or pick a support Labels layer and paint a few slices first."]
    assert used == [] and widget.prediction_layer is None

    support_b = widget.create_support_layer()  # New: B's own support
    assert layers.same_layer(widget.support_layer, support_b) and offered(widget) == [support_b.name]
    paint(support_b, 4, value=1)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert len(used) == 1 and used[0].sum() == support_b.data.sum() and used[0][4].any() and not used[0][2].any()
    assert widget.prediction_layer is not None

    widget.set_image_layer(a)  # back on A: A's own support again
    assert layers.same_layer(widget.support_layer, support_a) and offered(widget) == [support_a.name]
    widget.set_image_layer(b)
    assert layers.same_layer(widget.support_layer, support_b)
    np.testing.assert_array_equal(support_a.data, painted_a)  # A's paint untouched throughout


def test_a_job_with_another_scans_support_is_refused_in_one_sentence(two_scans, qtbot, notes):
    """However a support of A came to be chosen for B (here: its record rewritten while chosen), no job runs."""
    viewer, widget, a, b, used = two_scans
    support = widget.create_support_layer()
    paint(support, 2)
    painted = support.data.copy()
    support.metadata[SUPPORT_OF_KEY] = layers.image_key(b)
    widget.set_image_layer(b)
    assert layers.same_layer(widget.support_layer, support)  # B's now, as far as the picker knows
    support.metadata[SUPPORT_OF_KEY] = layers.image_key(a)
    notes.clear()

    assert widget.segment("all") is None and widget.compute_features() is None
    errors = [m for s, m in notes if s == "error"]
    assert errors == ["The support layer 'support' holds the paint of 'scan A', not of 'scan B'; pick this "
                      "image's own support or press New to make one."] * 2
    assert used == [] and not widget.busy
    np.testing.assert_array_equal(support.data, painted)


def test_unowned_labels_of_the_image_shape_are_offered_but_only_chosen_by_the_user(two_scans, qtbot):
    """A Labels layer opened from a file belongs to no image: offered for every image of its shape, never
    chosen for the user on a switch; once a job used it for an image, it is that image's."""
    viewer, widget, a, b, used = two_scans
    opened = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="opened mask")
    viewer.add_labels(np.zeros((6, 40, 48), np.uint8), name="other shape")
    assert offered(widget) == ["opened mask"]  # A has no support of its own
    widget.set_image_layer(b)
    assert offered(widget) == ["opened mask"] and widget.support_layer is None
    widget.set_support_layer(opened)
    paint(opened, 1)
    widget.segment("all")
    wait_idle(qtbot, widget)
    assert len(used) == 1 and layers.same_layer(layers.owner_of(viewer, opened), b)  # B's now
    widget.set_image_layer(a)
    assert offered(widget) == [] and widget.support_layer is None


def test_a_support_whose_image_was_closed_is_offered_again(two_scans, qtbot):
    """Reopening a scan makes a new layer: the support of the closed one may be picked for it."""
    viewer, widget, a, b, used = two_scans
    support = widget.create_support_layer()
    widget.set_image_layer(b)
    assert support.name not in offered(widget)
    viewer.layers.remove(a)
    assert support.name in offered(widget) and layers.owner_of(viewer, support) is None
