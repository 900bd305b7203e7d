"""A Labels layer's undo history, read and merged through napari's private ``_undo_history`` /
``_redo_history`` (guarded: where they are missing or look different, each function answers "unknown" or
changes nothing). The correction loop (corrections.py) uses it to make a seeding and the stroke after it one
undo step, and to know whether a stroke that emptied a slice was undone; :func:`edit_events` tells an undo or redo
from napari re-slicing the layer (both emit ``set_data``)."""

from __future__ import annotations

import numpy as np


def last_undo_item(layer):
    """The newest undo item of a Labels layer (a list of history atoms), or None if unreachable."""
    history = getattr(layer, "_undo_history", None)
    try:
        return history[-1] if history else None
    except (TypeError, IndexError):
        return None


def merge_into(layer, item, index: int) -> bool:
    """Append the newest undo item to ``item`` (the one before it) when it only edits slice ``index``, so one
    undo reverts both. False (nothing changed) when napari's history is not as expected."""
    history = getattr(layer, "_undo_history", None)
    try:
        if item is None or not isinstance(item, list) or len(history) < 2 or history[-2] is not item:
            return False
        last = history[-1]
        if not isinstance(last, list) or not all(atom_slices(atom) == {index} for atom in last):
            return False
        history.pop()
        item.extend(last)
        return True
    except (TypeError, AttributeError, IndexError):
        return False


def history_state(layer, atom) -> str:
    """Where an undo atom is in a Labels layer's history: "done" (in the undo history), "undone" (in the redo
    history), "gone" (in neither: undone, then a new edit cleared the redo history), "unknown" (the history is
    not reachable, or the undo history is full so the atom may have dropped off it)."""
    undo, redo = getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None)
    try:
        if any(a is atom for item in undo for a in item):
            return "done"
        if any(a is atom for item in redo for a in item):
            return "undone"
        full = getattr(undo, "maxlen", None) is not None and len(undo) >= undo.maxlen
        return "unknown" if full else "gone"
    except TypeError:
        return "unknown"


def atom_slices(atom) -> set[int] | None:
    """Slices (first axis) a history atom edits: a mask atom (``slice_key``) or ``(indices, old, new)``."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        first = key[0]
        return set(range(first.start, first.stop)) if isinstance(first, slice) else {int(first)}
    if isinstance(atom, tuple) and len(atom) == 3:
        return {int(i) for i in np.unique(np.asarray(atom[0][0]))}
    return None


def history_mark(layer) -> tuple | None:
    """Changes whenever an edit, an undo or a redo changes a Labels layer's history: (undo items, redo items, the
    newest undo item's identity); None when napari's history is not reachable."""
    undo, redo = getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None)
    try:
        return len(undo), len(redo), id(undo[-1]) if undo else None
    except TypeError:
        return None


def edit_events(layer, slot) -> list[tuple]:
    """(emitter, callback) pairs to connect so that ``slot()`` runs when the user edits the Labels ``layer``: a
    stroke, fill or erase (``paint``), a replaced array (``data``), an undo or a redo. napari emits ``set_data`` for
    an undo or redo but also every time it re-slices the layer (the slice slider moved, a refresh): that counts only
    when the history changed with it (always, where the history is not reachable)."""
    mark = [history_mark(layer)]

    def edited(*_) -> None:
        mark[0] = history_mark(layer)
        slot()

    def refreshed(*_) -> None:
        now = history_mark(layer)
        if now is None or now != mark[0]:
            edited()

    return [(layer.events.paint, edited), (layer.events.data, edited), (layer.events.set_data, refreshed)]
