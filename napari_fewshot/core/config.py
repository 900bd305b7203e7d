"""Parameters of the engine, as dataclasses (saved with results, passed explicitly, never global).

Each setting is defined once, here: its default, and in its field's metadata (core/settings.py `setting`) a
label and a one-line help, the range a form offers and a bank file may hold, whether it changes the encoder
features (the widget's cache rule: :func:`feature_settings`), whether it describes this machine rather than
the segmentation (a prototype bank does not carry it: :func:`machine_local_fields`) and its command-line
flag (the CLI's options, defaults and help are built from it). core/settings.py reads the metadata as
`Setting` records named by dotted path ("input_size", "refine.margin").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from .settings import params_from_dict, setting, setting_values, settings_of

PrototypeMode = Literal["local", "global"]
SupportMode = Literal["dense", "scribble"]
Modality = Literal["auto", "ct", "mr", "us", "none"]
SupportAugment = Literal["none", "flip", "scale", "flip+scale"]  # core/augment.py VIEWS
LocalSampling = Literal["random", "grid", "fps", "kmeans"]  # core/subsample.py
FeatureGrid = Literal["native", "centred"]  # core/encoders/efficientnet_lite.py
SupportReach = Literal["nearest", "all"]  # core/slice_reach.py
LOCAL_SAMPLINGS = get_args(LocalSampling)
# The measured defaults of RefineParams.enabled=None (see RefineParams.enabled_for; figures in BENCHMARKS.md).
REFINE_IMAGES_BY_DEFAULT = True
REFINE_VOLUMES_BY_DEFAULT = True  # on every device: the widget streams it in after the coarse result
MAX_INPUT_SIZE = 2_048  # encoder input side in pixels; larger asks for absurd memory


def refuse_non_finite(params: Any) -> None:
    """FewShotError (one sentence) when a number of the params dataclass is NaN or infinite: no range check
    catches them (every comparison with NaN is false)."""
    from ..errors import FewShotError

    for item in fields(params):
        value = getattr(params, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            label = item.metadata.get("label", item.name)
            raise FewShotError(f"{label} must be a finite number, not {value}.")


@dataclass
class RefineParams:
    """"Prototypes find, LiteMedSAM delineates" (core/refine.py): every predicted component of a class on a
    slice becomes a box prompt for LiteMedSAM's mask decoder and the decoded mask replaces it; the 3D clean-up
    runs afterwards. None (default) is on where it was measured to win (see :meth:`enabled_for` and
    BENCHMARKS.md, "LiteMedSAM")."""

    enabled: bool | None = setting(
        None, label="Refine with LiteMedSAM", flag="--refine",
        help="LiteMedSAM redraws each predicted object from its box (default: on where it was measured to help, "
             "see BENCHMARKS.md)")
    margin: float = setting(0.1, label="Box margin", minimum=0.0, maximum=1.0,
                            help="the box is the component's bounding box grown by this fraction of its size per side")
    min_pixels: int = setting(64, label="Smallest component (pixels)", minimum=1, maximum=10**8,
                              help="components smaller than this many pixels of the slice are left as they are")
    max_components: int = setting(
        3, label="Components per class and slice", minimum=1, maximum=10_000,
        help="at most this many components per class and slice are refined, the largest (one decoder pass each)")
    mask_prompt: bool = setting(False, label="Mask prompt",
                                help="also give the decoder the coarse component as a dense mask prompt")
    max_growth: float = setting(
        3.0, label="Largest growth", minimum=1.01, maximum=1_000.0,
        help="a decoded mask more than this many times larger (or smaller) than its component is implausible: "
             "the component is kept instead (so is an empty one); above 1")
    reuse_shift: float = setting(
        0.0, label="Box reuse tolerance (px)", minimum=0.0, maximum=64.0,
        help="after a correction, a box whose corners moved by at most this many pixels of LiteMedSAM's 256-px "
             "input reuses the decode of the box it moved from on that slice (0: only the very same box)")
    reuse_changed: float = setting(
        0.05, label="Component reuse tolerance", minimum=0.0, maximum=1.0,
        help="after a correction, a component that differs from one decoded on that slice (same class) by at most "
             "this share of its pixels reuses that decode instead of decoding its moved box (0: off; 0.05 changed "
             "Dice by <= 0.0001 on the CT sample and 512x512x100, BENCHMARKS.md)")
    reuse_pixels: float = setting(
        0.0, label="Component reuse tolerance (px)", minimum=0.0, maximum=65536.0,
        help="after a correction, a component that differs from one decoded on that slice (same class) by at most "
             "this many pixels of LiteMedSAM's 256-px input reuses that decode too, whatever its size (0: off)")
    ahead: int = setting(
        20, label="Embeddings ahead (slices)", minimum=0, maximum=10_000,
        help="after a volume's refinement, in idle time, LiteMedSAM embeds the slices up to this many beyond each "
             "class's first and last refined slice, nearest first, so a correction that extends an organ does not "
             "wait for them (0: off; the widget stops it when you paint or run a job)")
    select: bool = setting(
        True, label="Propose and select (2D images)", flag="--select",
        help="on 2D images and image sets, LiteMedSAM draws many candidates per class (boxes of the components, "
             "around the map's peaks, at the support objects' size) and keeps the one that stands out most from "
             "its surroundings in its embedding (core/select_objects.py), with the clean-up on; an image you painted on "
             "keeps every object, and volumes keep one box per component")

    def __post_init__(self) -> None:
        from ..errors import FewShotError

        refuse_non_finite(self)
        if self.enabled not in (None, True, False):
            raise FewShotError(f"Refine must be on, off or automatic (None), not {self.enabled!r}.")
        if not (0 <= self.margin <= 1 and self.reuse_shift >= 0 and 0 <= self.reuse_changed <= 1
                and self.reuse_pixels >= 0 and self.ahead >= 0 and self.min_pixels >= 1 and self.max_components >= 1
                and self.max_growth > 1):
            raise FewShotError("Refine needs a box margin between 0 and 1, a minimum component size of at least "
                               "1 pixel, a maximum growth above 1, reuse tolerances of at least 0 (a share of "
                               "at most 1) and at least 0 embeddings ahead.")

    def enabled_for(self, stack, device=None) -> bool:
        """Whether segmenting this ImageStack on `device` refines with LiteMedSAM: `enabled` when set; else
        the measured default (BENCHMARKS.md, "LiteMedSAM" and "Coarse first, refined as it arrives"): on for
        2D images and image sets, and for volumes on every device. On a CPU a volume's refinement costs
        several times its coarse segmentation: the widget shows the coarse result first and streams the
        refined slices in (core/refinement.py); the CLI and the demo wait for it (`--no-refine` for speed).
        `device` is kept for callers; no default depends on it."""
        if self.enabled is not None:
            return self.enabled
        return REFINE_VOLUMES_BY_DEFAULT if stack.is_3d else REFINE_IMAGES_BY_DEFAULT


@dataclass
class SegmentationParams:
    """Everything that decides what a segmentation looks like; each field's metadata says what it is.

    Notes the one-line help has no room for:
    input_size:     features come out at stride 8 of that size, so a larger size is a finer grid of prototypes
                    (CHAOS-T2 within-3: 0.821 at 256, 0.853 at 384 and 512; CT example: 0.815 / 0.862 / 0.858;
                    features cost ~2.2x per step). image_input_size, for 2D images and image sets, is kept
                    separate so the two can be tuned apart (BUSI 5-shot: 0.36 at 256, 0.41 at 384, 0.39 at 512).
    max_local_prototypes: per slice, so that adding or correcting a slice never changes what the other slices
                    contribute (matching is then redone for that slice only, see core/matching.py); a 384 px
                    slice has ~2,300 cells. image_max_local_prototypes is lower, because a small lesion's few
                    cells are outvoted by thousands of background cells from every support image (figures in
                    BENCHMARKS.md, "The correction loop").
    memory_budget_mb: a quarter of it more (and an eighth for normalised query cells) keeps per-support-slice
                    matches, so a correction re-matches one slice (see core/matching.py).
    cache_dir:      see features.default_cache_dir for the conventional location.
    postprocess:    see core/postprocess.py; self_support: see predict.self_supported_similarity.
    """

    encoder: str = setting("auto", label="Encoder", flag="--encoder",
                           help="registry name (napari_fewshot.core.encoders.available_encoders), or auto: "
                                "efficientnet-lite0 for volumes, efficientnet-lite0+litemedsam for 2D images")
    feature_grid: FeatureGrid = setting(
        "native", label="Feature grid", flag="--feature-grid",
        help="native: the encoder's cells where the network puts them; centred (EfficientNet-Lite): moved onto "
             "the pixels they are drawn on (better coarse masks across patients; see BENCHMARKS.md, session 23)")
    device: str = setting("auto", label="Device", machine_local=True, flag="--device",
                          help="auto (a GPU when there is one), cpu, cuda or mps")
    modality: Modality = setting(
        "auto", label="Modality",
        help='intensity normalisation: "ct" (HU window), "mr"/"us" (percentiles), "auto" guesses, "none" '
             "assumes the data is already in [0, 1]")
    input_size: int | None = setting(
        384, label="Input size (volumes, px)", minimum=32, maximum=MAX_INPUT_SIZE, flag="--input-size",
        help="longer side of a volume's slice as the encoder sees it, in pixels")
    image_input_size: int | None = setting(
        384, label="Input size (2D images, px)", minimum=32, maximum=MAX_INPUT_SIZE, flag="--image-input-size",
        help="the same for 2D images and image sets such as ultrasound")
    prototype_mode: PrototypeMode = setting(
        "local", label="Prototypes", flag="--prototypes",
        help="local: every support feature cell is a prototype, a class scores by its best match; global: PANet, "
             "one per class")
    local_grid: int = setting(
        1, label="Local grid", minimum=1, maximum=64,
        help="window (in feature cells) over which local prototypes are pooled; 1 keeps every cell")
    local_coverage: float = setting(
        0.5, label="Local coverage", minimum=0.0, maximum=1.0,
        help="a window becomes a local prototype of a class when the class covers this fraction")
    max_local_prototypes: int = setting(4096, label="Local prototypes per slice (volumes)", minimum=0, maximum=10**6,
                                        help="cap per class and support slice (seeded subsample)")
    image_max_local_prototypes: int = setting(
        512, label="Local prototypes per image", minimum=0, maximum=10**6,
        help="the same for 2D images and image sets")
    image_local_sampling: LocalSampling = setting(
        "random", label="Local prototype sampling (2D images)", affects_features=False, flag="--image-local-sampling",
        help="which cells a 2D image keeps past the cap: random (seeded), grid, fps or kmeans (core/subsample.py)")
    scale: float = setting(20.0, label="Similarity scale", minimum=1e-3, maximum=1e4, flag="--scale",
                           help="cosine similarity multiplier before the softmax, as in PANet")
    support_mode: SupportMode = setting(
        "dense", label="Support mode", affects_features=False,
        help="dense: a slice with any paint is a support slice and its unpainted pixels are background; "
             "scribble: the background label marks background, unpainted is ignored")
    background_label: int | None = setting(
        None, label="Background label", affects_features=False, flag="--background-label", metavar="N",
        help="the label value painted on background (scribble mode only, required there)")
    batch_size: int = setting(8, label="Batch size", machine_local=True, minimum=1, maximum=1024,
                              help="slices per encoder forward pass (halved automatically if a GPU runs out of memory)")
    memory_budget_mb: int = setting(4096, label="Memory budget (MB)", machine_local=True,
                                    help="fp16 features kept in memory; beyond it slices spill to disk")
    cache_dir: str | None = setting(
        None, label="Feature cache folder", machine_local=True,
        help="folder for a persistent feature cache keyed by scan and encoder (None: no persistence)")
    seed: int = setting(0, label="Seed", help="seed of the subsample of local prototypes")
    postprocess: bool = setting(
        True, label="Clean up masks", affects_features=False, flag="--postprocess",
        help="3D consistency of volumes: no organ past where it ends, only the components touching the paint; "
             "2D images: each class's largest component")
    postprocess_grow: int = setting(
        0, label="Growth per slice (px)", affects_features=False, minimum=0, maximum=1000, flag="--postprocess-grow",
        metavar="PX", help="pixels a mask may grow per slice beyond the painted range (0: it may only shrink)")
    postprocess_detach: float = setting(
        3.0, label="Detached end ratio", affects_features=False, minimum=0.0, maximum=1000.0,
        flag="--postprocess-detach", metavar="RATIO", help="beyond the painted range, a slice ends the organ when the object predicted there is more than this "
             "many times its part that continues the previous slice: a larger neighbour took over (0: off)")
    smooth_slices: float = setting(
        0.7, label="Smooth across slices", affects_features=False, minimum=0.0, maximum=100.0, flag="--smooth-slices",
        help="sigma, in slices, of the smoothing of class scores across neighbouring slices of a volume (0: off)")
    self_support: float | None = setting(
        None, label="Self-support margin", affects_features=False, minimum=0.0, maximum=1.99, flag="--self-support",
        metavar="MARGIN",
        help="a query slice's cells whose best class wins by more than this margin (cosine) become prototypes "
             "for that slice, which is matched again (off by default)")
    nearest_supports: int = setting(
        0, label="Nearest painted images", affects_features=False, minimum=0, maximum=10**6,
        flag="--nearest-supports", metavar="K",
        help="image sets: each image is matched (and its objects chosen) against the K painted images that look "
             "most like it as a whole (core/nearest.py); 0: every painted image. Volumes: always every slice")
    support_reach: SupportReach = setting(
        "nearest", label="Painted slices per slice (volumes)", affects_features=False, flag="--support-reach",
        help="nearest: each slice of a volume is matched against the painted slices next to it, above and below, "
             "for each class (core/slice_reach.py); all: against every painted slice")
    support_augment: SupportAugment = setting(
        "none", label="Support views (2D images)", affects_features=False, flag="--support-augment",
        help="2D images and image sets: prototypes also from the painted images flipped left-right (flip), rescaled "
             "x0.8 and x1.25 (scale) or both (core/augment.py); volumes never")
    query_flip: bool = setting(
        False, label="Flipped query (2D images)", affects_features=False, flag="--query-flip",
        help="2D images and image sets: average each image's class maps with those of its left-right mirror "
             "(one more encoder pass and matching per image, core/augment.py); volumes never")
    refine: RefineParams = setting(factory=RefineParams, label="Refine", affects_features=False,
                                   help="LiteMedSAM redraws each predicted object (core/refine.py)")

    def __post_init__(self) -> None:
        from ..errors import FewShotError

        refuse_non_finite(self)
        if not isinstance(self.refine, RefineParams):
            raise FewShotError(f"refine must be a RefineParams (e.g. RefineParams(enabled=True)), not {self.refine!r}.")
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
        if self.postprocess_detach < 0:
            raise FewShotError(f"The detached end ratio must be 0 (off) or more, not {self.postprocess_detach}.")
        if self.support_augment not in ("none", "flip", "scale", "flip+scale"):
            raise FewShotError(f"Support views must be none, flip, scale or flip+scale, not {self.support_augment!r}.")
        if self.image_local_sampling not in LOCAL_SAMPLINGS:
            raise FewShotError(f"Local prototype sampling must be one of {', '.join(LOCAL_SAMPLINGS)}, "
                               f"not {self.image_local_sampling!r}.")
        if self.support_reach not in ("nearest", "all"):
            raise FewShotError(f"Painted slices per slice must be nearest or all, not {self.support_reach!r}.")
        if self.nearest_supports < 0:
            raise FewShotError(f"Nearest painted images must be 0 (every one) or more, not {self.nearest_supports}.")
        if self.batch_size < 1 or self.local_grid < 1:
            raise FewShotError("Batch size and local grid must be at least 1.")

    def encoder_for(self, stack) -> str:
        """The registry name of the encoder for an ImageStack: `encoder`, or what "auto" stands for on it
        (core/encoders resolve_encoder: lite0 for a volume of several slices, lite0 with LiteMedSAM for a 2D image
        or an image set on the native grid)."""
        from .encoders import resolve_encoder

        return resolve_encoder(self.encoder, not stack.is_3d, self.feature_grid)

    def input_size_for(self, stack) -> int | None:
        """The encoder input size for an ImageStack: `input_size` for a volume of several slices,
        `image_input_size` for a 2D image or an image set."""
        return self.input_size if stack.is_3d else self.image_input_size

    def max_local_for(self, stack) -> int:
        """The per-slice cap of local prototypes for an ImageStack (volume or 2D images, as input_size_for)."""
        return self.max_local_prototypes if stack.is_3d else self.image_max_local_prototypes

    def local_sampling_for(self, stack) -> str:
        """How the cap picks local prototypes for an ImageStack: always "random" (seeded) for a volume."""
        return "random" if stack.is_3d else self.image_local_sampling

    def local_cap_for(self, stack) -> tuple[int, int, str]:
        """(cap, seed, sampling) of each support slice's local prototypes (core/subsample.py) for an ImageStack."""
        return self.max_local_for(stack), self.seed, self.local_sampling_for(stack)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, groups as nested dicts ({"refine": {"enabled": ..., ...}})."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SegmentationParams":
        """Params from :meth:`to_dict`'s dict, or from the flat layout written before the settings were grouped
        (``refine``, ``refine_margin``, ...: prototype banks of schema 1, older reports); unknown keys dropped."""
        return params_from_dict(cls, grouped_layout(values))


