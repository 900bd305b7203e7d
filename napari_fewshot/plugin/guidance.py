"""What the panel tells a new user before any job has run, and the choices it makes for them.

- The status line says the next step (open an image; press New; paint, then Segment) while it shows
  no job's outcome: a job's message is never overwritten (only the hints below are replaced).
- When a sample or image set opens with a hidden reference layer, napari makes that last-added
  layer the active one; the image is selected instead, so the user starts on the scan.
- Units: an image set's first axis counts images, not slices (scope choices, range, hints); its
  file name shows at the top of the canvas (napari's notifications cover the bottom right).
- Scribble mode's background label: napari paints with label 1 by default, so a background label of
  1 would turn the first organ painted into background. The default is the first label above every
  class in use (painted or named), set when scribble mode is chosen and kept up to date until the
  user picks a value; the panel's spin box shows it ("background label N").
"""

from __future__ import annotations

import re

import numpy as np
from qtpy.QtCore import QTimer

from . import ROLE_KEY, image_sets, layers

HINT_NO_IMAGE = "Open an image (File > Open, or File > Open Sample > napari-fewshot)."
HINT_NO_SUPPORT = "Press New (next to Support) to add a support layer over the image, then paint a few {units}."
HINT_PAINT = "Paint on a few {units} of the support layer (one label per class), then press Segment."
HINT_SCRIBBLE = ("Scribbles: paint each class with its label and some background with label {label} "
                 "(the background label in the panel), then press Segment.")
# The panel's first words, and every hint: what may be replaced by a newer hint.
_INITIAL = "Pick an image, paint a few slices of the support, press Segment."


class Guidance:
    """Keeps the hint, the selected layer after an open and the scribble background label; owned by the widget."""

    def __init__(self, widget):
        self.widget, self.viewer, self.ui = widget, widget.viewer, widget.ui
        self._hints = {_INITIAL}
        self._auto_background: int | None = None  # the value we last chose (None: the user's choice stands)
        self._closed = False
        events = self.viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._later)
        self.ui.image_combo.currentTextChanged.connect(self._later)
        self.ui.support_combo.currentTextChanged.connect(self._later)
        self.ui.settings["support_mode"].changed.connect(self._later)
        self.ui.settings["background_label"].changed.connect(self._background_edited)
        select_image_over_reference(self.viewer, widget.image_layer)  # the widget opened after a sample
        self.refresh()

    def close(self) -> None:
        self._closed = True
        events = self.viewer.layers.events
        events.inserted.disconnect(self._on_inserted)
        events.removed.disconnect(self._later)

    def _on_inserted(self, event) -> None:
        # napari selects the inserted layer after this event: act once the opening is over.
        if event.value.metadata.get(ROLE_KEY) == "reference":
            QTimer.singleShot(0, self._select_image)
        self._later()

    def _select_image(self) -> None:
        if not self._closed:
            select_image_over_reference(self.viewer, self.widget.image_layer)
            self.refresh()

    def _later(self, *_) -> None:
        QTimer.singleShot(0, self.refresh)

    def refresh(self) -> None:
        """Update the units, the image name, the scribble background label (unless the user set it) and the hint."""
        if self._closed or self.widget.runner.closed:
            return
        try:
            self._refresh()
        except RuntimeError:  # a refresh queued while the window closed: its Qt objects are gone
            self._closed = True

    def _refresh(self) -> None:
        image, support = self.widget.image_layer, self.widget.support_layer
        image_sets.name_units(self.ui, image)
        image_sets.show_image_name(self.viewer, image)  # also when the set opened with the widget docked
        scribble = self.ui.support_mode() == "scribble"
        background = self.ui.settings["background_label"]
        if scribble and (self._auto_background is not None or background.value == 1):
            self._auto_background = default_background(support, image)  # before setting it: not the user's edit
            background.value = self._auto_background
        self.show(hint(image, support, background.value if scribble else None))

    def show(self, text: str) -> None:
        """Put ``text`` in the status line unless it shows something else than a hint (a job's outcome)."""
        label = self.ui.status_label
        if label.text() in self._hints and label.text() != text:
            label.setText(text)
        self._hints.add(text)

    def _background_edited(self, value: int) -> None:
        if value != self._auto_background:
            self._auto_background = None  # the user's own choice: never changed behind their back


def device_message(exc) -> str:
    """The core's device error worded for the panel: the Device list, not the command line's ``--device``."""
    return re.sub(r"use (--device )?cpu or auto\.$", "choose cpu or auto in the Device list (Settings).", str(exc))


def hint(image, support, background: int | None) -> str:
    """The next step for a user with ``image`` / ``support`` chosen (None: none); ``background``: the
    scribble background label (None in dense mode)."""
    units = "images" if image_sets.set_info(image) is not None else "slices"
    if image is None:
        return HINT_NO_IMAGE
    if support is None:
        return HINT_NO_SUPPORT.format(units=units)
    if background is not None:
        return HINT_SCRIBBLE.format(label=background)
    return HINT_PAINT.format(units=units)


def default_background(support, image) -> int:
    """A scribble background label no class uses: one above the highest label painted in ``support``
    or named on it or on ``image`` (at least 2, since napari paints with 1 by default)."""
    used = set(layers.class_names(support, image))
    if support is not None:
        data = np.asarray(support.data)
        if data.size:
            used.add(int(data.max()))
    return max([1, *used]) + 1


def select_image_over_reference(viewer, image) -> None:
    """Make ``image`` the active layer when the active one is a hidden reference layer (napari selects
    the last layer a sample or reader added, and a sample's last is its reference labels)."""
    active = viewer.layers.selection.active
    if (image is not None and active is not None and active.metadata.get(ROLE_KEY) == "reference"
            and not active.visible and image in viewer.layers):
        viewer.layers.selection.active = image
