"""The Fine-tune button's words: the job's settings, what it says when it ends, and when it is stopped.

What the button runs is core/finetune.py (FewShotSegmenter.fine_tune with the panel's FineTuneParams): by
default ("decoder") a few weights of LiteMedSAM's mask decoder (the hypernetwork that draws its outlines), trained
in seconds on cached decoder outputs of every signed image where LiteMedSAM refines (core/decoder_tuning.py); on a
volume only with "Decoder on volumes" ticked (it lowered CHAOS-T2 Dice), else it adapts nothing and says why.
The status line says what was adapted, on how many signed objects, and how long it took; when no training step
beat LiteMedSAM's own weights on held-out boxes it says that nothing was adapted.
BENCHMARKS.md, "Fine-tune: which variant the button runs", "ftcache" and "ftaudit", has what each variant measured.
"""

from __future__ import annotations

import dataclasses

from napari.utils.notifications import show_info, show_warning

from ..core import FineTuneParams


def chosen_params(chosen: FineTuneParams, steps: int | None, learning_rate: float | None) -> FineTuneParams:
    """The panel's settings (what the button runs); whole-encoder steps or a learning rate given to
    widget.fine_tune (scripts, tests) ask for the whole-encoder fine-tune with them."""
    changes = {}
    if steps is not None:
        changes["steps"] = int(steps)
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    if changes:
        changes["method"] = "encoder"
    return dataclasses.replace(chosen, **changes)


def done_message(segmenter, params: FineTuneParams, losses: list[float]) -> str | None:
    """One sentence on what was adapted and how long it took (None: nothing to say, e.g. no step ran)."""
    if params.method != "encoder":
        return segmenter.adaptation.summary if segmenter is not None else None
    if not losses:
        return None
    return f"Fine-tuned the whole encoder {len(losses)} steps (loss {losses[0]:.3f} -> {losses[-1]:.3f})"


def reset_weights(widget) -> bool:
    """The Reset button: undo all fine-tuning of the widget's chosen image (its segmenter's weights) and say so, or
    say why not; whether weights were reset (the widget then re-segments an existing prediction)."""
    session = widget.session
    if widget.runner.occupied or session is None:  # a quiet job embedding ahead uses none of the tuned weights
        show_warning("Wait for the running job to finish (or Cancel it) before resetting the weights."
                     if widget.runner.occupied else "Pick an image layer first.")
        return False
    if session.segmenter is None or not session.segmenter.is_fine_tuned:
        show_info("The encoder has its original weights already.")
        return False
    message = reset_message(session.segmenter)
    session.segmenter.reset_weights()
    widget.model_status.update()
    show_info(message)
    return True


def reset_message(segmenter) -> str:
    """What Reset weights undid (said before the segmenter is reset)."""
    adaptation = getattr(segmenter, "adaptation", None)
    parts = []
    if segmenter.encoder_changed:
        parts.append("the encoder has its original weights again")
    if adaptation is not None and adaptation.adapter is not None:
        parts.append("the feature adapter is removed")
    if adaptation is not None and adaptation.decoder_state is not None:
        parts.append("LiteMedSAM's decoder has its original weights again")
    if adaptation is not None and getattr(adaptation, "calibration", None) is not None:
        parts.append("the class offsets are removed")
    return ("Reset: " + ", ".join(parts) + ".") if parts else "Nothing was fine-tuned."


def stopped_message(segmenter, params: FineTuneParams, steps_done: int) -> str:
    """What a cancelled Fine-tune kept."""
    if params.method == "encoder":
        return (f"Fine-tuning stopped after {steps_done} of {params.steps} steps; the encoder keeps them "
                "(Reset weights undoes them).")
    adaptation = getattr(segmenter, "adaptation", None)
    kept = "the feature adapter is kept (Reset weights removes it)" if adaptation is not None and \
        adaptation.adapter is not None else "nothing was adapted"
    return f"Fine-tuning stopped after {steps_done} steps; {kept}."
