"""The correction loop: paint a few slices, Segment all, look, correct the wrong slices, segment again.

- **A stroke on a predicted slice starts from the prediction** (dense support mode only, where a
  painted slice is complete and its unpainted pixels are background). When a brush, eraser, fill or
  polygon press lands on a support slice that has no paint yet and the prediction layer has labels
  there, the slice first takes the prediction of that slice; napari's stroke then applies on top. So a
  stroke changes exactly the pixels it touches, as on any Labels layer, and a fill or an erase acts on
  the prediction the user sees. The seeding happens on the mouse press (a viewer mouse callback, which
  napari runs before the layer's own painting callbacks), not after the stroke: a fill or an erase on
  an empty slice would do nothing useful. Undo: the seeding is one undo item, and when the stroke's
  undo item arrives (the layer's ``paint`` event) the two are merged into one, so one Ctrl+Z restores
  the unpainted slice. The merge needs napari's private ``_undo_history`` (undo_history.py); where that is not there (or
  looks different), the seeding and the stroke stay two undo steps and the status line says so.
- **Accept slice** (Shift+A) copies the prediction of the visible slice into its unpainted pixels, in one
  undo step (scribble mode: the predicted background gets the background label).
- **Check next** (Shift+N) moves to the predicted slice the last whole-volume result is least sure about
  (``SegmentationResult.check_order``; an image set: the image most likely missed, by its estimated 1 - Dice,
  see core/uncertainty.py), skipping painted slices, slices marked free of every class and those already
  checked since.
- **Slices free of every class** (dense mode): an unpainted slice is not support, so "no organ here" needs a
  mark, kept in the support layer's ``metadata[EMPTY_SLICES_KEY]`` (sorted slice indices) and passed to the
  core as ``empty_slices`` (support slices, all background; paint on a marked slice wins over the mark). A
  slice is marked when a correction that started from the prediction leaves it unpainted (the user erased
  the whole false positive; Ctrl+Z of that stroke takes the mark back), and when Accept slice is used on a
  slice predicted empty (Accept slice again takes the mark back).

Scripts that write into the support (``data_setitem``, ``layer.data[...] =``) are never seeded: only
the user's presses on the canvas are.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import QObject

from . import EMPTY_SLICES_KEY, layers
from .image_sets import set_info
from .session import painted_slices
from .undo_history import atom_slices, history_state, last_undo_item, merge_into

EDIT_MODES = frozenset({"paint", "erase", "fill", "polygon"})
ACCEPT_KEY = "Shift-A"  # napari binds Shift+A only for Points layers (select all in slice)
NEXT_KEY = "Shift-N"  # free in napari


@dataclasses.dataclass
class _Seed:
    """A seeding whose undo item waits for the stroke's, to be merged with it."""

    layer: object  # napari.layers.Labels (unwrapped)
    index: int  # the slice
    item: object  # the seeding's undo item (a list of history atoms), None when history is not reachable


