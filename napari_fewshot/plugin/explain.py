"""Explain: which painted region a prediction looks like (core/provenance.py in the viewer).

With the panel's **Explain** box ticked:

- hovering the prediction (or Alt-clicking it) says in napari's status line and the panel's
  "looks like slice 86, painted liver, similarity 0.83", and marks the matching cell on that painted slice
  (Points layer ``explain: painted origin``); Shift+J goes to that slice, and Shift+J again back;
- the Labels layer ``provenance: painted slice`` colours each predicted pixel of the last segmentation of
  all slices by the painted slice that explains it (value = slice + 1, its name in the status line), made
  in a worker with progress after that segmentation: a false positive's colour names the painting that
  pulled it in (erase it there, segment again).

Hovering asks the core on the Qt thread (one feature cell against the class's prototypes: milliseconds),
never while a job runs, since jobs use the same feature cache.
"""

from __future__ import annotations

import numpy as np
from napari.utils.key_bindings import coerce_keybinding

from ..core.provenance import NO_SLICE, OTHER_SCAN, bank_source
from ..errors import FewShotError
from . import layers

JUMP_KEY = "Shift-J"
ORIGIN_NAME = "explain: painted origin"
PROVENANCE_NAME = "provenance: painted slice"
_GAP = "    "  # between napari's own status and the explanation


