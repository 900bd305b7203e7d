"""Driving a napari window as a person would, for screenshots, benchmarks and tests: real mouse drags on
the canvas (vispy events, so napari runs the viewer's callbacks and then the layer's, exactly as for a
hand on a mouse), and waiting for the widget's jobs while Qt's event loop runs, as it does for a person.

A test helper, not package code: it reaches into napari's private `_qt_viewer`. Tests import it as
`from gui_driver import ...` (pytest puts tests/ on sys.path); docs/make_*.py and benchmarks/image_set_gui.py
put tests/ on sys.path first."""

from __future__ import annotations

import time

import numpy as np

MOVE_INTERVAL_S = 0.008


def canvas_drag(viewer, layer, index: int, points, label: int = 1, mode: str = "paint", brush: int = 7) -> None:
    """Drag `layer`'s `mode` tool (paint, erase, fill, ...) with `label` and brush size `brush` through
    `points` ((row, col) data pixels) on slice `index` of the first axis (0 for a 2D layer)."""
    viewer.layers.selection.active = layer
    layer.mode, layer.brush_size, layer.selected_label = mode, brush, label
    if layer.ndim > 2:
        viewer.dims.set_current_step(0, index)
    canvas = viewer.window._qt_viewer.canvas
    to_canvas = canvas.view.transform * canvas.view.scene.transform

    def pos(row, col):
        world = layer.data_to_world([index, row, col] if layer.ndim > 2 else [row, col])
        return np.round(to_canvas.map([world[-1], world[-2]])[:2]).astype(int)

    events = canvas._scene_canvas.events
    press = events.mouse_press(pos=pos(*points[0]), button=1, modifiers=())
    for point in points[1:]:
        time.sleep(MOVE_INTERVAL_S)  # napari handles at most one mouse move every 5 ms and drops the rest
        events.mouse_move(pos=pos(*point), button=1, modifiers=(), press_event=press)
    events.mouse_release(pos=pos(*points[-1]), button=1, modifiers=(), press_event=press)


def rectangle_drag(viewer, layer, index: int, corner, opposite, steps: int = 6) -> None:
    """Drag a Shapes layer's rectangle tool from `corner` to `opposite` ((row, col) data pixels) on slice
    `index` of the first axis (0 for a 2D layer). Qt's loop runs between moves: a window just shown may
    still resize and move the view, and the rectangle follows the mouse only when the loop runs."""
    from qtpy.QtWidgets import QApplication

    viewer.layers.selection.active = layer
    layer.mode = "add_rectangle"
    if layer.ndim > 2:
        viewer.dims.set_current_step(0, index)
    canvas, app = viewer.window._qt_viewer.canvas, QApplication.instance()
    app.processEvents()

    def pos(row, col):
        to_canvas = canvas.view.transform * canvas.view.scene.transform  # read each time: the view may move
        world = layer.data_to_world([index, row, col] if layer.ndim > 2 else [row, col])
        return np.round(to_canvas.map([world[-1], world[-2]])[:2]).astype(int)

    events = canvas._scene_canvas.events
    press = events.mouse_press(pos=pos(*corner), button=1, modifiers=())
    for t in np.linspace(0, 1, steps)[1:]:
        time.sleep(MOVE_INTERVAL_S)
        app.processEvents()
        point = np.asarray(corner) + t * (np.asarray(opposite) - np.asarray(corner))
        events.mouse_move(pos=pos(*point), button=1, modifiers=(), press_event=press)
    app.processEvents()
    events.mouse_release(pos=pos(*opposite), button=1, modifiers=(), press_event=press)


def wait_idle(widget=None, timeout_s: float = 900.0, settle_s: float = 0.5) -> float:
    """Run Qt's event loop until `widget` (a FewShotWidget; None: none) runs no job, then `settle_s` more so
    the canvas is drawn. Returns the seconds until the widget was idle (the settling not counted)."""
    from qtpy.QtWidgets import QApplication

    app, started = QApplication.instance(), time.perf_counter()
    while widget is not None and widget.busy and time.perf_counter() - started < timeout_s:
        app.processEvents()
        time.sleep(0.01)
    idle = time.perf_counter() - started
    while time.perf_counter() - started - idle < settle_s:
        app.processEvents()
        time.sleep(0.01)
    return idle
