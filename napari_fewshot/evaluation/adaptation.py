"""Adapting the encoder to a scan and undoing fine-tuning between tasks: shared by every protocol."""

from __future__ import annotations

import time
from typing import Callable

from ..core import AdaptParams, run


def adapted_state(segmenter, adapt: AdaptParams | None, log: Callable[[str], None] = lambda _: None):
    """Adapt the segmenter's encoder to its current image when asked; returns the adapted weights (None: not adapted)."""
    if adapt is None or adapt.steps <= 0:
        return None
    started = time.perf_counter()
    losses = run(segmenter.adapt(adapt))
    if losses:
        log(f"adapted {len(losses)} steps in {time.perf_counter() - started:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {k: v.detach().clone() for k, v in segmenter.encoder.state_dict().items()}


def restore_weights(segmenter, state) -> None:
    """Back to the original weights, then to `state` when given (the scan-adapted weights)."""
    segmenter.reset_weights()
    if state is not None:
        segmenter.load_encoder_state(state)
