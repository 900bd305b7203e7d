"""Parameters of the two training steps, as dataclasses: Fine-tune on the signed slices or images
(FineTuneParams, core/finetune.py) and "Adapt to this scan" (AdaptParams, core/adapt.py). Defined like
core/config.py's settings (core/settings.py `setting`: label, help, range, flag)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import refuse_non_finite
from .settings import setting

def _check_training(steps: int, learning_rate: float, what: str) -> None:
    """The checks FineTuneParams and AdaptParams share: steps >= 0 and a positive learning rate."""
    from ..errors import FewShotError

    if steps < 0:
        raise FewShotError(f"{what} steps must be 0 or more, not {steps}.")
    if not learning_rate > 0:
        raise FewShotError(f"The learning rate must be positive, not {learning_rate}.")


FINE_TUNE_METHODS = ("encoder", "adapter+decoder", "adapter", "decoder", "calibrate")


@dataclass
class FineTuneParams:
    """What Fine-tune adapts on the signed slices or images (core/finetune.py): `method` "adapter" trains a
    residual adapter (a per-channel scale, or a 1x1 projection) on the cached encoder features (core/feature_adapter.py), "decoder" a handful of
    LiteMedSAM mask-decoder weights where refinement runs (core/decoder_tuning.py), "adapter+decoder" both,
    "encoder" the whole encoder (the original fine-tune: `steps` episodes through its forward and backward),
    "calibrate" per-class offsets on the prototype scores, chosen leave one out (core/calibration.py; no gain)."""

    # Default "decoder", decoder_tuned "bias" (32 weights), on image sets only: the least harmful variant (BENCHMARKS.md
    # "Fine-tune: which variant the button runs", "ftcache", "ft"); on volumes it lowered every CHAOS-T2 protocol (the
    # interactive one by up to 0.01; "ftaudit"), so `decoder_on_volumes` is off. The last layer, the adapter, the
    # whole encoder and class offsets each lowered some protocol by more (BUSI seed 1 to -0.13, CHAOS within-1 -0.07).
    method: str = setting("decoder", label="Adapt",
                          help="decoder (a few LiteMedSAM decoder weights, where it refines), adapter, "
                               "adapter+decoder or encoder (the whole encoder: slow)")
    steps: int = setting(20, label="Encoder steps", minimum=0, maximum=10_000,
                         help="whole encoder: optimisation steps (one episode each)")
    learning_rate: float = setting(1e-4, label="Encoder learning rate", minimum=1e-6, maximum=1.0,
                                   flag="--learning-rate", help="whole encoder: fine-tuning learning rate (Adam)")
    alignment_weight: float = setting(1.0, label="Alignment weight", minimum=0.0, maximum=100.0,
                                      help="weight of PANet's prototype alignment loss (1 in the paper)")
    augment: bool = setting(True, label="Augment",
                            help="random flips, scaling, rotation and intensity changes of the query side")
    seed: int = setting(0, label="Seed", help="seed of the episodes and augmentations")
    adapter_steps: int = setting(40, label="Adapter steps", minimum=0, maximum=10_000,
                                 help="feature adapter: steps (one held-out signed slice each)")
    adapter_min_signed: int = setting(3, label="Adapter needs signed slices", minimum=2, maximum=1_000,
                                      help="feature adapter: trained only with at least this many signed slices")
    adapter_learning_rate: float = setting(1e-3, label="Adapter learning rate", minimum=1e-6, maximum=1.0,
                                           help="feature adapter: learning rate (Adam)")
    adapter_support: int = setting(3, label="Adapter support slices", minimum=1, maximum=1_000,
                                   help="feature adapter: signed slices pooled per step")
    adapter_decay: float = setting(1e-2, label="Adapter decay", minimum=0.0, maximum=100.0,
                                   help="feature adapter: L2 pull of its weights towards the identity")
    adapter_form: str = setting("scale", label="Adapter form",
                                help="feature adapter: scale (a per-channel gain and shift) or projection (1x1, C x C)")
    feature_noise: float = setting(0.1, label="Feature noise", minimum=0.0, maximum=1.0,
                                   help="feature adapter: channel dropout and noise on the query side")
    target_scale: int = setting(1, label="Target scale", minimum=1, maximum=16,
                                help="feature adapter: the loss is scored on the feature grid times this")
    decoder_steps: int = setting(300, label="Decoder steps (at most)", minimum=0, maximum=10_000,
                                 help="LiteMedSAM decoder: at most this many steps on its cached activations "
                                      "(each scores a batch of jittered boxes; stops early when held-out boxes stop improving)")
    decoder_learning_rate: float = setting(1e-3, label="Decoder learning rate", minimum=1e-7, maximum=1.0,
                                           help="LiteMedSAM decoder: learning rate (Adam)")
    decoder_tuned: str = setting("bias", label="Decoder weights",
                                 help="LiteMedSAM decoder: bias (32 weights), last (its hypernetwork's last layer) or mlp")
    decoder_batch: int = setting(16, label="Decoder batch", minimum=1, maximum=1_000,
                                 help="LiteMedSAM decoder: jittered boxes scored per step")
    decoder_boxes: int = setting(8, label="Boxes per object", minimum=2, maximum=1_000,
                                 help="LiteMedSAM decoder: jittered boxes decoded once per signed object (a quarter "
                                      "held out to choose the weights)")
    decoder_decay: float = setting(0.0, label="Decoder decay", minimum=0.0, maximum=100.0,
                                   help="LiteMedSAM decoder: L2 pull of the tuned weights towards LiteMedSAM's own")
    decoder_on_volumes: bool = setting(False, label="Decoder on volumes",
                                       help="LiteMedSAM decoder: tune it on volumes too (off: it lowered CHAOS-T2 Dice)")
    decoder_held_out: str = setting(
        "boxes", label="Decoder held out",
        help="LiteMedSAM decoder: what chooses the kept step: a quarter of each object's boxes (boxes), or every box "
             "of a quarter of the signed objects, at least one (objects: an unseen object; boxes with one object)")
    box_jitter: float = setting(0.5, label="Box jitter", minimum=0.0, maximum=3.0,
                                help="LiteMedSAM decoder: each box side moves out by up to this fraction of its size")
    calibrate_range: float = setting(0.05, label="Offset range", minimum=0.0, maximum=1.0,
                                     help="calibrate: per-class score offsets tried, -range .. range (cosine units)")
    calibrate_step: float = setting(0.005, label="Offset step", minimum=0.001, maximum=1.0,
                                    help="calibrate: step of the offsets tried")
    calibrate_shrink: float = setting(2.0, label="Offset shrink", minimum=0.0, maximum=100.0,
                                      help="calibrate: the chosen offset times n / (n + shrink), n = signed slices showing the class")
    calibrate_objective: str = setting("pooled", label="Offset objective",
                                       help="calibrate: pooled (one Dice over the held-out slices) or mean (of their Dice)")

    def __post_init__(self) -> None:
        from ..errors import FewShotError

        refuse_non_finite(self)
        _check_training(self.steps, self.learning_rate, "Fine-tune")
        if self.method not in FINE_TUNE_METHODS:
            raise FewShotError(f"Fine-tune adapts {', '.join(FINE_TUNE_METHODS)}, not {self.method!r}.")
        if self.adapter_form not in ("scale", "projection"):
            raise FewShotError(f"The feature adapter is a scale or a projection, not {self.adapter_form!r}.")
        if self.decoder_tuned not in ("bias", "last", "mlp"):
            raise FewShotError(f"Fine-tune tunes the decoder's bias, last or mlp weights, not {self.decoder_tuned!r}.")
        if self.calibrate_objective not in ("pooled", "mean"):
            raise FewShotError(f"Calibration scores pooled or mean Dice, not {self.calibrate_objective!r}.")
        if self.decoder_held_out not in ("boxes", "objects"):
            raise FewShotError(f"Fine-tune holds out boxes or objects, not {self.decoder_held_out!r}.")


@dataclass
class AdaptParams:
    """"Adapt to this scan": self-supervised training of the encoder on the scan being segmented, with
    Felzenszwalb superpixels as pseudo-classes (SSL-ALPNet's episodes, run at test time; no labels)."""

    steps: int = setting(30, label="Steps", minimum=0, maximum=10_000,
                         help="optimisation steps (one superpixel episode each)")
    learning_rate: float = setting(5e-5, label="Learning rate", minimum=1e-6, maximum=1.0,
                                   help="adaptation learning rate (Adam)")
    superpixel_scale: float = setting(
        150.0, label="Superpixel scale", minimum=1.0, maximum=10_000.0,
        help="Felzenszwalb's scale on the encoder-input-sized slice (larger: bigger superpixels)")
    min_fraction: float = setting(
        0.005, label="Smallest superpixel", minimum=1e-4, maximum=0.1,
        help="a superpixel becomes a pseudo-class when it covers at least this share of the slice")
    max_fraction: float = setting(0.15, label="Largest superpixel", minimum=0.01, maximum=1.0,
                                  help="... and at most this share")
    alignment_weight: float = setting(1.0, label="Alignment weight", minimum=0.0, maximum=100.0,
                                      help="PANet's prototype alignment loss weight")
    seed: int = setting(0, label="Seed", help="seed of the superpixel episodes")

    def __post_init__(self) -> None:
        from ..errors import FewShotError

        refuse_non_finite(self)
        _check_training(self.steps, self.learning_rate, "Adaptation")
        if not 0 < self.min_fraction < self.max_fraction <= 1:
            raise FewShotError("Superpixel fractions must satisfy 0 < min_fraction < max_fraction <= 1.")