class ExplainTool:
    """The Explain box's behaviour for the widget `widget` (a FewShotWidget)."""

    def __init__(self, widget):
        self.widget, self.viewer, self.ui = widget, widget.viewer, widget.ui
        self._image = None  # the image layer whose results are kept
        self._results: dict[int, object] = {}  # slice -> the SegmentationResult that predicted it
        self._whole = None  # the last result of every slice (the provenance layer shows it)
        self.origin = None  # the last Origin explained
        self.text = ""  # its sentence, kept at the end of napari's status line
        self._back: int | None = None  # the slice Shift+J returns to
        self._setting_status = False
        self.points = None  # the "explain: painted origin" layer
        self.layer = None  # the provenance layer
        self.bank = None  # the PrototypeBank last loaded: the prototypes of a result from ready ones
        self.ui.explain_check.toggled.connect(self.set_enabled)
        self.viewer.events.status.connect(self._keep_in_status)

    @property
    def enabled(self) -> bool:
        return self.ui.explain_check.isChecked()

    def set_enabled(self, on: bool) -> None:
        """Start or stop explaining (the mouse callbacks, Shift+J and the layers' visibility follow)."""
        moves, presses = self.viewer.mouse_move_callbacks, self.viewer.mouse_drag_callbacks
        if on:
            if self._on_move not in moves:
                moves.append(self._on_move)
                presses.append(self._on_press)
            self.viewer.bind_key(JUMP_KEY, self.jump, overwrite=True)
            if self._whole is not None and self.layer is None:
                self.show_provenance()
        else:
            self._unhook()
            self._say("")
        for layer in (self.points, self.layer):
            if layer is not None and layer in self.viewer.layers:
                layer.visible = on

    def close(self) -> None:
        """Let go of the viewer's callbacks and key (the widget is closing)."""
        self._unhook()
        self.viewer.events.status.disconnect(self._keep_in_status)

    def forget(self) -> None:
        """Let go of the results kept to explain (they hold their segmenter): the widget is gone."""
        self._image, self._results, self._whole, self.bank = None, {}, None, None

    def _unhook(self) -> None:
        for callbacks, callback in ((self.viewer.mouse_move_callbacks, self._on_move),
                                    (self.viewer.mouse_drag_callbacks, self._on_press)):
            if callback in callbacks:
                callbacks.remove(callback)
        if self.viewer.keymap.get(coerce_keybinding(JUMP_KEY)) == self.jump:
            self.viewer.bind_key(JUMP_KEY, None)

    # -- results ---------------------------------------------------------------------------
    def remember(self, image, result, whole: bool) -> None:
        """Keep `result` (what the layers now show of `image`) to explain its slices; after a segmentation
        of every slice, redraw the provenance layer (as a follow-up job, when Explain is on)."""
        image = layers.unwrap(image)
        if image is not self._image:
            self._image, self._results, self._whole = image, {}, None
        explainer = getattr(result, "explainer", None)
        if explainer is not None and explainer.source == OTHER_SCAN and self.bank is not None:
            explainer.source = bank_source(self.bank)
        for z in (*result.segmented_slices, *result.support_slices):
            self._results[z] = result
        if whole:
            self._whole = result
            if self.enabled:
                runner = self.widget.runner
                if not runner.occupied:
                    self.show_provenance()
                elif runner.after is None:
                    runner.after = self.show_provenance

    def show_provenance(self):
        """Start the job drawing the provenance layer of the last segmentation of every slice; the worker."""
        result = self._whole
        if result is None or getattr(result, "explainer", None) is None:
            return None
        return self.widget.runner.launch("Explaining", provenance_job, result,
                                         on_return=lambda data: self._show_layer(result, data))

    def _show_layer(self, result, data: np.ndarray) -> None:
        image = self._image
        if result is not self._whole or image is None or image not in self.viewer.layers:
            return
        active = self.viewer.layers.selection.active
        data = data.reshape(layers.spatial_shape(image))  # a 2D image's one slice
        values = np.unique(data)
        features = {"index": [int(v) for v in values],
                    "painted slice": ["none" if v == 0 else str(int(v) - 1) for v in values]}
        if self.layer is None or self.layer not in self.viewer.layers or self.layer.data.shape != data.shape:
            self.layer = self.viewer.add_labels(data, name=PROVENANCE_NAME, opacity=0.5, features=features,
                                                **layers.spatial_kwargs(image))
        else:
            self.layer.data = data
            self.layer.features = features
        self.layer.visible = self.enabled
        layers.place_below(self.viewer, self.layer, self.widget.prediction_layer)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    # -- one pixel -------------------------------------------------------------------------
    def explain_at(self, z: int, y: int, x: int):
        """Explain pixel (y, x) of slice z of the prediction: say it, mark its origin; the Origin or None."""
        result = self._results.get(z)
        if result is None or getattr(result, "explainer", None) is None or self.widget.runner.occupied:
            return None
        try:
            origin = result.explain(z, y, x)
        except FewShotError as exc:
            self._say(str(exc))
            return None
        self.origin = origin
        self._say(origin.describe(layers.class_names(self.widget.support_layer, self._image)))
        self._mark(origin)
        return origin

    def jump(self, viewer=None) -> None:
        """Go to the painted slice of the last explanation; called again, back to where you were."""
        if self._back is not None:
            back, self._back = self._back, None
            self.widget.corrections._go_to(back)
        elif self.origin is not None and self.origin.pixel is not None:
            self._back = self.widget.current_slice()
            self.widget.corrections._go_to(self.origin.slice)

    def _cursor_pixel(self) -> tuple[int, int, int] | None:
        """(slice, y, x) of the image under the cursor, or None outside it."""
        image = self._image
        if image is None or image not in self.viewer.layers:
            return None
        point = np.round(image.world_to_data(self.viewer.cursor.position)).astype(int)
        shape = layers.spatial_shape(image)
        z, y, x = (0, *point[-2:]) if len(shape) == 2 else point[-3:]
        inside = all(0 <= v < n for v, n in zip((y, x), shape[-2:])) and (len(shape) == 2 or 0 <= z < shape[0])
        return (int(z), int(y), int(x)) if inside else None

    def _on_move(self, viewer, event) -> None:
        pixel = self._cursor_pixel()
        if pixel is not None:
            self.explain_at(*pixel)

    def _on_press(self, viewer, event) -> None:
        if "Alt" in event.modifiers and (pixel := self._cursor_pixel()) is not None:
            self.explain_at(*pixel)

    def _mark(self, origin) -> None:
        """The origin's cell on its painted slice, as the one point of the origin layer."""
        if origin.pixel is None or self._image is None:
            if self.points is not None and self.points in self.viewer.layers:
                self.points.data = np.zeros((0, self.points.ndim))
            return
        point = [origin.pixel] if len(layers.spatial_shape(self._image)) == 2 else [[origin.slice, *origin.pixel]]
        if self.points is None or self.points not in self.viewer.layers:
            active = self.viewer.layers.selection.active
            self.points = self.viewer.add_points(np.asarray(point, float), name=ORIGIN_NAME, symbol="cross", size=9,
                                                 face_color="yellow", border_color="black",
                                                 **layers.spatial_kwargs(self._image))
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            self.points.data = np.asarray(point, float)

    # -- the status line -------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.text = text
        if text:
            self.ui.status_label.setText(text)
        self._keep_in_status()

    def _keep_in_status(self, event=None) -> None:
        """napari rewrites its status line as the cursor moves: keep the explanation at its end."""
        if self._setting_status:
            return
        status = self.viewer.status  # a string, or napari's dict whose "coordinates" the status bar shows
        line = status.get("coordinates", "") if isinstance(status, dict) else status
        if not isinstance(line, str):
            return
        line = line.split(_GAP + "looks like")[0] + (_GAP + self.text if self.text.startswith("looks like") else "")
        wanted = {**status, "coordinates": line} if isinstance(status, dict) else line
        if wanted != status:
            self._setting_status = True
            try:
                self.viewer.status = wanted
            finally:
                self._setting_status = False


def provenance_job(result):
    """Worker: the provenance layer's data for `result` (a volume's SegmentationResult): (S, H, W) int32,
    the painted slice + 1 explaining each predicted pixel, 0 for background, copied paint and no origin."""
    labels = result.labels
    data = np.zeros(np.shape(labels), np.int32)
    predicted = [z for z in result.segmented_slices if z not in set(result.support_slices)]
    maps = yield from result.explainer.volume_maps(labels, predicted)
    for z, (support, _) in maps.items():
        data[z] = np.where(support == NO_SLICE, 0, support + 1)
    return data
