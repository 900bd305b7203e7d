"""Parameters of the engine, as dataclasses (saved with results, passed explicitly, never global)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

PrototypeMode = Literal["local", "global"]
SupportMode = Literal["dense", "scribble"]
Modality = Literal["auto", "ct", "mr", "us", "none"]
# The measured defaults of SegmentationParams.refine=None (see refine_for; figures in BENCHMARKS.md).
REFINE_IMAGES_BY_DEFAULT = True
REFINE_VOLUMES_BY_DEFAULT = True  # on a GPU only


@dataclass
class SegmentationParams:
    """Everything that decides what a segmentation looks like.

    encoder:        registry name, see :func:`napari_fewshot.core.encoders.available_encoders`.
    device:         "auto" | "cpu" | "cuda" | "mps" ("auto" takes a GPU when there is one).
    modality:       intensity normalisation: "ct" (HU window), "mr"/"us" (percentiles), "auto" guesses,
                    "none" assumes the data is already in [0, 1].
    input_size:     slices of a volume are resized so their longer side is this many pixels before the
                    encoder (None: native size). Features come out at stride 8 of that size, so a larger
                    size is a finer grid of prototypes (CHAOS-T2 within-3: 0.821 at 256, 0.853 at 384
                    and 512; CT example: 0.815 / 0.862 / 0.858; features cost ~2.2x per step).
    image_input_size: the same for 2D images and image sets such as ultrasound (BUSI 5-shot: 0.36 at 256,
                    0.41 at 384, 0.39 at 512). Kept separate so the two can be tuned apart.
    prototype_mode: "local" (default): every support feature cell is a prototype (plus the class's
                    global one), a class scores by its best match. "global": PANet exactly, one
                    prototype per class and one for background.
    local_grid:     window (in feature cells) over which local prototypes are pooled; 1 keeps every cell.
    local_coverage: a window becomes a local prototype of a class when the class covers this fraction.
    max_local_prototypes: cap per class and support slice (seeded subsample). Per slice, so that adding or
                    correcting a slice never changes what the other slices contribute (matching is then
                    redone for that slice only, see core/matching.py); a 384 px slice has ~2,300 cells.
    image_max_local_prototypes: the same for 2D images and image sets. Lower, because a small lesion's few
                    cells are outvoted by thousands of background cells from every support image (figures
                    in BENCHMARKS.md, "The correction loop").
    scale:          cosine similarity multiplier before the softmax (PANet: 20).
    support_mode:   "dense": a slice with any paint is a support slice and its unpainted pixels are
                    background. "scribble": `background_label` marks background, unpainted is ignored.
    batch_size:     slices per encoder forward pass (halved automatically if a GPU runs out of memory).
    memory_budget_mb: fp16 features kept in memory; beyond it slices spill to disk. A quarter of it more
                    (and an eighth for normalised query cells) keeps per-support-slice matches, so a
                    correction re-matches one slice (see core/matching.py).
    cache_dir:      folder for a persistent feature cache keyed by scan and encoder (None: no persistence);
                    see features.default_cache_dir for the conventional location.
    postprocess:    volumes: 3D consistency; past the outermost painted slice of a class, a slice keeps
                    the class only inside the previous slice's mask grown by `postprocess_grow` pixels,
                    then only the 3D components touching the paint are kept. 2D images and image sets
                    (never treated as a volume): each predicted image keeps each class's largest
                    connected component (see core/postprocess.py).
    postprocess_grow: pixels a mask may grow per slice beyond the painted range (0: it may only shrink).
    smooth_slices:  sigma, in slices, of a Gaussian over neighbouring slices' class similarity before
                    the argmax (volumes only; 0 turns it off).
    self_support:   None (off) or a cosine margin: cells of a query slice whose best class beats the
                    runner-up by more than this join that slice's prototypes, and the slice is matched
                    again (self-support; see predict.self_supported_similarity).
    refine:         "prototypes find, LiteMedSAM delineates" (core/refine.py): every predicted component of a
                    class on a slice becomes a box prompt for LiteMedSAM's mask decoder and the decoded mask
                    replaces it; the 3D clean-up runs afterwards. None (default): on where it was measured to
                    win (see refine_for and BENCHMARKS.md, "LiteMedSAM"); True / False force it.
    refine_margin:  the box is the component's bounding box grown by this fraction of its size per side.
    refine_min_pixels: components smaller than this (pixels of the slice) are left as they are.
    refine_max_components: at most this many components per class and slice are refined, the largest
                    (each is one decoder pass); the others are left as they are.
    refine_mask_prompt: also give the decoder the coarse component as a dense mask prompt.
    refine_max_growth: a decoded mask more than this many times larger (or smaller) than the component it
                    came from is implausible: the coarse component is kept instead (so is an empty one).
    """

    encoder: str = "efficientnet-lite0"
    device: str = "auto"
    modality: Modality = "auto"
    input_size: int | None = 384
    image_input_size: int | None = 384
    prototype_mode: PrototypeMode = "local"
    local_grid: int = 1
    local_coverage: float = 0.5
    max_local_prototypes: int = 4096
    image_max_local_prototypes: int = 512
    scale: float = 20.0
    support_mode: SupportMode = "dense"
    background_label: int | None = None
    batch_size: int = 8
    memory_budget_mb: int = 4096
    cache_dir: str | None = None
    seed: int = 0
    postprocess: bool = True
    postprocess_grow: int = 0
    smooth_slices: float = 0.7
    self_support: float | None = None
    refine: bool | None = None
    refine_margin: float = 0.1
    refine_min_pixels: int = 64
    refine_max_components: int = 3
    refine_mask_prompt: bool = False
    refine_max_growth: float = 3.0

    def __post_init__(self) -> None:
        from ..errors import FewShotError

        if self.prototype_mode not in ("local", "global"):
            raise FewShotError(f"Prototype mode must be 'local' or 'global', not {self.prototype_mode!r}.")
        if self.support_mode not in ("dense", "scribble"):
            raise FewShotError(f"Support mode must be 'dense' or 'scribble', not {self.support_mode!r}.")
        if self.support_mode == "scribble" and self.background_label is None:
            raise FewShotError("Scribble mode needs a background label value (the label you paint background with).")
        if self.modality not in ("auto", "ct", "mr", "us", "none"):
            raise FewShotError(f"Modality must be one of auto, ct, mr, us, none, not {self.modality!r}.")
        if self.self_support is not None and not 0 <= self.self_support < 2:
            raise FewShotError(f"The self-support margin must be between 0 and 2 (cosine), not {self.self_support}.")
        for size in (self.input_size, self.image_input_size):
            if size is not None and size < 32:
                raise FewShotError(f"Input size must be at least 32 pixels, not {size}.")
        if self.postprocess_grow < 0 or self.smooth_slices < 0:
            raise FewShotError("postprocess_grow and smooth_slices must be 0 or more.")
        if self.batch_size < 1 or self.local_grid < 1:
            raise FewShotError("Batch size and local grid must be at least 1.")
        if self.refine not in (None, True, False):
            raise FewShotError(f"refine must be on, off or automatic (None), not {self.refine!r}.")
        if (not 0 <= self.refine_margin <= 1 or self.refine_min_pixels < 1 or self.refine_max_components < 1
                or not self.refine_max_growth > 1):
            raise FewShotError("Refine needs a box margin between 0 and 1, a minimum component size of at least "
                               "1 pixel and a maximum growth above 1.")

    def refine_for(self, stack, device=None) -> bool:
        """Whether segmenting this ImageStack on `device` refines with LiteMedSAM: `refine` when set; else
        the measured default (BENCHMARKS.md, "LiteMedSAM"): on for 2D images and image sets, where it
        costs one embedding per predicted image; on for a volume only on a GPU, since on a CPU it costs
        several times the rest of a volume's segmentation."""
        if self.refine is not None:
            return self.refine
        if not (stack.is_volume and len(stack) > 1):
            return REFINE_IMAGES_BY_DEFAULT
        return REFINE_VOLUMES_BY_DEFAULT and device is not None and str(device).startswith("cuda")

    def input_size_for(self, stack) -> int | None:
        """The encoder input size for an ImageStack: `input_size` for a volume of several slices,
        `image_input_size` for a 2D image or an image set."""
        return self.input_size if stack.is_volume and len(stack) > 1 else self.image_input_size

    def max_local_for(self, stack) -> int:
        """The per-slice cap of local prototypes for an ImageStack (volume or 2D images, as input_size_for)."""
        return self.max_local_prototypes if stack.is_volume and len(stack) > 1 else self.image_max_local_prototypes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SegmentationParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _check_training(steps: int, learning_rate: float, what: str) -> None:
    """The checks FineTuneParams and AdaptParams share: steps >= 0 and a positive learning rate."""
    from ..errors import FewShotError

    if steps < 0:
        raise FewShotError(f"{what} steps must be 0 or more, not {steps}.")
    if not learning_rate > 0:
        raise FewShotError(f"The learning rate must be positive, not {learning_rate}.")


