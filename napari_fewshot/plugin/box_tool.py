"""Box to paint: draw a rectangle around an organ or lesion, get it painted into the support (LiteMedSAM).

The panel's "Box → paint" button adds (or selects) a ``boxes`` Shapes layer over the chosen image, in
rectangle mode. Each rectangle drawn there becomes one job: its corners are mapped to the image's pixels
on the slice it was drawn on (a volume: the slice on screen; an image set: that image, clipped to its own
size), the slice is windowed like the features (:class:`~napari_fewshot.core.stack.ImageStack`), and
:class:`~napari_fewshot.core.box_to_mask.BoxSegmenter` turns box and slice into a mask in a worker thread,
on the LiteMedSAM service of the image's segmenter (``session.segmenter.sam``), so LiteMedSAM is loaded once
and a slice's embedding is computed once for boxes and refinement alike. Back on the Qt thread the mask is
written into the support layer with its selected label, only where the support is unpainted or has that
label already (another class's paint is never overwritten), as ONE undo step through the public
``data_setitem`` inside ``block_history``; that emits the layer's ``paint`` event, so autosave and live
mode see it as a stroke. The rectangle is then removed. Rectangles drawn while one is being turned into
paint wait their turn. Ctrl+Z (Shift+Ctrl+Z) with the boxes layer active undoes (redoes) the support's
last edit, so drawing and undoing need no change of layer.

A box on a predicted image (dense mode) signs it: the prediction layer's plane of that image becomes the
support's, and one Ctrl+Z restores both the unpainted support and the prediction (signed_boxes.py).

Problems (no support layer, a rectangle outside the image, a 4D image...) are one sentence in the
widget's status line; the rectangle is removed.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from functools import partial

import numpy as np
from napari.layers import Shapes
from qtpy.QtCore import QObject, QTimer

from ..errors import FewShotError
from . import ROLE_KEY, image_sets, layers
from .session import ImagePlanes, image_planes
from .signed_boxes import SignedBoxes
from .workers import start

logger = logging.getLogger(__name__)

BOXES_NAME = "boxes"
BOXES_ROLE = "boxes"
UNDO_KEY, REDO_KEY = "Control-Z", "Control-Shift-Z"
RETRY_MS = 200  # a rectangle is removed once the user is not drawing another one


@dataclass
class BoxRequest:
    """One rectangle to turn into paint, captured on the Qt thread."""

    image: object  # napari Image layer (unwrapped)
    support: object  # napari Labels layer (unwrapped)
    index: int  # slice (image of a set); 0 for a 2D image
    box: np.ndarray  # (4,) x0, y0, x1, y1 in the slice's pixels
    label: int
    shapes: object = None  # the Shapes layer the rectangle is in (None: asked for by a script)
    vertices: np.ndarray | None = None  # the rectangle's vertices, to remove it afterwards


class BoxTool(QObject):
    """Turns rectangles into support paint for ``widget`` (a FewShotWidget); see the module docstring."""

    def __init__(self, widget):
        super().__init__(widget)
        self.widget, self.viewer, self.ui = widget, widget.viewer, widget.ui
        self.worker = None
        self._queue: list[BoxRequest] = []
        self._segmenter = None  # core BoxSegmenter on the chosen image's segmenter's LiteMedSAM service
        self._stack = None  # (image layer, its data object, modality, ImageStack) of the last box
        self._watched: weakref.WeakSet = weakref.WeakSet()  # Shapes layers whose rectangles become paint
        self.closed = False
        self.painted = 0  # boxes written so far (tests, scripts)
        self.signed = SignedBoxes(self._bind_undo)  # predictions replaced by boxes, kept in step with undo
        self.ui.box_button.clicked.connect(self.start)

    @property
    def busy(self) -> bool:
        """True while a rectangle is being turned into paint or waits for its turn."""
        return self.worker is not None or bool(self._queue)

    # -- the boxes layer -------------------------------------------------------------------
    def start(self) -> Shapes | None:
        """Add (or select) the ``boxes`` Shapes layer over the chosen image, in rectangle mode."""
        image = self.widget.image_layer
        if image is None:
            self._say("Open or pick an image layer first; then draw boxes on it.")
            return None
        ndim = len(layers.spatial_shape(image))
        layer = next((ly for ly in self.viewer.layers if isinstance(ly, Shapes)
                      and ly.metadata.get(ROLE_KEY) == BOXES_ROLE and ly.ndim == ndim), None)
        if layer is None:
            width = max(1.0, max(layers.spatial_shape(image)[-2:]) / 256)
            layer = self.viewer.add_shapes(ndim=ndim, name=BOXES_NAME, edge_color="yellow", face_color="transparent",
                                           edge_width=width, opacity=0.8, metadata={ROLE_KEY: BOXES_ROLE},
                                           **layers.spatial_kwargs(image))
        layer = layers.unwrap(layer)
        self.watch(layer)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        support = self.widget.support_layer
        label = f"label {support.selected_label}" if support is not None else "the support's selected label"
        self._say(f"Drag a rectangle close around an organ or lesion: it is painted into the support with {label} "
                  "(Ctrl+Z undoes it).")
        return layer

    def watch(self, layer: Shapes) -> None:
        """Turn every rectangle added to ``layer`` from now on into paint."""
        layer = layers.unwrap(layer)
        if layer in self._watched:
            return
        self._watched.add(layer)
        layer.events.data.connect(self._on_data)
        layer.bind_key(UNDO_KEY, self._undo, overwrite=True)
        layer.bind_key(REDO_KEY, self._redo, overwrite=True)

    def close(self) -> None:
        """Stop listening and drop waiting boxes (the widget is closing)."""
        self.closed = True
        self._queue.clear()
        for layer in list(self._watched):
            layer.events.data.disconnect(self._on_data)
        if self.worker is not None:
            self.worker.quit()

    def release(self) -> None:
        """Let go of LiteMedSAM (the widget or its window is closed; see FewShotWidget.release)."""
        self._segmenter = None

    def _on_data(self, event) -> None:
        if str(getattr(event, "action", "")) not in ("added", "ActionType.ADDED") or self.closed:
            return
        shapes = event.source
        count = len(shapes.data)
        for i in sorted({i % count for i in getattr(event, "data_indices", (-1,)) if -count <= i < count}):
            if shapes.shape_type[i] == "rectangle":
                self._add_rectangle(shapes, np.array(shapes.data[i], copy=True))

    def _add_rectangle(self, shapes, vertices: np.ndarray) -> None:
        """A rectangle drawn in ``shapes``: map it onto the image and queue it (or say why not)."""
        try:
            image, support = self._targets()
            points = np.array([image.world_to_data(shapes.data_to_world(v)) for v in vertices])
            index = int(round(float(points[:, 0].mean()))) if points.shape[1] == 3 else 0
            box = np.array([points[:, -1].min(), points[:, -2].min(), points[:, -1].max(), points[:, -2].max()])
            self.queue(self._request(image, support, index, box, shapes, vertices))
        except FewShotError as exc:
            self._say(str(exc))
            self._remove_rectangle(shapes, vertices)

    # -- turning a box into paint ----------------------------------------------------------
    def paint_box(self, box, index: int | None = None):
        """Paint the object inside ``box`` (x0, y0, x1, y1 in the image's pixels) on slice ``index`` (default:
        the one on screen) into the support with its selected label, as a rectangle drawn there would.
        Returns True when queued (the paint arrives when the worker is done), False after saying why not."""
        try:
            image, support = self._targets()
            index = self.widget.current_slice() if index is None else int(index)
            self.queue(self._request(image, support, index, box))
            return True
        except FewShotError as exc:
            self._say(str(exc))
            return False

    def queue(self, request: BoxRequest) -> None:
        """Turn ``request`` into paint after those before it."""
        self._queue.append(request)
        self._next()

    def _targets(self):
        """(image, support) layers a box paints with, checked; FewShotError with the reason otherwise."""
        image, support = layers.unwrap(self.widget.image_layer), layers.unwrap(self.widget.support_layer)
        if image is None:
            raise FewShotError("Pick the image layer to draw boxes on first.")
        shape = layers.spatial_shape(image)
        if len(shape) not in (2, 3) or getattr(image, "multiscale", False):
            raise FewShotError(f"Boxes work on a 2D image, a 3D volume or an image set, not on {len(shape)}D data.")
        if support is None:
            raise FewShotError("Create or pick a support Labels layer first (New, beside Support): "
                               "boxes paint into it.")
        if tuple(support.data.shape) != shape:
            raise FewShotError(f"The support layer is {tuple(support.data.shape)} but the image is {shape}; "
                               "create a new support layer for this image.")
        layers.check_support(self.widget.viewer, support, image)  # never paints into another image's support
        layers.claim_support(support, image)
        return image, support

    def _request(self, image, support, index: int, box, shapes=None, vertices=None) -> BoxRequest:
        """A checked BoxRequest: the slice exists, the box is clipped to that slice's (an image set: that image's)
        own size, the support's label is paintable; FewShotError with the reason otherwise."""
        from ..core.box_to_mask import clip_box

        shape = layers.spatial_shape(image)
        if len(shape) == 3 and not 0 <= index < shape[0]:
            raise FewShotError("The box is not on a slice of the image; draw it on the image.")
        info = image_sets.set_info(image)
        plane = info.shapes[index] if info is not None else shape[-2:]
        return BoxRequest(image, support, index, clip_box(box, plane), self._label(support), shapes, vertices)

    def _label(self, support) -> int:
        label = int(support.selected_label)
        if label == 0:
            raise FewShotError("The support's selected label is 0 (background); pick the class's label to paint.")
        if label > np.iinfo(support.data.dtype).max:
            raise FewShotError(f"Label {label} does not fit the support layer's {support.data.dtype} data.")
        return label

    def _next(self) -> None:
        """Start the next queued box unless one is running."""
        if self.worker is not None or not self._queue or self.closed:
            return
        request = self._queue[0]
        image = request.image
        try:
            boxes = self._box_segmenter(image)
            planes = image_planes(image)
        except FewShotError as exc:
            self._finish(request, str(exc))
            return
        key = (image, planes.source, self.widget.params().modality)  # what the ImageStack (its window) depends on
        last = self._stack
        same = last is not None and last[0] is key[0] and last[1] is key[1] and last[2] == key[2]
        cached = last[3] if same else None
        loading = "" if boxes.loaded else "loading LiteMedSAM and "
        self._say(f"Box on {self._unit(request)}: {loading}finding the object...")
        self.worker = start(_box_job, boxes, planes, key[2], cached, request.index, request.box,
                            on_return=partial(self._on_return, request, key),
                            on_error=partial(self._on_error, request), on_finish=self._on_finish)

    def _box_segmenter(self, image):
        """A BoxSegmenter on the LiteMedSAM of ``image``'s segmenter (its session's, so the embeddings refinement
        computed serve boxes and the other way round); one of the tool's own for an image that is not the
        chosen one."""
        from ..core.box_to_mask import BoxSegmenter
        from ..core.devices import resolve_device

        session = self.widget.session if layers.unwrap(self.widget.image_layer) is image else None
        if session is not None:
            service = session.sam_service(self.widget.params(), busy=self.widget.busy)
            if self._segmenter is None or self._segmenter.service is not service:
                self._segmenter = BoxSegmenter(service=service)
            return self._segmenter
        device = resolve_device(self.ui.settings["device"].value)
        if self._segmenter is None or self._segmenter.device != device:
            self._segmenter = BoxSegmenter(device=str(device))
        return self._segmenter

    def _on_return(self, request: BoxRequest, key: tuple, value) -> None:
        if self.closed:
            return
        stack, mask = value
        self._stack = (*key, stack)
        self._finish(request, self._write(request, mask))
        self.widget.volumes.later()  # painted / predicted counts under the status line

    def _on_error(self, request: BoxRequest, exc: Exception) -> None:
        if isinstance(exc, FewShotError):
            message = str(exc)
        else:
            logger.error("Box to paint failed", exc_info=exc)
            message = f"Box to paint failed: {exc.__class__.__name__}: {exc}"
        self._finish(request, message)

    def _on_finish(self) -> None:
        self.worker = None
        QTimer.singleShot(0, self._next)

    def _finish(self, request: BoxRequest, message: str) -> None:
        if self._queue and self._queue[0] is request:
            self._queue.pop(0)
        self._say(message)
        if request.shapes is not None:
            self._remove_rectangle(request.shapes, request.vertices)
        if self.worker is None:
            QTimer.singleShot(0, self._next)

    def _write(self, request: BoxRequest, mask: np.ndarray) -> str:
        """Write ``mask`` ((H_i, W_i) bool, the slice's own size) into the support; returns what happened."""
        support, label, unit = request.support, request.label, self._unit(request)
        if support not in self.viewer.layers:
            return "The support layer was removed before the box was painted."
        where = (request.index,) if support.ndim == 3 else ()
        current = np.asarray(support.data[where])[: mask.shape[0], : mask.shape[1]]
        other = mask & (current != 0) & (current != label)
        rows, cols = np.nonzero(mask & (current == 0))
        if not len(rows):
            kept = " (it is all painted with another class)" if other.any() else ""
            return f"The box on {unit} found nothing new to paint with label {label}{kept}."
        indices = (np.full_like(rows, request.index), rows, cols) if support.ndim == 3 else (rows, cols)
        with support.block_history():
            support.data_setitem(indices, label)
        self.painted += 1
        kept = f"; {int(other.sum())} pixels of another class kept" if other.any() else ""
        if self.ui.support_mode() == "dense" and self.signed.sign(support, self._prediction(request.image),
                                                                  request.index):
            return (f"Box on {unit}: {len(rows)} pixels painted with label {label}{kept}; {unit} is signed and its "
                    "prediction shows the box's mask (Ctrl+Z undoes both).")
        return f"Box on {unit}: {len(rows)} pixels painted with label {label}{kept} (Ctrl+Z undoes it)."

    def _prediction(self, image):
        """The prediction layer of ``image`` (the chosen image's), or None."""
        chosen = layers.unwrap(self.widget.image_layer)
        return layers.unwrap(self.widget.prediction_layer) if chosen is image else None

    def _remove_rectangle(self, shapes, vertices) -> None:
        """Remove the rectangle with ``vertices`` from ``shapes`` (later if the user is drawing another)."""
        if shapes not in self.viewer.layers or self.closed:
            return
        if getattr(shapes, "_is_creating", False):
            QTimer.singleShot(RETRY_MS, partial(self._remove_rectangle, shapes, vertices))
            return
        for i, data in enumerate(shapes.data):
            if data.shape == vertices.shape and np.allclose(data, vertices):
                shapes.remove([i])
                return

    # -- undo from the boxes layer ---------------------------------------------------------
    def _undo(self, layer=None) -> None:
        self._step(layers.unwrap(self.widget.support_layer), undo=True)

    def _redo(self, layer=None) -> None:
        self._step(layers.unwrap(self.widget.support_layer), undo=False)

    def _step(self, support, undo: bool) -> None:
        """Undo (redo) ``support``'s last edit, and bring the predictions boxes replaced in step."""
        support = layers.unwrap(support)
        if support is None:
            return
        if undo:
            support.undo()
        else:
            support.redo()
        restored, signed = self.signed.sync(support)
        for where in restored:
            self._say(f"Undone: {self._unit_of(where)} is no longer signed and shows its prediction again.")
        for where in signed:
            self._say(f"Redone: {self._unit_of(where)} is signed again and shows the box's mask.")
        self.widget.volumes.later()

    def _unit_of(self, where: tuple) -> str:
        image = layers.unwrap(self.widget.image_layer)
        return "the image" if not where or image is None else self._unit(BoxRequest(image, None, where[0], None, 0))

    def _bind_undo(self, support) -> None:
        """Ctrl+Z / Shift+Ctrl+Z on the support layer itself also keep the replaced predictions in step."""
        support.bind_key(UNDO_KEY, partial(self._step, undo=True), overwrite=True)
        support.bind_key(REDO_KEY, partial(self._step, undo=False), overwrite=True)

    # -- wording ---------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if not self.closed:
            self.ui.status_label.setText(message)

    def _unit(self, request: BoxRequest) -> str:
        info = image_sets.set_info(request.image)
        if info is not None and 0 <= request.index < len(info):
            return f"image {info.names[request.index]}"
        return f"slice {request.index}" if len(layers.spatial_shape(request.image)) == 3 else "the image"


def _box_job(boxes, image: ImagePlanes, modality: str, stack, index: int, box: np.ndarray):
    """Worker: (ImageStack, (H_i, W_i) bool mask) for ``box`` on slice ``index`` of ``image`` (taken on the Qt
    thread); the stack (its intensity window) is built once per image and reused."""
    from ..core.stack import ImageStack

    if stack is None:
        stack = ImageStack(image.planes, modality, image.rgb)
    if not 0 <= index < len(stack):
        raise FewShotError("The box is not on a slice of the image; draw it on the image.")
    yield
    return stack, boxes.slice_mask(stack, index, box)
