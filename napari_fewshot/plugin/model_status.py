"""The line under the settings that says which encoder runs on which device and how many slices' features
are cached for the chosen image, and the device check that turns a device this machine lacks back to "auto"."""

from __future__ import annotations

from typing import Any, Callable

from napari.utils.notifications import show_error

from ..errors import FewShotError
from . import guidance, image_sets


class ModelStatus:
    """Keeps ``ui.model_label`` (a Panel's) current as settings, image and jobs change; owned by the widget.

    params: the widget's SegmentationParams of the moment; session: the chosen image's ImageSession, or None
    while it has none (looking must not create one); layer: the chosen image layer, or None.
    """

    def __init__(self, ui, params: Callable[[], Any], session: Callable[[], Any], layer: Callable[[], Any]):
        self.ui, self._params, self._session, self._layer = ui, params, session, layer
        settings = ui.settings
        settings.main.changed.connect(self.update)  # any setting may keep or drop the cached features
        settings.more.changed.connect(self.update)
        settings["device"].changed.connect(self._device_chosen)
        self.ui.image_combo.currentTextChanged.connect(self.update)

    def update(self, *_) -> None:
        """Say "Using ENCODER on DEVICE", and what is cached when the chosen image's features stay valid."""
        from ..core.devices import resolve_device

        params, session = self._params(), self._session()
        try:
            device = resolve_device(params.device)
        except FewShotError:
            return  # a device this machine lacks: _device_chosen turns it back to "auto", which updates again
        text = f"Using {self._encoder_name(params, session)} on {device}"
        if session is not None and session.segmenter is not None and session.reuses_features(params):
            text += f"; features cached for {session.cached_slices()} {image_sets.unit(session.layer)}s"
            adaptation = session.segmenter.adaptation  # what Fine-tune adapted (core/finetune.py)
            summary, took = adaptation.summary, f" in {adaptation.seconds:.0f} s" if adaptation.seconds else ""
            text += (f" (fine-tuned: {summary[len('Adapted '):]}{took})" if summary and session.segmenter.is_fine_tuned
                     else " (fine-tuned)" if session.segmenter.is_fine_tuned else "")
        self.ui.model_label.setText(text + ".")

    def _encoder_name(self, params, session) -> str:
        """The encoder the chosen image is (or will be) segmented with; "auto" resolved, and said."""
        from ..core.encoders import AUTO, resolve_encoder

        if params.encoder != AUTO:
            return params.encoder
        segmenter = session.segmenter if session is not None and session.reuses_features(params) else None
        if segmenter is not None and segmenter.stack is not None:  # kept when fine-tuned (FewShotSegmenter)
            return f"{segmenter.encoder_name} (auto)"
        layer = self._layer()
        two_d = layer is not None and image_sets.is_2d(layer)
        return f"{resolve_encoder(AUTO, two_d, params.feature_grid)} (auto)"

    def _device_chosen(self, name: str) -> None:
        from ..core.devices import resolve_device

        try:
            resolve_device(name)
        except FewShotError as exc:
            show_error(guidance.device_message(exc))
            self.ui.settings["device"].value = "auto"
