"""Live mode: re-segment the visible slice shortly after the user paints or changes slice.

Strokes, fills, undo/redo (the support layer's paint / data / set_data events) and moving the
slice slider restart a single-shot timer; when it fires the widget segments the visible slice
from the cached features (only slices never seen before go through the encoder).
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

DELAY_MS = 300


class LiveMode(QObject):
    """Debounces edit events into calls of ``run`` while ``enabled()`` says so."""

    def __init__(self, run: Callable[[], None], enabled: Callable[[], bool], parent: QObject | None = None):
        super().__init__(parent)
        self._enabled = enabled
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DELAY_MS)
        self.timer.timeout.connect(run)
        self.dirty = False  # an update was asked for while the segmenter was busy
        self._layer = None

    def schedule(self, *_) -> None:
        """(Re)start the timer when live mode is on."""
        if self._enabled():
            self.timer.start()

    def retry_if_dirty(self) -> None:
        """Run the update that was skipped while busy."""
        if self.dirty and self._enabled():
            self.dirty = False
            self.timer.start()

    def watch(self, layer) -> None:
        """Follow the edits of ``layer`` (the support), forgetting the previous one."""
        if layer is self._layer:
            return
        for target, method in ((self._layer, "disconnect"), (layer, "connect")):
            if target is not None:
                for event in (target.events.paint, target.events.data, target.events.set_data):
                    getattr(event, method)(self.schedule)
        self._layer = layer
