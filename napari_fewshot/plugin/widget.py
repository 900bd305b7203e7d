"""The "Few-shot segmentation" dock widget: clicks -> core jobs in worker threads -> layers.

Programmatic API (what the buttons call; tests drive it): :meth:`FewShotWidget.compute_features`,
:meth:`~FewShotWidget.segment`, :meth:`~FewShotWidget.fine_tune`, :meth:`~FewShotWidget.reset_weights`
(each returns the started worker, or None after telling the user why not), :meth:`~FewShotWidget.cancel`,
``widget.boxes.start()`` / ``widget.boxes.paint_box(box)`` (Box -> paint, see :mod:`.box_tool`),
:meth:`~FewShotWidget.export`, :meth:`~FewShotWidget.export_heatmaps`, :meth:`~FewShotWidget.create_support_layer`,
:meth:`~FewShotWidget.save_prototypes`, :meth:`~FewShotWidget.load_prototypes` (prototype banks).

Segmenting all slices gets the core's 3D clean-up (post-processing over the whole volume); the
current slice, a slice range and live mode show the per-slice prediction, since that clean-up
needs every slice. The support layer is only ever read (copied on the Qt thread before a job
starts). User-fixable problems (FewShotError) appear as one-sentence napari notifications;
anything else too, with the traceback going to the log rather than a dialog.
"""

from __future__ import annotations

import weakref
from functools import partial
from pathlib import Path

import napari
import napari.viewer
import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QWidget

from ..errors import FewShotError
from . import VOLUME_KEY, banks, corrections, exporting, fine_tuning, guidance, image_sets, layers, results, streaming
from .autosave import SupportAutosave
from .box_tool import BoxTool
from .explain import ExplainTool
from .live import LiveMode
from .model_status import ModelStatus
from .panel import Panel
from .pickers import LayerPickers
from .runner import JobRunner
from .session import ImageSession, image_planes, slice_indices, support_stack
from ..core.triton_guard import keep_triton_out
from .workers import Job, features_job, fine_tune_job, segment_job


