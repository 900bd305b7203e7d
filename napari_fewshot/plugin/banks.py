"""The widget's Save prototypes... / Load prototypes... (prototype banks: napari_fewshot.core.bank).

Saving pools the painted support of the chosen image (features computed in a worker if needed,
with the encoder's current, possibly fine-tuned, weights); loading segments the chosen image with
a bank made elsewhere (another patient, another session) without any paint: a support layer of
another scan is never required nor used (the prediction is shown with the chosen support when it
fits the image, else with a new empty one over it, named after the bank's classes), and the view
moves to the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QWidget

from ..core.bank import PrototypeBank
from ..core.settings import with_settings
from ..errors import FewShotError
from . import CLASS_NAMES_KEY, layers
from .exporting import confirm_replace

BANK_FILTER = "Prototype bank (*.fewshot)"


def save_path(parent: QWidget, path: str | None, overwrite: bool) -> Path | None:
    """Where to save (a dialog when `path` is None); None when the user cancels or refuses to replace."""
    interactive = path is None
    if interactive:
        path, _ = QFileDialog.getSaveFileName(parent, "Save prototypes", "", BANK_FILTER,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return None
    target = Path(path) if Path(path).suffix else Path(path).with_suffix(".fewshot")
    if target.exists() and not overwrite:
        if not interactive:
            show_error(f"Not saved: '{target}' exists; choose another name.")
            return None
        if not confirm_replace(parent, [target]):
            return None
    return target


def load(parent: QWidget, path: str | None) -> PrototypeBank | None:
    """Read a bank (a dialog when `path` is None); None after telling the user why not."""
    if path is None:
        path, _ = QFileDialog.getOpenFileName(parent, "Load prototypes", "", BANK_FILTER)
        if not path:
            return None
    try:
        bank = PrototypeBank.load(path)
        bank.require_weights()  # never a download started from a bank file
    except FewShotError as exc:
        show_error(str(exc))
        return None
    return bank


def support_for(widget, image, bank: PrototypeBank):
    """The support layer a bank's prediction on `image` is shown with (its colours, its class names): the
    chosen support when it has the image's shape, else a new empty one over the image named after the
    bank's classes. A bank needs no paint, so another scan's support is never required nor used."""
    support = widget.support_layer
    if support is not None and tuple(support.data.shape) == tuple(layers.spatial_shape(image)):
        return support
    support = widget.create_support_layer()
    if support is not None:
        support.metadata[CLASS_NAMES_KEY] = dict(bank.class_names)
        support.features = layers.label_features(bank.class_names)
    return support


def use_encoder_of(bank: PrototypeBank, choice, image, grid: str) -> None:
    """Set the Encoder setting (`choice`, a magicgui ComboBox) to the bank's encoder, saying so, unless it already
    gives that one on `image` (the chosen image layer or None; "auto" resolves per image, core/encoders)."""
    from ..core.encoders import resolve_encoder
    from .image_sets import is_2d

    current = resolve_encoder(choice.value, image is not None and is_2d(image), grid)
    if current != bank.encoder_name and bank.encoder_name in choice.choices:
        choice.value = bank.encoder_name
        show_info(f"Switched the encoder to {bank.encoder_name}, the one the bank was made with.")


def bring_into_view(viewer, image) -> None:
    """Fit the camera to `image` and, when the sliders stand outside it (e.g. on another, longer scan),
    move them to its middle slice: a newly opened scan is what the user wants to see."""
    viewer.reset_view(layers=[layers.unwrap(image)])
    extent = image.extent.world
    offset = viewer.dims.ndim - image.ndim
    for axis in range(len(layers.spatial_shape(image)) - 2):
        lo, hi = float(extent[0, axis]), float(extent[1, axis])
        if not lo <= viewer.dims.point[offset + axis] <= hi:
            viewer.dims.set_point(offset + axis, (lo + hi) / 2)


def support_colours(support, class_ids) -> dict[int, tuple[float, ...]]:
    """RGBA colour of each class id in the support layer's colormap."""
    colours = np.asarray(support.colormap.map(np.asarray(class_ids)), dtype=float)
    return {int(c): tuple(float(v) for v in colour) for c, colour in zip(class_ids, colours)}


def build_job(job, class_names: dict[int, str], colours: dict, source: dict):
    """Worker: the bank of the job's image and support."""
    seg = job.session.prepare(job.image, job.params)
    support_set = seg.parse_support(job.support)
    yield from seg.compute_features(support_set.slice_indices)
    return PrototypeBank.from_segmenter(seg, job.support, class_names, colours, source)


def apply_job(job, bank: PrototypeBank, similarity: bool):
    """Worker: segment every slice of the job's image with the bank; returns the SegmentationResult (a
    WholeVolume, heatmaps assembled here, for a volume with heatmaps). A volume's result is the coarse one
    (cleaned up after the bank's priors, ranked), its LiteMedSAM refinement left to plugin/streaming.py as
    Segment's is (the widget streams it in when it shows the result); an image set's images are refined here."""
    from .workers import assemble

    # the grid the bank's prototypes were pooled on (SegmentationParams.feature_grid; the panel has no control for it)
    seg = job.session.prepare(job.image, with_settings(job.params, {"feature_grid": bank.params.feature_grid}))
    if not bank.is_prepared(seg):  # as PrototypeBank.segment does: the bank's encoder weights
        bank.prepare(seg)
    stack = seg.cache.stack
    result = yield from seg.segment_with(bank.prototypes.to(seg.device), None, similarity, priors=bank.priors,
                                         refine_later=stack.is_3d)
    return assemble(result)


def written(bank: PrototypeBank, target: Path) -> Path | None:
    try:
        path = bank.save(target, overwrite=True)
    except FewShotError as exc:
        show_error(str(exc))
        return None
    show_info(f"Saved {bank.describe()} to {path}.")
    return path
