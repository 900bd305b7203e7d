"""The encoder-weights side of FewShotSegmenter: fine-tuning on the support, "Adapt to this scan",
weights loaded from a bank, and going back to the original weights with no features recomputed.

A mixin: it works on the segmenter's encoder, feature cache and params (see core/segmenter.py).
"""

from __future__ import annotations

import copy
from typing import Generator, Sequence

import torch

from ..errors import FewShotError
from .config import AdaptParams, FineTuneParams
from .progress import Progress


class EncoderWeights:
    """Fine-tune / adapt / load / reset the encoder of a FewShotSegmenter. Every change keeps the original
    weights first; `reset_weights` undoes them all."""

    @property
    def is_fine_tuned(self) -> bool:
        return self._initial_state is not None

    def reset_weights(self) -> None:
        """Undo every fine-tuning step. The features computed with the original weights before the first
        step come back from where they were set aside (nothing is recomputed for them)."""
        self.weights_tag = None
        if self._initial_state is not None:
            self.encoder.load_state_dict(self._initial_state)
            self._initial_state = None
            if self.cache is not None:
                self.cache.invalidate(*self._persistence())
                if self._original_features is not None:
                    self.cache.restore(self._original_features)
        self._original_features = None

    def _keep_original_weights(self) -> None:
        """Before the weights first change: keep the original weights, and the features computed with
        them, for reset_weights."""
        if self._initial_state is None:
            self._initial_state = copy.deepcopy(self.encoder.state_dict())
            if self.cache is not None and self._original_features is None:
                self._original_features = self.cache.set_aside()

    def load_encoder_state(self, state: dict[str, torch.Tensor], tag: str | None = None) -> None:
        """Load fine-tuned encoder weights (e.g. from a prototype bank, whose `tag` then names them in
        `weights_tag`); `reset_weights` goes back to the original ones. Cached features of the current
        image are forgotten."""
        self._keep_original_weights()
        device = next(self.encoder.parameters()).device
        try:
            self.encoder.load_state_dict({k: v.to(device) for k, v in state.items()})
        except RuntimeError as err:
            self.encoder.load_state_dict(self._initial_state)
            self._initial_state = None
            if self.cache is not None and self._original_features is not None:
                self.cache.restore(self._original_features)
            self._original_features = None
            raise FewShotError(f"The fine-tuned weights do not fit the encoder {self.encoder.name} "
                               f"({str(err).splitlines()[0]}).") from err
        self.encoder.eval()
        self.weights_tag = tag
        if self.cache is not None:
            self.cache.invalidate(*self._persistence())

    def fine_tune(self, support, params: FineTuneParams | None = None) -> Generator[Progress, None, list[float]]:
        """Adapt the encoder to the painted support slices (finetune.support_episodes, trained by
        finetune.train_on_episodes).

        Yields Progress(step, steps, loss=...) per step; returns the losses. Stopping the generator
        early keeps the steps taken so far; `reset_weights` undoes them all.
        """
        from .finetune import support_episodes

        cache = self._require_image()
        support_set = self.parse_support(support)
        params = params or FineTuneParams()
        episodes = support_episodes(cache.stack, support_set, self.params, params.augment, self.device)
        return (yield from self._train(episodes, params.steps, params.learning_rate, params.alignment_weight,
                                       params.seed, "fine-tune"))

    def adapt(self, params: AdaptParams | None = None, indices: Sequence[int] | None = None,
              ) -> Generator[Progress, None, list[float]]:
        """"Adapt to this scan": self-supervised superpixel episodes on the current image's slices
        `indices` (default all), no support needed (see adapt.py). Same contract as `fine_tune`."""
        from .adapt import superpixel_episodes

        cache = self._require_image()
        params = params or AdaptParams()
        episodes = superpixel_episodes(cache.stack, self.params, params, self.device, indices)
        return (yield from self._train(episodes, params.steps, params.learning_rate, params.alignment_weight,
                                       params.seed, "adapt"))

    def _train(self, episodes, steps: int, learning_rate: float, alignment_weight: float, seed: int,
               what: str) -> Generator[Progress, None, list[float]]:
        from .finetune import train_on_episodes

        cache = self._require_image()
        self._keep_original_weights()
        self.weights_tag = None
        cache.invalidate()
        try:
            losses = yield from train_on_episodes(self.encoder, episodes, steps, learning_rate, alignment_weight,
                                                  self.params, seed, what)
        finally:
            self.encoder.eval()
            cache.invalidate()
        return losses