# The flat layout of the refine settings written before they were grouped: old key -> RefineParams field.
_FLAT_REFINE = {"refine": "enabled", "refine_margin": "margin", "refine_min_pixels": "min_pixels",
                "refine_max_components": "max_components", "refine_mask_prompt": "mask_prompt",
                "refine_max_growth": "max_growth"}


def grouped_layout(values: dict[str, Any]) -> dict[str, Any]:
    """A params dict in the grouped layout of :meth:`SegmentationParams.to_dict`: the refine settings of the
    flat layout (``refine``, ``refine_margin``, ...) gathered into their group; a grouped dict is returned as is."""
    if isinstance(values.get("refine"), dict) or not any(key in values for key in _FLAT_REFINE):
        return values
    grouped = {key: value for key, value in values.items() if key not in _FLAT_REFINE}
    grouped["refine"] = {new: values[old] for old, new in _FLAT_REFINE.items() if old in values}
    return grouped


def feature_settings(params: SegmentationParams) -> dict[str, Any]:
    """The settings the encoder features of a scan depend on (dotted name -> value): two params with equal
    feature settings can share cached features; the others only change how features are used."""
    values = setting_values(params)
    return {s.name: values[s.name] for s in settings_of(type(params)) if s.affects_features}


def machine_local_fields(cls: type = SegmentationParams) -> tuple[str, ...]:
    """Names of the settings that describe this machine (device, folders, memory), not the segmentation: a
    prototype bank does not carry them to another machine."""
    return tuple(s.name for s in settings_of(cls) if s.machine_local)
