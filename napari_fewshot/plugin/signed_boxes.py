"""A box on a predicted image (or slice) signs it: its prediction shows what was signed, and undo keeps up.

In dense support mode a painted image is complete support: after a box paints it, the model's old
prediction of that image (e.g. a small circle away from the lesion) is no longer what the image will
be segmented as, nor what is exported. So the prediction layer's plane of that image is replaced by
the support's plane (the box's mask, with any paint already there), and the old plane is kept.

Undo and redo of the box go through the support layer's history (one item, written by box_tool.py).
napari emits no event for an undo, so :meth:`SignedBoxes.sync` is called after the box tool's own
Ctrl+Z / Shift+Ctrl+Z and after the support layer's (the same keys are bound on it once a box signed
one of its images): an undone box gives the prediction its old plane back, a redone one the box's
again. A plane that has changed since (a new Segment) is left as it is. Where napari's undo history is
not reachable (undo_history.py), the prediction is not replaced: Ctrl+Z could not give it back.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from .undo_history import history_state, last_undo_item

MAX_RECORDS = 100  # per support layer; older boxes keep their paint, undo then leaves the prediction as it is


@dataclass
class _Signed:
    """One box that signed a predicted plane."""

    atom: object  # the first history atom of the box's undo item on the support layer
    prediction: object  # the prediction Labels layer (unwrapped)
    where: tuple  # (index,) for a stack, () for a 2D layer
    before: np.ndarray  # the plane as predicted
    after: np.ndarray  # the plane as signed (the support's plane after the box)


class SignedBoxes:
    """The predictions replaced by boxes, per support layer; owned by the BoxTool."""

    def __init__(self, bind_undo):
        self._bind_undo = bind_undo  # called with a support layer: bind Ctrl+Z / Shift+Ctrl+Z to undo + sync
        self._records: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def sign(self, support, prediction, index: int) -> bool:
        """After a box wrote into plane ``index`` of ``support`` (its newest undo item): show the support's
        plane in ``prediction`` there. Returns True when the prediction changed."""
        if prediction is None or tuple(prediction.data.shape) != tuple(support.data.shape):
            return False
        where = (index,) if support.ndim == 3 else ()
        before = np.array(prediction.data[where], copy=True)
        after = np.asarray(support.data[where]).astype(prediction.data.dtype)
        if np.array_equal(before, after):
            return False
        item = last_undo_item(support)
        if not isinstance(item, list) or not item:
            return False  # napari's history is not reachable: Ctrl+Z could not give the prediction back
        records = self._records.setdefault(support, [])
        records.append(_Signed(item[0], prediction, where, before, after))
        del records[:-MAX_RECORDS]
        self._bind_undo(support)
        self._show(prediction, where, after)
        return True

    def sync(self, support) -> tuple[list, list]:
        """Bring the predictions in step with ``support``'s history: an undone box shows its old plane again,
        a redone one the signed plane, wherever the prediction still shows the other of the two. Returns the
        planes (``where``) given back their prediction and those signed again."""
        restored, signed = [], []
        for record in self._records.get(support, []):
            state = history_state(support, record.atom)
            current = np.asarray(record.prediction.data[record.where])
            if state == "undone" and np.array_equal(current, record.after):
                self._show(record.prediction, record.where, record.before)
                restored.append(record.where)
            elif state == "done" and np.array_equal(current, record.before):
                self._show(record.prediction, record.where, record.after)
                signed.append(record.where)
        return restored, signed

    @staticmethod
    def _show(prediction, where: tuple, plane: np.ndarray) -> None:
        data = prediction.data
        data[where] = plane  # in place, outside the prediction's own undo history: it is the model's layer
        prediction.refresh()