@dataclass
class FineTuneParams:
    """Test-time fine-tuning of the encoder on the painted support slices.

    steps:           optimisation steps (one episode each).
    learning_rate:   Adam learning rate.
    alignment_weight: weight of PANet's prototype alignment loss (1 in the paper).
    augment:         random flips, scaling, rotation and intensity changes of the query side.
    """

    steps: int = 20
    learning_rate: float = 1e-4
    alignment_weight: float = 1.0
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check_training(self.steps, self.learning_rate, "Fine-tune")


@dataclass
class AdaptParams:
    """"Adapt to this scan": self-supervised training of the encoder on the scan being segmented, with
    Felzenszwalb superpixels as pseudo-classes (SSL-ALPNet's episodes, run at test time; no labels).

    steps:          optimisation steps (one superpixel episode each).
    learning_rate:  Adam learning rate.
    superpixel_scale: Felzenszwalb's scale on the encoder-input-sized slice (larger: bigger superpixels).
    min_fraction, max_fraction: a superpixel becomes a pseudo-class when it covers this share of the slice.
    alignment_weight: PANet's prototype alignment loss weight.
    """

    steps: int = 30
    learning_rate: float = 5e-5
    superpixel_scale: float = 150.0
    min_fraction: float = 0.005
    max_fraction: float = 0.15
    alignment_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        from ..errors import FewShotError

        _check_training(self.steps, self.learning_rate, "Adaptation")
        if not 0 < self.min_fraction < self.max_fraction <= 1:
            raise FewShotError("Superpixel fractions must satisfy 0 < min_fraction < max_fraction <= 1.")