class FewShotWidget(QWidget):
    """Dock widget: pick image + support, compute features, segment, fine-tune, export."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from ..core import encoder_choices

        keep_triton_out()  # before any job imports LiteMedSAM (timm, torchvision): Triton would crash the canvas
        self.viewer = viewer
        self.ui = Panel(self, encoder_choices())
        self._sessions: dict[int, ImageSession] = {}  # id(image layer) -> its segmenter and results
        self._forgotten: list[weakref.ref] = []  # sessions of removed layers (jobs may still hold them)
        self.runner = JobRunner(self.ui, self._on_idle)
        self._last_scope: tuple[str, int | None, int | None] = ("all", None, None)
        self._closed = False
        self.pickers = LayerPickers(self)  # the support follows the image; another image's is never offered
        self.live = LiveMode(self._live_segment, self.ui.live_check.isChecked, self)
        self.model_status = ModelStatus(self.ui, self.params,
                                        lambda: self._sessions.get(id(layers.unwrap(self.image_layer))),
                                        lambda: self.image_layer)
        self._connect()
        self._refresh_layer_choices()
        self.autosave = SupportAutosave(self)  # watches the supports; offers saved paint back
        self.corrections = corrections.Corrections(self)  # strokes on predicted slices, Accept slice, Check next
        self.guidance = guidance.Guidance(self)  # next-step hint, scan selected after an open, background label
        self.boxes = BoxTool(self)  # Box -> paint: rectangles become support paint (LiteMedSAM)
        self.explain = ExplainTool(self)  # which painted slice a prediction looks like (the Explain box)
        self.streaming = streaming.Streaming(self)  # LiteMedSAM refines Segment's coarse result in the background
        self.volumes = results.VolumesLine(self)  # per-class volumes under the status line, counted in a thread

    # -- public state ----------------------------------------------------------------------
    @property
    def image_layer(self) -> Image | None:
        return self._layer_named(self.ui.image_combo.currentText(), Image)

    @property
    def support_layer(self) -> Labels | None:
        return self._layer_named(self.ui.support_combo.currentText(), Labels)

    @property
    def busy(self) -> bool:
        """True while a job or a live update runs (or a job waits for a live update to finish)."""
        return self.runner.busy

    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.runner.worker

    @property
    def session(self) -> ImageSession | None:
        """The segmenter bookkeeping of the chosen image layer (created on first use)."""
        image = layers.unwrap(self.image_layer)
        if image is None:
            return None
        if id(image) not in self._sessions:
            self._sessions[id(image)] = ImageSession(image)
        return self._sessions[id(image)]

    @property
    def prediction_layer(self) -> Labels | None:
        s = self.session
        return s.prediction if s is not None and s.prediction in self.viewer.layers else None

    @property
    def heatmap_layers(self) -> dict[int, Image]:
        s = self.session
        return {c: ly for c, ly in s.heatmaps.items() if ly in self.viewer.layers} if s is not None else {}

    def set_image_layer(self, layer: Image) -> None:
        self.ui.image_combo.setCurrentText(layer.name)

    def set_support_layer(self, layer: Labels) -> None:
        """Choose ``layer`` as the support (only one the Support picker offers for the chosen image)."""
        self.ui.support_combo.setCurrentText(layer.name)

    def params(self):
        """SegmentationParams from the settings (core defaults for the fields the panel does not show)."""
        return self.ui.settings.params()

    def current_slice(self) -> int:
        """Index (along the image's first axis) of the slice the viewer shows."""
        image = self.image_layer
        if image is None or len(layers.spatial_shape(image)) < 3:
            return 0
        point = image.world_to_data(self.viewer.dims.point[-image.ndim:])
        return int(np.clip(round(float(point[0])), 0, image.data.shape[0] - 1))

    # -- actions ---------------------------------------------------------------------------
    def create_support_layer(self) -> Labels | None:
        """Add an empty ``support`` Labels layer over the chosen image and select it for painting."""
        image = self.image_layer
        if image is None:
            show_warning("Open or pick an image layer first.")
            return None
        layer = layers.create_support(self.viewer, image)
        self.set_support_layer(layer)
        self.viewer.layers.selection.active = layer
        return layer

    def compute_features(self):
        """Compute (and cache) every slice's features, the visible and support slices first."""
        job = self._job(need_support=False)
        if job is None:
            return None
        preview = partial(self._show_result, job.session, self.image_layer, self.support_layer, False, quiet=True)
        unit = image_sets.unit(job.session.layer)
        return self.runner.launch("Computing features", features_job, job, self.current_slice(),
                                  on_return=lambda n: self._done(f"Features ready for {n} {unit}s"), on_preview=preview)

    def segment(self, scope: str | None = None, start_slice: int | None = None, stop_slice: int | None = None):
        """Segment "all" slices, the "current" slice or a slice "range" (inclusive; default: the spin boxes)."""
        scope = scope or self.ui.scope()
        image = self.image_layer
        n = layers.spatial_shape(image)[0] if image is not None and image.ndim >= 3 else 1
        start = self.ui.range_start.value() if start_slice is None else start_slice
        stop = self.ui.range_stop.value() if stop_slice is None else stop_slice
        try:
            indices = slice_indices(scope, self.current_slice(), n, start, stop)
        except FewShotError as exc:
            show_error(str(exc))
            return None
        job = self._job(need_support=True)
        if job is None:
            return None
        self._last_scope = (scope, start_slice, stop_slice)
        on_return = partial(self._show_result, job.session, image, self.support_layer, indices is None)
        preview = partial(self._show_result, job.session, image, self.support_layer, False, quiet=True)
        return self.runner.launch("Segmenting", segment_job, job, indices, self.ui.heatmap_check.isChecked(),
                                  self.current_slice(), True, on_return=on_return, on_preview=preview)

    def fine_tune(self, steps: int | None = None, learning_rate: float | None = None):
        """Fine-tune on the signed slices (plugin/fine_tuning.py); when it completes, the prediction is refreshed."""
        params = fine_tuning.chosen_params(self.ui.settings.fine_tune_params(), steps, learning_rate)
        job = self._job(need_support=True)
        if job is None:
            return None
        worker = self.runner.launch("Fine-tuning", fine_tune_job, job, params,
                                    on_return=lambda losses: self._fine_tuned(losses, job.session, params))
        if worker is not None:
            worker.aborted.connect(lambda: show_info(fine_tuning.stopped_message(
                job.session.segmenter, params, self.runner.steps_done)))
        return worker

    def reset_weights(self):
        """Undo all fine-tuning of the chosen image's segmenter; re-segments an existing prediction."""
        return self._refresh_prediction() if fine_tuning.reset_weights(self) else None

    def cancel(self) -> None:
        """Stop the running job after its current step (fine-tuning keeps the steps taken)."""
        self.runner.cancel()

    def export(self, path: str | None = None, overwrite: bool = False) -> list[Path] | None:
        """Write the prediction to ``path`` (format from the extension; a save dialog when None) and its per-class
        volumes beside it as ``STEM_volumes.csv``. Files are replaced only with ``overwrite=True`` or after asking."""
        written = exporting.export_prediction(self, self.prediction_layer, path, overwrite)
        results.write_volumes_beside(written, results.widget_volumes(self))
        return written

    def export_heatmaps(self, path: str | None = None, overwrite: bool = False) -> list[Path] | None:
        """Write each heatmap to its own float file, ``STEM_classK_name.EXT`` beside ``path``."""
        image = self.image_layer
        names = layers.class_names(self.support_layer, image)
        volume = image.metadata.get(VOLUME_KEY) if image is not None else None
        return exporting.export_heatmaps(self, self.heatmap_layers, names, volume, path, overwrite)

    def save_prototypes(self, path: str | None = None, overwrite: bool = False):
        """Save the support's prototypes as a bank file (.fewshot); a save dialog when `path` is None.

        Returns the started worker (the file is written when it returns), or None.
        """
        job = self._job(need_support=True)  # checked before asking for a file name
        target = banks.save_path(self, path, overwrite) if job is not None and exporting.painted(job.support) else None
        if target is None:
            return None
        support, image = self.support_layer, self.image_layer
        names = layers.class_names(support, image)
        colours = banks.support_colours(support, sorted({int(c) for p in job.support for c in np.unique(p) if c}))
        source = {"image_layer": image.name}
        return self.runner.launch("Saving prototypes", banks.build_job, job, names, colours, source,
                                  on_return=lambda bank: banks.written(bank, target))

    def load_prototypes(self, path: str | None = None):
        """Segment the chosen image with a saved bank (no paint needed, no other scan's support used; the
        view moves to the image); an open dialog when `path` is None."""
        bank = banks.load(self, path)
        if bank is None:
            return None
        banks.use_encoder_of(bank, self.ui.settings["encoder"], self.image_layer, self.params().feature_grid)
        if self.image_layer is None or banks.support_for(self, self.image_layer, bank) is None:
            show_warning("Open or pick an image layer first.")
            return None
        banks.bring_into_view(self.viewer, self.image_layer)
        self.explain.bank = bank  # names the bank's scan in explanations
        job = self._job(need_support=False)
        if job is None:
            return None
        self._last_scope = ("all", None, None)
        on_return = partial(self._show_result, job.session, self.image_layer, self.support_layer, True)
        return self.runner.launch("Segmenting with the bank", banks.apply_job, job, bank,
                                  self.ui.heatmap_check.isChecked(), on_return=on_return)

    # -- jobs ------------------------------------------------------------------------------
    def _job(self, need_support: bool, quiet: bool = False) -> Job | None:
        """Capture what a job needs on the Qt thread; tell the user (unless quiet) what is missing."""
        image, support, session = self.image_layer, self.support_layer, self.session
        try:
            if image is None:
                raise FewShotError("Open or pick an image layer first.")
            planes = image_planes(image)  # checks dimensions; views of the data, no copy
            if support is not None:
                layers.check_support(self.viewer, support, image)  # never another image's paint
            painted = support_stack(support.data, layers.spatial_shape(image)) if support is not None else None
            painted = image_sets.core_support(image, painted)  # an image set: cropped to each image's size
            if painted is None and need_support:
                raise FewShotError("Create or pick a support Labels layer and paint a few slices first.")
            params = self.params()
        except FewShotError as exc:
            (self.ui.status_label.setText if quiet else show_error)(str(exc))
            return None
        if support is not None:
            layers.claim_support(support, image)  # painted for this image: offered for no other
        empty = self.corrections.empty_slices() if painted is not None and params.support_mode == "dense" else ()
        return Job(session, params, planes, painted, empty)

    def _on_idle(self) -> None:
        """A job has finished: refresh the model line, run a live update that had to wait."""
        if self.runner.closed:
            return
        self.model_status.update()
        self.live.retry_if_dirty()

    def _done(self, what: str, timed: bool = True) -> None:
        """Say in the status line and a notification that the job did ``what``, with its time unless not `timed`."""
        if self.runner.closed:
            return
        message = f"{what} in {self.runner.elapsed():.1f} s." if timed else f"{what}."
        self.ui.status_label.setText(message)
        show_info(message)

    def _fine_tuned(self, losses: list[float], session, params) -> None:
        message = fine_tuning.done_message(session.segmenter, params, losses)
        if message:  # "Adapted nothing (why)" needs no time: nothing ran
            self._done(message, timed=not message.startswith("Adapted nothing"))
        if session.segmenter is not None and session.segmenter.is_fine_tuned:  # nothing adapted: nothing to redo
            self.runner.after = self._refresh_prediction

    def _refresh_prediction(self):
        """Re-segment (features recomputed as needed) when there is a prediction to keep current."""
        if self.prediction_layer is None:
            return None
        return self.segment(*self._last_scope)

    def _show_result(self, session, image, support, whole, result, quiet=False) -> None:
        """Put a worker's result into the prediction (and heatmap) layers of ``session`` (see results.show)."""
        if self.runner.closed or session is None or image is None or support is None or image not in self.viewer.layers:
            return
        result = results.show(self.viewer, session, image, support, result, whole, self.ui.heatmap_check.isChecked())
        self.corrections.remember(session, result, whole)  # a whole-volume result orders Check next
        self.volumes.later()  # (the next turn: not in the one that shows the result)
        self.explain.remember(image, result, whole)
        if not quiet:  # (a quiet result is the visible slice's coarse preview: the whole volume follows)
            self.streaming.follow(session, image, support, whole, result)  # when refinement is to come
            self._done(results.summary(result, image))

    def _show_image_name(self, *_) -> None:
        image_sets.show_image_name(self.viewer, self.image_layer)

    # -- live mode -------------------------------------------------------------------------
    def _live_segment(self) -> None:
        if self.busy:
            self.live.dirty = True
            return
        support = self.support_layer
        if support is None or not support.data.any():
            return
        job = self._job(need_support=True, quiet=True)
        if job is None:
            return
        on_return = partial(self._show_result, job.session, self.image_layer, support, False, quiet=True)
        self.runner.launch_live(segment_job, job, [self.current_slice()], self.ui.heatmap_check.isChecked(),
                                on_return=on_return, on_error=lambda exc: self.ui.status_label.setText(str(exc)),
                                on_finish=self.live.retry_if_dirty)

    # -- plumbing --------------------------------------------------------------------------
    def _viewer_events(self) -> list:
        """[(viewer event, the widget's slot)]: connected with the widget, disconnected when it closes."""
        events, step = self.viewer.layers.events, self.viewer.dims.events.current_step
        return [(event, self._refresh_layer_choices) for event in (events.inserted, events.removed, events.moved,
                events.reordered)] + [(events.removed, self._forget_removed), (step, self.live.schedule),
                                      (step, self._show_image_name)]

    def _connect(self) -> None:
        ui = self.ui
        for emitter, slot in self._viewer_events():
            emitter.connect(slot)
        ui.progress_bar.destroyed.connect(lambda *_: self.release())  # napari closed the window with the widget
        ui.support_combo.currentTextChanged.connect(lambda *_: self.live.watch(layers.unwrap(self.support_layer)))
        ui.image_combo.currentTextChanged.connect(self._show_image_name)
        ui.new_support_button.clicked.connect(self.create_support_layer)
        ui.compute_button.clicked.connect(self.compute_features)
        ui.segment_button.clicked.connect(lambda: self.segment())
        ui.fine_tune_button.clicked.connect(lambda: self.fine_tune())
        ui.reset_button.clicked.connect(self.reset_weights)
        ui.cancel_button.clicked.connect(self.cancel)
        ui.export_button.clicked.connect(lambda: self.export())
        ui.export_heatmaps_button.clicked.connect(lambda: self.export_heatmaps())
        ui.save_bank_button.clicked.connect(lambda: self.save_prototypes())
        ui.load_bank_button.clicked.connect(lambda: self.load_prototypes())
        ui.heatmap_check.toggled.connect(lambda on: results.show_heatmaps(self, on) and self._refresh_prediction())
        ui.live_check.toggled.connect(self.live.schedule)

    def closeEvent(self, event) -> None:
        """Stop jobs and let go of the viewer's events when the dock widget is closed."""
        if not self._closed:
            self._closed = True
            self.runner.quit_all()
            self.autosave.close()  # writes pending strokes
            for part in (self.corrections, self.guidance, self.boxes, self.explain, self.streaming):
                part.close()
            for emitter, slot in self._viewer_events():
                emitter.disconnect(slot)
            self.live.watch(None)
            self.release()
        super().closeEvent(event)

    def release(self) -> None:
        """Let go of the segmenters (features, embeddings, LiteMedSAM: GBs) once the widget or its window is closed:
        napari 0.9.2 never frees a closed window, so what the widget holds would stay as long as the process."""
        for session in [*self._sessions.values(), *(ref() for ref in self._forgotten)]:
            if session is not None:
                session.release()
        self._sessions.clear()
        self.boxes.release()
        self.explain.forget()

    def _refresh_layer_choices(self, *_) -> None:
        self.pickers.refresh()
        self.live.watch(layers.unwrap(self.support_layer))
        self.model_status.update()
        image = self.image_layer
        self.ui.set_slice_count(layers.spatial_shape(image)[0] if image is not None and image.ndim >= 3 else 1)

    def _forget_removed(self, event) -> None:
        self.pickers.forget(event.value)
        session = self._sessions.pop(id(layers.unwrap(event.value)), None)
        if session is not None:  # a job may still run on it: released only once the widget is (see release)
            session.disconnect()
            self._forgotten.append(weakref.ref(session))

    def _layer_named(self, name: str, kind):
        layer = self.viewer.layers[name] if name and name in self.viewer.layers else None
        return layer if isinstance(layer, kind) else None