class Corrections(QObject):
    """Seeds strokes on predicted slices, accepts slices, walks the slices to check; owned by the widget."""

    def __init__(self, widget):
        super().__init__(widget)
        self.widget, self.viewer, self.ui = widget, widget.viewer, widget.ui
        self._pending: _Seed | None = None
        self._seeding = False  # True while the seeding's own paint event is emitted
        # per support layer: slices seeded from the prediction (an erase that empties one marks it free of every
        # class), and the undo atom of each such mark (the mark lasts while that stroke is not undone)
        self._seeded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._mark_atoms: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.viewer.mouse_drag_callbacks.append(self._on_press)
        self.viewer.bind_key(ACCEPT_KEY, self._accept_key, overwrite=True)
        self.viewer.bind_key(NEXT_KEY, self._next_key, overwrite=True)
        self.ui.accept_button.clicked.connect(self.accept_slice)
        self.ui.check_next_button.clicked.connect(self.check_next)
        self.ui.image_combo.currentTextChanged.connect(self.update_buttons)
        self.update_buttons()

    def close(self) -> None:
        """Let go of the viewer's mouse callback and keys (the widget is closing)."""
        self._forget_pending()
        for layer in list(self._seeded):
            layer.events.paint.disconnect(self._on_paint)
        if self._on_press in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_press)
        for key, func in ((ACCEPT_KEY, self._accept_key), (NEXT_KEY, self._next_key)):
            bound = self.viewer.keymap.get(coerce_keybinding(key))
            if bound == func:
                self.viewer.bind_key(key, None)

    # -- results ---------------------------------------------------------------------------
    def corrected_slices(self, support) -> set[int]:
        """The slices of ``support`` that started from the prediction (a stroke corrected them)."""
        return set(self._seeded.get(layers.unwrap(support), ())) if support is not None else set()

    def remember(self, session, result, whole: bool) -> None:
        """Keep a whole-volume result (its uncertainty orders Check next) and start a new round of checks."""
        if not whole or session is None:
            return
        session.last_result = _light(result) if getattr(result, "uncertainty", None) else None
        session.checked = set()
        self.update_buttons()

    def update_buttons(self, *_) -> None:
        """Check next is enabled once the chosen image has a whole-volume result."""
        session = self.widget.session
        self.ui.check_next_button.setEnabled(session is not None and session.last_result is not None)

    # -- seeding strokes -------------------------------------------------------------------
    def _on_press(self, viewer, event) -> None:
        """Viewer mouse press (runs before the layer's painting callbacks): seed the slice if due."""
        support = layers.unwrap(self.widget.support_layer)
        index = self._edited_slice(support, event)
        pending = self._pending
        if (pending is not None and pending.layer is support and pending.index == index
                and pending.item is not None and last_undo_item(support) is pending.item):
            return  # the slice's first edit is still to come (e.g. the next vertex of a polygon)
        self._forget_pending()
        prediction = layers.unwrap(self.widget.prediction_layer)
        if (index is None or prediction is None or prediction.data.shape != support.data.shape
                or np.any(support.data[index]) or not np.any(prediction.data[index])):
            return
        self.seed(support, prediction, index)

    def _edited_slice(self, support, event) -> int | None:
        """The slice of ``support`` this press edits with napari's brush, eraser, fill or polygon, when it
        is the active layer in dense mode and one slice is on screen; otherwise None."""
        if (support is None or self.ui.support_mode() != "dense" or support.ndim != 3
                or not layers.same_layer(self.viewer.layers.selection.active, support)
                or str(support.mode) not in EDIT_MODES or support.cursor == "circle_frozen"
                or getattr(event, "button", 1) not in (1, 2)):
            return None
        if self.viewer.dims.ndim - support.ndim in tuple(event.dims_displayed):
            return None  # the slice axis is on screen (3D view or a rolled axis): no single slice is edited
        index = int(round(float(support.world_to_data(event.position)[0])))
        return index if 0 <= index < support.data.shape[0] else None

    def seed(self, support, prediction, index: int) -> None:
        """Give the unpainted slice ``index`` of ``support`` the prediction's labels, as one undo item; the
        next stroke's undo item is merged into it."""
        plane = np.asarray(prediction.data[index])
        rows, cols = np.nonzero(plane)
        values = plane[rows, cols]
        if values.max() > np.iinfo(support.data.dtype).max:
            self.ui.status_label.setText(f"The prediction of {self._unit(index)} has labels the support layer "
                                         "cannot hold; the stroke starts from an unpainted slice.")
            return
        self._seeding = True
        try:
            with support.block_history():
                support.data_setitem((np.full_like(rows, index), rows, cols), values.astype(support.data.dtype))
        finally:
            self._seeding = False
        self._pending = _Seed(support, index, last_undo_item(support))
        support.events.paint.connect(self._on_stroke)
        self._seeded.setdefault(support, set()).add(index)
        support.events.paint.connect(self._on_paint)  # no-op when connected already
        self.ui.status_label.setText(f"{self._unit(index, capital=True)} now counts as support: it started from the "
                                     "prediction (Ctrl+Z undoes it).")

    def _on_stroke(self, event) -> None:
        """The stroke after a seeding was committed: merge both into one undo item."""
        seed = self._pending
        if seed is None or self._seeding:
            return
        self._forget_pending()
        merged = merge_into(seed.layer, seed.item, seed.index)
        undo = "Ctrl+Z undoes both" if merged else "Ctrl+Z twice undoes both"
        self.ui.status_label.setText(f"{self._unit(seed.index, capital=True)} now counts as support: it started "
                                     f"from the prediction and your stroke corrected it ({undo}).")
        self._check_emptied(seed.layer, event.value)

    def _on_paint(self, event) -> None:
        """A stroke on a support layer that has seeded slices: mark those it left unpainted (free of every class)."""
        layer = event.source
        if self._seeding or (self._pending is not None and self._pending.layer is layer):
            return  # the seeding itself, or the first stroke after it (_on_stroke handles that one)
        self._check_emptied(layer, event.value)

    def _check_emptied(self, layer, item) -> None:
        """Mark the seeded slices the undo ``item`` (a list of history atoms) edited and left unpainted."""
        seeded = self._seeded.get(layer, set())
        atoms = item if isinstance(item, list) and item else None
        touched = [atom_slices(atom) for atom in atoms] if atoms else [None]
        edited = seeded if any(t is None for t in touched) else seeded & set().union(*touched)
        for index in sorted(edited):
            if 0 <= index < len(layer.data) and not np.any(layer.data[index]):
                if self._set_mark(layer, index, True, atoms[-1] if atoms else None):
                    self.ui.status_label.setText(
                        f"{self._unit(index, capital=True)} marked as free of every class: you erased all of its "
                        "prediction, so it now counts as support (background) (Ctrl+Z undoes it).")

    # -- slices free of every class --------------------------------------------------------
    def empty_slices(self, support=None) -> tuple[int, ...]:
        """The slices of ``support`` (default: the support layer) marked free of every class, brought up to date
        with the undo history first (a mark whose erasing stroke was undone is dropped, a redo brings it back)."""
        support = layers.unwrap(self.widget.support_layer if support is None else support)
        if support is None or support.ndim != 3:
            return ()
        marks = {int(i) for i in support.metadata.get(EMPTY_SLICES_KEY, ())}
        records = self._mark_atoms.get(support, {})
        for index, atom in list(records.items()):
            state = history_state(support, atom)
            if state == "done":
                marks.add(index)
            elif state in ("undone", "gone"):
                marks.discard(index)
            if state in ("gone", "unknown"):
                del records[index]  # undone and replaced by a newer edit, or no longer traceable: as it is now
        marks = sorted(i for i in marks if 0 <= i < support.data.shape[0])
        if marks or EMPTY_SLICES_KEY in support.metadata:
            support.metadata[EMPTY_SLICES_KEY] = marks
        return tuple(marks)

    def _set_mark(self, support, index: int, marked: bool, atom=None) -> bool:
        """Mark (or unmark) slice ``index`` of ``support`` free of every class; ``atom``: the undo atom of the stroke
        that emptied it (None: a mark made by hand). Returns True when the marks changed."""
        marks = set(self.empty_slices(support))
        records = self._mark_atoms.setdefault(support, {})
        if marked and index in marks and (atom is None or records.get(index) is atom):
            return False
        records.pop(index, None)
        if marked and atom is not None:
            records[index] = atom
        changed = (index in marks) != marked
        (marks.add if marked else marks.discard)(index)
        support.metadata[EMPTY_SLICES_KEY] = sorted(marks)
        return changed or atom is not None

    def _forget_pending(self) -> None:
        if self._pending is not None:
            self._pending.layer.events.paint.disconnect(self._on_stroke)
            self._pending = None

    # -- accept slice ----------------------------------------------------------------------
    def accept_slice(self) -> bool:
        """Sign the visible slice as support by copying its prediction into the unpainted pixels (one undo
        step): a slice the model got right counts as painted without painting it. Returns True when the
        support changed."""
        support, prediction = layers.unwrap(self.widget.support_layer), layers.unwrap(self.widget.prediction_layer)
        index = self.widget.current_slice()
        problem = self._accept_problem(support, prediction, index)
        if problem is not None:
            self.ui.status_label.setText(problem)
            return False
        where = (index,) if support.ndim == 3 else ()
        if not np.any(prediction.data[where]):  # dense mode, a 3D support (see _accept_problem)
            return self._toggle_empty(support, index)
        current = np.asarray(support.data[where])
        accepted = self._accepted(np.asarray(prediction.data[where]), index, current.dtype)
        target = np.where(current != 0, current, accepted)  # paint already there (scribbles) stays
        changed = np.nonzero(current != target)
        if not changed[0].size:
            self.ui.status_label.setText(f"{self._unit(index, capital=True)} already matches its prediction.")
            return False
        indices = (np.full_like(changed[0], index), *changed) if support.ndim == 3 else changed
        with support.block_history():
            support.data_setitem(indices, target[changed])
        self.ui.status_label.setText(f"{self._unit(index, capital=True)} now counts as support, as predicted "
                                     "(Ctrl+Z undoes it).")
        return True

    def _accept_problem(self, support, prediction, index: int) -> str | None:
        """Why Accept slice cannot run on slice ``index`` (one sentence), or None."""
        if support is None:
            return "Pick or create the support layer first."
        if prediction is None:
            return "Segment first: there is no prediction to accept."
        if prediction.data.shape != support.data.shape:
            return "The prediction does not have the support's shape; segment again."
        where = (index,) if support.ndim == 3 else ()
        unit = self._unit(index, capital=True)
        if self.ui.support_mode() == "dense" and np.any(support.data[where]):
            return f"{unit} is painted already: it counts as support as it is."
        plane = np.asarray(prediction.data[where])
        if not np.any(plane):
            if self.ui.support_mode() == "dense" and support.ndim == 3:
                return None  # Accept slice marks it free of every class
            return f"{unit} has no predicted labels to accept."
        if plane.max() > np.iinfo(support.data.dtype).max:
            return f"{unit} has predicted labels the support layer cannot hold."
        return None

    def _toggle_empty(self, support, index: int) -> bool:
        """Accept slice on a slice predicted empty: mark it free of every class, or take back its mark."""
        unit = self._unit(index, capital=True)
        if index in self.empty_slices(support):
            self._set_mark(support, index, False)
            self.ui.status_label.setText(f"{unit} is no longer marked as free of every class; unpainted, it is not "
                                         "support any more.")
        else:
            self._set_mark(support, index, True)
            self.ui.status_label.setText(f"{unit} marked as free of every class; it now counts as support "
                                         "(background). Accept slice (Shift+A) again takes the mark back.")
        return True

    def _accepted(self, plane: np.ndarray, index: int, dtype) -> np.ndarray:
        """The prediction ``plane`` as support; in scribble mode its background is painted with the background
        label (inside the image: an image set's padding stays 0)."""
        plane = plane.astype(dtype)
        if self.ui.support_mode() == "scribble":
            region = np.zeros(plane.shape, bool)
            info = set_info(self.widget.image_layer)
            height, width = info.shapes[index] if info is not None else plane.shape
            region[:height, :width] = True
            plane[region & (plane == 0)] = self.ui.settings["background_label"].value
        return plane

    def _accept_key(self, viewer=None) -> None:
        self.accept_slice()

    # -- check next ------------------------------------------------------------------------
    def check_next(self) -> int | None:
        """Move the viewer to the predicted slice the last whole-volume result is least sure about, leaving
        out painted slices and those already checked since that result. Returns the slice (None: none left)."""
        session = self.widget.session
        result = session.last_result if session is not None else None
        if result is None:
            self.ui.status_label.setText("Segment all slices first: Check next follows that result's uncertainty.")
            return None
        painted = set(self._painted()) | set(self.empty_slices())
        order = result.check_order(exclude=painted | session.checked)
        if not order:
            self.ui.status_label.setText(f"Every predicted {self._noun()} has been checked or painted since the last "
                                         "segmentation; Segment again to check the new prediction.")
            return None
        index = int(order[0])
        session.checked.add(index)
        self._go_to(index)
        from ..core import uncertainty
        from ..core.ambiguity import check_next_reason
        from ..core.standout import standout_sign

        wrong = float(result.uncertainty.get(index, 0.0))
        rival = getattr(result, "ambiguity", {}).get(index)  # images: how close another object scored
        plain = standout_sign(getattr(result, "standout", {}).get(index))  # images: the drawn object barely stands out
        estimate = (check_next_reason(wrong, rival, uncertainty.AMBIGUITY_WEIGHT, plain, uncertainty.STANDOUT_WEIGHT)
                    if self._noun() == "image" else f"about {wrong:.0f} pixels may be wrong")  # 1 - Dice for images
        fix = "a box (Box → paint) or a stroke" if self._noun() == "image" else "a stroke"
        self.ui.status_label.setText(
            f"{self._unit(index, capital=True)}: the least sure of {len(order)} left ({estimate}); correct it with "
            f"{fix}, Accept slice (Shift+A) if it is right, or Check next (Shift+N).")
        return index

    def _next_key(self, viewer=None) -> None:
        self.check_next()

    def _painted(self) -> list[int]:
        support, image = self.widget.support_layer, self.widget.image_layer
        if support is None or image is None or tuple(support.data.shape) != layers.spatial_shape(image):
            return []
        return painted_slices(support.data) if support.ndim == 3 else []

    def _go_to(self, index: int) -> None:
        """Show slice ``index`` of the chosen image (its first axis, in world coordinates)."""
        image = self.widget.image_layer
        point = np.zeros(image.ndim)
        point[0] = index
        world = image.data_to_world(point)
        self.viewer.dims.set_point(self.viewer.dims.ndim - image.ndim, float(world[0]))

    # -- wording ---------------------------------------------------------------------------
    def _noun(self) -> str:
        return "image" if set_info(self.widget.image_layer) is not None else "slice"

    def _unit(self, index: int, capital: bool = False) -> str:
        """``slice 57``, or ``image benign (12).png`` in an image set (``Slice``/``Image`` to start a sentence)."""
        info = set_info(self.widget.image_layer)
        noun = "Image" if info is not None else "Slice"
        noun = noun if capital else noun.lower()
        return f"{noun} {info.names[index]}" if info is not None and 0 <= index < len(info) else f"{noun} {index}"


def _light(result):
    """The result without its similarity maps (the heatmap layers hold them; Check next does not need them)."""
    return dataclasses.replace(result, similarity={}) if dataclasses.is_dataclass(result) else result
