"""Never lose painted work: autosave the widget's support layers, offer the paint back on reopening.

Every support Labels layer the widget is pointed at (chosen in its Support box, created with New,
or restored) is watched from then on. A completed stroke (napari's ``paint`` event fires at the end
of a stroke, fill or erase), a replaced array (``data``) and undo/redo (``set_data``) restart a
single-shot timer; when it fires, the painted slices are copied on the Qt thread (~10 ms for
600 x 512 x 512) and, when they differ from the last save, written by one background thread through
:class:`~napari_fewshot.io.autosave.AutosaveStore`, keyed by the image's pixel signature.

The signature of each image the widget is pointed at is computed once, in that thread (~0.4 s for
600 x 512 x 512 uint16). When saves of that scan exist (the same scan opened again, or after a
crash), a notification says so and the panel's "Restore painting" button adds the newest one that fits
the image (a save of another shape is passed over for an older one) as a new Labels layer; no existing
layer is ever changed, and a save that cannot be restored or read ends in one warning, never a traceback.
Closing the widget writes what is pending.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from ..io.autosave import AutosaveStore, Painted, Snapshot, scan_signature
from . import layers

DELAY_MS = 500
MAX_DELAY_S = 3.0  # edits that keep coming (e.g. set_data while scrolling) postpone a save at most this long
RESTORED = " (restored)"
logger = logging.getLogger(__name__)


@dataclass
class _Scan:
    """What is known about one image layer: its signature (None while computed) and unrestored saves."""

    layer: object  # napari.layers.Image
    generation: int = 0  # bumped when the image's data changes; older signature results are dropped
    signature: str | None = None
    snapshots: list[Snapshot] = field(default_factory=list)  # newest first


class SupportAutosave(QObject):
    """Autosaves the supports of ``widget`` (a FewShotWidget) into ``store``, debounced by ``delay_ms``."""

    _found = Signal(object, object, object)  # (id(image), generation, (signature, snapshots, problems)), from the thread
    _failed = Signal(object, str)  # ((signature, name), message), from the thread

    def __init__(self, widget, store: AutosaveStore | None = None, delay_ms: int = DELAY_MS):
        super().__init__(widget)
        self.widget, self.viewer, self.store = widget, widget.viewer, store or AutosaveStore()
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.flush)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-fewshot-autosave")
        self._scans: dict[int, _Scan] = {}  # id(image layer) -> _Scan
        self._watched: dict[int, tuple] = {}  # id(support) -> (support, image, edit callback)
        self._dirty: set[int] = set()  # ids of watched supports edited since their last save
        self._saved: dict[tuple[str, str], Painted] = {}  # (signature, layer name) -> last paint written
        self._warned: set[str] = set()
        self._closed = False
        self._waiting_since = 0.0  # when the pending save was first asked for
        self._found.connect(self._on_found)
        self._failed.connect(self._on_failed)
        ui = widget.ui
        ui.restore_button.clicked.connect(self.restore)
        ui.image_combo.currentTextChanged.connect(self.update)
        ui.support_combo.currentTextChanged.connect(self.update)
        self.viewer.layers.events.inserted.connect(self.update, position="last")
        self.viewer.layers.events.removed.connect(self._on_removed)
        self.update()

    def signature_of(self, image) -> str | None:
        """The pixel signature of an image layer, once computed (None before)."""
        scan = self._scans.get(id(layers.unwrap(image)))
        return scan.signature if scan is not None else None

    def update(self, *_) -> None:
        """Follow the widget's current image (signature, saves found) and support (watched from now on)."""
        if self._closed:
            return
        image, support = layers.unwrap(self.widget.image_layer), layers.unwrap(self.widget.support_layer)
        if image is not None and id(image) not in self._scans:
            self._scans[id(image)] = _Scan(image)
            image.events.data.connect(self._image_changed)
            self._find(self._scans[id(image)])
        if (image is not None and support is not None and id(support) not in self._watched
                and tuple(support.data.shape) == layers.spatial_shape(image)):
            callback = partial(self._edited, id(support))
            _edit_events(support, "connect", callback)
            self._watched[id(support)] = (support, image, callback)
        self._update_button()

    def flush(self, final: bool = False) -> None:
        """Save every edited support whose scan signature is known (``final``: compute missing ones now)."""
        for key in sorted(self._dirty):
            support, image, _ = self._watched[key]
            scan = self._scans.get(id(image))
            if scan is not None and scan.signature is None and final:
                with contextlib.suppress(Exception):  # e.g. multiscale: no signature, no autosave
                    scan.signature = scan_signature(image.data)
            if scan is None or scan.signature is None:
                continue  # saved when the signature arrives
            self._dirty.discard(key)
            if tuple(support.data.shape) != layers.spatial_shape(image):
                continue
            painted = Painted.from_labels(support.data)
            slot = (scan.signature, support.name)
            if slot in self._saved and self._saved[slot].equals(painted):
                continue  # e.g. set_data from scrolling: nothing new to write
            self._saved[slot] = painted
            self._thread.submit(self._write, slot, painted)

    def restore(self):
        """Add the newest unrestored save of the current image as a new Labels layer and show its first painted
        slice (the view may stand on an unpainted one); returns the layer (or None)."""
        image = layers.unwrap(self.widget.image_layer)
        scan = self._scans.get(id(image)) if image is not None else None
        if scan is None or not scan.snapshots:
            show_info("There is no autosaved painting of this image to restore.")
            return None
        shape = layers.spatial_shape(image)
        scan.snapshots = [s for s in scan.snapshots if s.painted.shape == shape]  # (found for this shape)
        if not scan.snapshots:
            self._update_button()
            show_info("There is no autosaved painting of this image's shape to restore.")
            return None
        snapshot = scan.snapshots.pop(0)
        self._update_button()
        layer = self._add_restored(image, snapshot)
        if layer is None:
            return None
        self.widget.set_support_layer(layer)
        self.viewer.layers.selection.active = layer
        if len(snapshot.painted.indices) and layer.ndim >= 3:
            first = layer.data_to_world([int(snapshot.painted.indices[0])] + [0] * (layer.ndim - 1))
            self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim, float(first[0]))
        n = len(snapshot.painted.indices)
        show_info(f"Restored {n} painted slice{'s' * (n != 1)} into the new layer '{layer.name}'.")
        return layer

    def _add_restored(self, image, snapshot: Snapshot):
        """A new Labels layer over ``image`` holding ``snapshot``'s paint, or None (after one warning) when
        it cannot be built; no other layer is touched either way."""
        layer = None
        try:
            labels = snapshot.painted.to_labels()
            name = snapshot.name if snapshot.name.endswith(RESTORED) else snapshot.name + RESTORED
            layer = layers.create_support(self.viewer, image, name=name)
            layer.data = labels
            return layer
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: one sentence, no traceback
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
            show_warning(f"The painting autosaved at {_when(snapshot)} could not be restored "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())}).")
            return None

    def close(self) -> None:
        """Write pending edits, wait for the writes, stop listening (the widget is closing)."""
        if self._closed:
            return
        self.timer.stop()
        self.flush(final=True)
        self._closed = True
        self._thread.shutdown(wait=True)
        for support, _, callback in self._watched.values():
            _edit_events(support, "disconnect", callback)
        for scan in self._scans.values():
            scan.layer.events.data.disconnect(self._image_changed)
        self.viewer.layers.events.inserted.disconnect(self.update)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        self._watched.clear()
        self._scans.clear()

    # -- internals -----------------------------------------------------------------------------
    def _edited(self, key: int, *_) -> None:
        if self._closed:
            return
        self._dirty.add(key)
        if not self.timer.isActive():
            self._waiting_since = time.monotonic()
            self.timer.start()
        elif time.monotonic() - self._waiting_since < MAX_DELAY_S:
            self.timer.start()  # restart: save once the edits pause

    def _find(self, scan: _Scan) -> None:
        """Compute ``scan``'s signature and look for its saves, in the background thread."""
        self._thread.submit(self._signature_job, id(scan.layer), scan.generation, scan.layer.data,
                            layers.spatial_shape(scan.layer))

    def _signature_job(self, key: int, generation: int, data, shape: tuple[int, ...]) -> None:
        """(Thread) the signature of ``data`` and the saves that fit an image of ``shape``."""
        try:
            signature = scan_signature(data)
        except Exception:  # noqa: BLE001 - e.g. a multiscale image: no autosave, but no crash either
            logger.warning("No autosave for this image: its signature could not be computed.", exc_info=True)
            return
        problems: list[str] = []
        try:
            snapshots = self.store.snapshots(signature, problems, shape)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable folder: say so, keep autosaving
            snapshots = []
            problems.append(f"The autosave folder could not be searched ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())}).")
        self._found.emit(key, generation, (signature, snapshots, problems))

    def _on_found(self, key: int, generation: int, found) -> None:
        scan = self._scans.get(key)
        if self._closed or scan is None or scan.generation != generation:
            return
        scan.signature, scan.snapshots, problems = found
        for problem in problems:
            show_warning(problem)
        if scan.snapshots:
            n = len(scan.snapshots[0].painted.indices)
            show_info(f"Found painting from {_when(scan.snapshots[0])} for this scan ({n} slice{'s' * (n != 1)}). "
                      "Click 'Restore painting' to bring it back.")
        self._update_button()
        if self._dirty:
            self.flush()  # edits made while the signature was computed

    def _write(self, slot: tuple[str, str], painted: Painted) -> None:
        try:
            self.store.save(slot[0], painted, name=slot[1])
        except Exception as exc:  # noqa: BLE001 - reported, and retried at the next edit
            self._failed.emit(slot, f"Autosave of '{slot[1]}' failed: {' '.join(str(exc).split())}.")

    def _on_failed(self, slot: tuple[str, str], message: str) -> None:
        self._saved.pop(slot, None)  # the next edit tries again
        if message not in self._warned:
            self._warned.add(message)
            show_warning(message)

    def _image_changed(self, event) -> None:
        scan = self._scans.get(id(layers.unwrap(event.source)))
        if scan is not None:
            scan.generation += 1
            scan.signature, scan.snapshots = None, []
            self._find(scan)

    def _on_removed(self, event) -> None:
        layer = layers.unwrap(event.value)
        pairs = [k for k, (s, i, _) in self._watched.items() if s is layer or i is layer]
        if any(k in self._dirty for k in pairs):
            self.flush(final=True)  # a removed layer's last strokes are saved, not dropped
        for key in pairs:
            support, _, callback = self._watched.pop(key)
            self._dirty.discard(key)
            _edit_events(support, "disconnect", callback)
        scan = self._scans.pop(id(layer), None)
        if scan is not None:
            layer.events.data.disconnect(self._image_changed)
        self._update_button()

    def _update_button(self) -> None:
        scan = self._scans.get(id(layers.unwrap(self.widget.image_layer)))
        self.widget.ui.restore_button.setEnabled(bool(scan is not None and scan.snapshots))


def _when(snapshot: Snapshot) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(snapshot.saved_at))


def _edit_events(support, method: str, callback) -> None:
    """(Dis)connect ``callback`` to a Labels layer's stroke/fill (paint), replace (data) and undo (set_data) events."""
    for event in (support.events.paint, support.events.data, support.events.set_data):
        getattr(event, method)(callback)
