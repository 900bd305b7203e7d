"""The encoder of a FewShotSegmenter and every change to its weights: fine-tuning on the support, "Adapt
to this scan", weights loaded from a bank, and going back to the original weights with no features
recomputed.

Owned by the segmenter (core/segmenter.py), which hands it, per call, the feature cache of its current
image: the cache is what a change of weights invalidates, and where the original weights' features are
set aside until :meth:`EncoderWeights.reset`.
"""

from __future__ import annotations

import copy
from typing import Generator, Sequence

import torch

from ..errors import FewShotError
from .config import SegmentationParams
from .training_config import AdaptParams, FineTuneParams
from .encoders import Encoder, create_encoder
from .encoders.base import encoder_signature
from .features import FeatureCache, SetAside
from .progress import Progress
from .support import SupportSet


class EncoderWeights:
    """The encoder, built on first use (by `build`, by default the registry's `name`, on `device`; or the
    `encoder` given), and its weights' history.

    Every change keeps the original weights first (and sets aside the current image's features computed
    with them); :meth:`reset` undoes every change. `tag` names who loaded the current weights (:meth:`load`'s
    `tag`, e.g. a bank's token); None once they change otherwise.
    """

    def __init__(self, name: str, device: torch.device, weights_path=None, encoder: Encoder | None = None,
                 build=None, grid: str = "native"):
        self._name, self._device, self._weights_path = name, device, weights_path
        self._encoder = encoder.to(device).eval() if encoder is not None else None
        self._build = build or (lambda: create_encoder(name, weights_path=weights_path, grid=grid))  # () -> Encoder
        self._initial_state: dict[str, torch.Tensor] | None = None
        self._original_features: SetAside | None = None
        self.tag: str | None = None

    name = property(lambda self: self._name, doc="The encoder's registry name")

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self._build().to(self._device)
        return self._encoder

    @property
    def changed(self) -> bool:
        """Whether the weights differ from the original ones (fine-tuned, adapted or loaded)."""
        return self._initial_state is not None

    def persistence(self, cache_dir: str | None) -> tuple[str | None, str | None]:
        """(folder, encoder id) a feature cache of these weights persists under (FeatureCache's disk_dir and
        encoder_id): (cache_dir, encoder name and weights id), or (None, None) while the weights are changed
        (features of changed weights are never persisted)."""
        if self.changed:
            return None, None
        return cache_dir, encoder_signature(self.encoder)

    def forget_set_aside(self) -> None:
        """The image changed: features set aside from the previous one can never come back."""
        self._original_features = None

    def reset(self, cache: FeatureCache | None, cache_dir: str | None) -> None:
        """Undo every change. The features of `cache` computed with the original weights before the first
        change come back from where they were set aside (nothing is recomputed for them); the cache
        persists again under `cache_dir`."""
        self.tag = None
        if self._initial_state is not None:
            self.encoder.load_state_dict(self._initial_state)
            self._initial_state = None
            if cache is not None:
                cache.invalidate(*self.persistence(cache_dir))
                if self._original_features is not None:
                    cache.restore(self._original_features)
        self._original_features = None

    def _keep_original(self, cache: FeatureCache | None) -> None:
        """Before the weights first change: keep the original weights, and the features `cache` computed
        with them, for reset."""
        if self._initial_state is None:
            self._initial_state = copy.deepcopy(self.encoder.state_dict())
            if cache is not None and self._original_features is None:
                self._original_features = cache.set_aside()

    def load(self, state: dict[str, torch.Tensor], tag: str | None, cache: FeatureCache | None) -> None:
        """Load changed encoder weights (e.g. a bank's, whose `tag` then names them); the features of
        `cache` are forgotten. FewShotError, nothing changed, when they do not fit the encoder."""
        self._keep_original(cache)
        device = next(self.encoder.parameters()).device
        try:
            self.encoder.load_state_dict({k: v.to(device) for k, v in state.items()})
        except RuntimeError as err:
            self.encoder.load_state_dict(self._initial_state)
            self._initial_state = None
            if cache is not None and self._original_features is not None:
                cache.restore(self._original_features)
            self._original_features = None
            raise FewShotError(f"The fine-tuned weights do not fit the encoder {self.encoder.name} "
                               f"({str(err).splitlines()[0]}).") from err
        self.encoder.eval()
        self.tag = tag
        if cache is not None:
            cache.invalidate()

    def fine_tune(self, cache: FeatureCache, support: SupportSet, seg: SegmentationParams,
                  params: FineTuneParams) -> Generator[Progress, None, list[float]]:
        """Train on episodes between the painted support slices of `cache`'s image (finetune.support_episodes).
        Yields Progress(step, steps, loss=...); returns the losses. Stopping early keeps the steps taken."""
        from .finetune import support_episodes

        episodes = support_episodes(cache.stack, support, seg, params.augment, cache.device, self.encoder.normalization)
        return (yield from self._train(cache, episodes, seg, params.steps, params.learning_rate,
                                       params.alignment_weight, params.seed, "fine-tune"))

    def adapt(self, cache: FeatureCache, seg: SegmentationParams, params: AdaptParams,
              indices: Sequence[int] | None = None) -> Generator[Progress, None, list[float]]:
        """"Adapt to this scan": self-supervised superpixel episodes on `cache`'s image, slices `indices`
        (default all), no support needed (see adapt.py). Same contract as :meth:`fine_tune`."""
        from .adapt import superpixel_episodes

        episodes = superpixel_episodes(cache.stack, seg, params, cache.device, self.encoder.normalization, indices)
        return (yield from self._train(cache, episodes, seg, params.steps, params.learning_rate,
                                       params.alignment_weight, params.seed, "adapt"))

    def _train(self, cache: FeatureCache, episodes, seg: SegmentationParams, steps: int, learning_rate: float,
               alignment_weight: float, seed: int, what: str) -> Generator[Progress, None, list[float]]:
        from .finetune import train_on_episodes

        self._keep_original(cache)
        self.tag = None
        cache.invalidate()
        try:
            losses = yield from train_on_episodes(self.encoder, episodes, steps, learning_rate, alignment_weight,
                                                  seg, seed, what)
        finally:
            self.encoder.eval()
            cache.invalidate()
        return losses
