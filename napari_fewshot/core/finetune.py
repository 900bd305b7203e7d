"""Test-time fine-tuning of the encoder on the painted support slices (PANet's training, in miniature).

Each step is one 1-way episode: a class k and two support slices that show it; one is the
support, the other (augmented) the query. Loss = cross-entropy of the query's segmentation +
`alignment_weight` x PANet's prototype alignment loss (prototypes from the query's own prediction
must segment the support). With a single support slice the query is an augmented copy of it.
BatchNorm statistics stay frozen: a batch of two slices would ruin them.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Generator

import numpy as np
import torch
import torch.nn.functional as F

from .config import SegmentationParams
from .encoders import Encoder
from .normalization import IMAGENET, InputNormalization, to_encoder_input
from .predict import class_similarity, upsample
from .progress import Progress
from .prototypes import build_prototypes
from .stack import ImageStack
from .support import IGNORE, SupportSet
from .triton_guard import keep_triton_out


JITTER_UNITS = IMAGENET
"""The photometric jitter's strengths are in ImageNet-normalised units (where they were chosen), whatever
the encoder's own input normalisation: the same jitter in pixel terms for every encoder."""


def augment(image: torch.Tensor, target: torch.Tensor, rng: random.Random,
            normalization: InputNormalization) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation (±15°), scale (0.85-1.15), shift, gamma and noise.

    image: (1, 3, H, W) encoder input (normalised as `normalization` says); target: (H, W) long. Pixels
    that leave the frame are IGNORE. Returns the warped image, normalised the same way, and its target.
    """
    same_units = normalization == JITTER_UNITS
    if not same_units:
        image = JITTER_UNITS.apply(normalization.undo(image))
    angle = math.radians(rng.uniform(-15, 15))
    scale = rng.uniform(0.85, 1.15)
    tx, ty = rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    label = F.grid_sample((target + 1)[None, None].to(image.dtype), grid, mode="nearest",
                          padding_mode="zeros", align_corners=False)[0, 0].long() - 1
    gamma_shift = rng.uniform(-0.2, 0.2)  # brightness/contrast jitter in JITTER_UNITS
    warped = warped * rng.uniform(0.9, 1.1) + gamma_shift + 0.05 * torch.randn_like(warped)
    if not same_units:
        warped = normalization.apply(JITTER_UNITS.undo(warped))
    return warped, label


def _binary_target(target: np.ndarray, k: int) -> torch.Tensor:
    """(H, W) int16 multi-class target -> (H, W) long: 1 for class k, 0 for the rest, IGNORE kept."""
    t = torch.from_numpy(target.astype(np.int64))
    return torch.where(t == IGNORE, torch.full_like(t, IGNORE), (t == k).long())


def _episode_loss(features_s, target_s, features_q, target_q, seg: SegmentationParams, weight: float):
    """Segmentation loss of the query + alignment loss back onto the support (both (1, C, h, w))."""
    protos = build_prototypes([features_s[0]], [target_s], [1], seg.prototype_mode, seg.local_grid,
                              seg.local_coverage, seg.max_local_prototypes, seg.seed)
    logits_q = upsample(seg.scale * class_similarity(features_q, protos), tuple(target_q.shape))
    loss = F.cross_entropy(logits_q, target_q[None], ignore_index=IGNORE)
    if weight > 0:
        predicted = logits_q.argmax(1)[0].detach()
        if predicted.any() and not predicted.all():
            back = build_prototypes([features_q[0]], [predicted], [1], "global")
            logits_s = upsample(seg.scale * class_similarity(features_s, back), tuple(target_s.shape))
            loss = loss + weight * F.cross_entropy(logits_s, target_s[None], ignore_index=IGNORE)
    return loss


Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(support input (1, 3, h, w), support target (h, w), query input (1, 3, h', w'), query target (h', w')):
inputs normalised for the encoder (Encoder.normalization); targets are long with 1 = the episode's class,
0 = background, IGNORE = unknown."""


def support_episodes(stack: ImageStack, support: SupportSet, seg: SegmentationParams, augment_query: bool,
                     device: torch.device, normalization: InputNormalization,
                     ) -> Callable[[random.Random], Episode | None]:
    """Episodes between painted support slices: a class k and two slices that show it (one slice: an
    augmented copy of itself as the query), as input normalised for the encoder (`normalization`).
    Returns a function rng -> Episode (None: no usable episode)."""
    slices_of = {k: [i for i in support.slice_indices if (support.targets[i] == k).any()]
                 for k in range(1, support.n_classes + 1)}

    def make(rng: random.Random) -> Episode | None:
        k = rng.choice([k for k, s in slices_of.items() if s])
        pair = rng.sample(slices_of[k], 2) if len(slices_of[k]) > 1 else slices_of[k] * 2
        inputs, targets = [], []
        for n, index in enumerate(pair):
            x = to_encoder_input(stack.slice(index)[None], seg.input_size_for(stack), normalization).to(device)
            t = _binary_target(support.targets[index], k).to(device)
            t = F.interpolate(t[None, None].float() + 1, size=x.shape[-2:], mode="nearest")[0, 0].long() - 1
            if n == 1 and augment_query:
                x, t = augment(x, t, rng, normalization)
            inputs.append(x)
            targets.append(t)
        return inputs[0], targets[0], inputs[1], targets[1]

    return make


def train_on_episodes(encoder: Encoder, make_episode: Callable[[random.Random], Episode | None], steps: int,
                      learning_rate: float, alignment_weight: float, seg: SegmentationParams, seed: int,
                      what: str = "fine-tune") -> Generator[Progress, None, list[float]]:
    """Train `encoder` in place for `steps` episodes from `make_episode`; yields Progress(step, steps, loss=...).

    An episode whose query lost the class (augmentation pushed it out of the frame) or whose support
    has no background is skipped (the step still counts, so the job always ends).
    """
    keep_triton_out()  # before the optimizer imports torch._dynamo (see core/triton_guard.py)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=learning_rate)
    encoder.eval()  # frozen BatchNorm statistics; gradients still flow
    losses: list[float] = []
    for step in range(steps):
        episode = make_episode(rng)
        if episode is None:
            continue
        x_s, t_s, x_q, t_q = episode
        if not (t_q == 1).any() or not (t_s == 0).any():
            continue
        features = encoder(torch.cat([x_s, x_q])) if x_s.shape == x_q.shape else None
        f_s, f_q = (features[:1], features[1:]) if features is not None else (encoder(x_s), encoder(x_q))
        loss = _episode_loss(f_s, t_s, f_q, t_q, seg, alignment_weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        yield Progress(step + 1, steps, f"{what} step {step + 1} of {steps}", loss=losses[-1])
    return losses


class Adaptation:
    """What Fine-tune's cheap methods changed on one segmenter (FineTuneParams.method other than "encoder"):
    the feature adapter, applied by its FeatureCache (core/feature_adapter.py), and the LiteMedSAM mask
    decoder's tuned weights, loaded into its LiteMedSAM service (core/decoder_tuning.py, core/sam_service.py).
    No encoder pass.

    `summary` says what the last run adapted and on how many signed slices (None: nothing yet), `seconds` how long.
    """

    def __init__(self):
        self.adapter = None  # feature_adapter.FeatureAdapter
        self.decoder_state: dict[str, torch.Tensor] | None = None
        self.calibration = None  # calibration.Calibration: per-class score offsets ("calibrate")
        self.summary: str | None = None
        self.seconds = 0.0  # how long the last run took
        self.tag: str | None = None  # who loaded these weights (load_arrays' `tag`, e.g. a bank); None once they change

    @property
    def changed(self) -> bool:
        return self.adapter is not None or self.decoder_state is not None or self.calibration is not None

    def offsets_for(self, class_ids) -> np.ndarray | None:
        """(K + 1,) score offsets for `class_ids` (core/calibration.py), None when none applies."""
        return None if self.calibration is None else self.calibration.vector(class_ids)

    def attach(self, cache) -> None:
        """A new FeatureCache of the segmenter (set_image): the adapter applies to it too."""
        if self.adapter is not None and cache is not None:
            cache.set_adapter(self.adapter)

    def run(self, segmenter, support: SupportSet, params) -> Generator[Progress, None, list[float]]:
        """Adapt on `segmenter`'s current image and its signed slices `support` (painted, corrected and
        marked-empty slices, SupportSet); yields Progress over both stages, returns their losses."""
        import time

        from .feature_adapter import signed_features, train_adapter
        from .decoder_tuning import tune_decoder

        started = time.perf_counter()
        self.tag = None
        cache, seg = segmenter.cache, segmenter.params
        signed = support.slice_indices
        if params.method == "calibrate":
            return (yield from self._calibrate(segmenter, support, params, started))
        # Too few signed slices to hold one out and learn (one matches itself): measured to hurt (BENCHMARKS.md).
        use_adapter = (params.method in ("adapter+decoder", "adapter") and params.adapter_steps > 0
                       and len(signed) >= params.adapter_min_signed)
        refines = seg.refine.enabled_for(cache.stack, segmenter.device)
        volume_off = cache.stack.is_volume and not params.decoder_on_volumes  # measured to lower Dice there
        use_decoder = (params.method in ("adapter+decoder", "decoder") and params.decoder_steps > 0 and refines
                       and not volume_off)
        total = (params.adapter_steps if use_adapter else 0) + (params.decoder_steps if use_decoder else 0)
        losses: list[float] = []
        done = []
        kept_none = None  # why the decoder kept its own weights, when it did
        if use_adapter:
            yield from cache.compute(signed)
            features = signed_features(cache.get_raw, signed)
            job = train_adapter(features, support.targets, support.n_classes, seg, params,
                                seg.max_local_for(cache.stack))
            adapter, stage = yield from _renumbered(job, 0, total)
            losses += stage
            self.adapter = adapter
            cache.set_adapter(adapter)
            done.append(f"feature adapter ({sum(p.numel() for p in adapter.parameters())} weights)")
        if use_decoder:
            examples = yield from _decoder_examples(segmenter, support, signed)
            service = segmenter.sam
            state, stage, kept = yield from _renumbered(tune_decoder(service.prompter, examples, params),
                                                        params.adapter_steps if use_adapter else 0, total)
            losses += stage
            if kept:
                self.load_decoder(service, state)
                done.append(f"LiteMedSAM mask decoder ({_tuned_count(state, params):,} weights, trained {kept} steps "
                            f"on {len(examples)} signed object{'s' if len(examples) != 1 else ''})")
            elif not examples:
                kept_none = "no signed object was large enough for the LiteMedSAM decoder"
            else:
                kept_none = (f"no LiteMedSAM decoder step beat its own weights on held-out boxes "
                             f"({len(stage)} tried)")
        kind = "slice" if cache.stack.is_volume else "image"
        signed_words = f"{len(signed)} signed {kind}{'s' if len(signed) != 1 else ''}"
        if done:
            self.summary = f"Adapted the {' and the '.join(done)} on {signed_words}" + \
                (f"; {kept_none}" if kept_none else "")
        elif kept_none:
            self.summary = f"Adapted nothing ({kept_none}, on {signed_words})"
        else:
            why = []
            if params.method in ("adapter+decoder", "adapter"):
                why.append(f"the feature adapter needs {params.adapter_min_signed} signed {kind}s, "
                           f"there {'is' if len(signed) == 1 else 'are'} {len(signed)}")
            if params.method in ("adapter+decoder", "decoder") and not refines:
                why.append("the LiteMedSAM decoder is tuned only where refinement runs (off here)")
            elif params.method in ("adapter+decoder", "decoder") and volume_off:
                why.append("the LiteMedSAM decoder is not tuned on volumes unless Decoder on volumes is ticked: "
                           "on test MR scans it made the masks worse")
            self.summary = f"Adapted nothing ({'; '.join(why)})"
        self.seconds = time.perf_counter() - started
        return losses

    def _calibrate(self, segmenter, support: SupportSet, params, started: float):
        """Fine-tune "calibrate" (core/calibration.py): per-class offsets chosen leave one out on the signed slices."""
        import time

        from .calibration import run_calibration

        yield from segmenter.cache.compute(support.slice_indices)
        yield Progress(0, 1, "calibrating on the signed slices")
        chosen = run_calibration(segmenter, support, params)
        self.calibration = chosen if any(chosen.offsets.values()) else None
        n = len(support.slice_indices)
        kind = "slice" if segmenter.cache.stack.is_volume else "image"
        seconds = time.perf_counter() - started
        parts = [f"label {c} {o:+.3f}" if o else f"label {c} 0.000" + (" (needs 2 signed)" if chosen.shown[c] < 2 else "")
                 for c, o in chosen.offsets.items()]
        self.summary = f"Calibrated {', '.join(parts)} on {n} signed {kind}{'s' if n != 1 else ''} in {seconds:.1f} s"
        self.seconds = seconds
        yield Progress(1, 1, self.summary)
        return [chosen.loo_dice[c][1] for c in chosen.loo_dice]

    def load_decoder(self, service, state: dict[str, torch.Tensor] | None) -> None:
        """Decode with tuned weights on `service` (a LiteMedSAMService; None: its original ones). The
        embeddings stay; what was refined with the other weights is decoded again (the service's
        decoder_version is part of what the refiner remembers)."""
        if state is None:
            service.reset_decoder()
        else:
            service.load_decoder_state(state)
        self.decoder_state = state

    def load_adapter(self, cache, state: dict[str, torch.Tensor] | None) -> None:
        """A saved adapter's weights (e.g. a bank's; None: no adapter), applied to `cache`."""
        from .feature_adapter import FeatureAdapter

        self.adapter = None if state is None else FeatureAdapter.from_state(state)
        if cache is not None:
            cache.set_adapter(self.adapter)

    def arrays(self) -> dict[str, np.ndarray]:
        """What a prototype bank saves of this adaptation (core/bank_format.py entries): "adapter/<key>" (the
        adapter's state_dict) and "decoder/<key>" (the decoder's tuned weights only), float32."""
        from .decoder_tuning import TUNED

        out = {f"adapter/{k}": v.detach().cpu().float().numpy() for k, v in
               (self.adapter.state_dict() if self.adapter is not None else {}).items()}
        out.update({f"decoder/{k}": v.detach().cpu().float().numpy() for k, v in (self.decoder_state or {}).items()
                    if k.startswith(TUNED)})
        if self.calibration is not None:
            out.update({f"calibration/{c}": np.array([o], np.float32) for c, o in self.calibration.offsets.items()})
        return out

    def load_arrays(self, segmenter, arrays: dict[str, np.ndarray], tag: str | None = None) -> None:
        """Apply a bank's :meth:`arrays` to `segmenter` (nothing in them: nothing adapted), remembered as `tag`.
        FewShotError when they do not fit its feature adapter or LiteMedSAM decoder."""
        from ..errors import FewShotError

        adapter = {k[len("adapter/"):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("adapter/")}
        decoder = {k[len("decoder/"):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("decoder/")}
        offsets = {k[len("calibration/"):]: v for k, v in arrays.items() if k.startswith("calibration/")}
        try:
            self._load_offsets(offsets)
            self.load_adapter(segmenter.cache, adapter or None)
            if decoder:
                service = segmenter.sam
                service.reset_decoder()  # the bank's tuned entries go onto LiteMedSAM's own weights
                state = service.decoder_state()
                state.update({k: v.to(state[k].device, state[k].dtype) for k, v in decoder.items()})
                self.load_decoder(service, state)
        except (RuntimeError, KeyError, ValueError) as err:
            self.reset(segmenter)
            reason = str(err).splitlines()[0]
            raise FewShotError(f"The bank's adapted weights do not fit this model ({reason}).") from err
        self.tag = tag
        parts = [name for name, there in (("feature adapter", adapter), ("LiteMedSAM decoder", decoder),
                                          ("class offsets", self.calibration)) if there]
        self.summary = f"Loaded the {' and '.join(parts)} a bank adapted" if parts else None
        self.seconds = 0.0

    def reset(self, segmenter) -> None:
        """Remove the adapter and give the decoder back its original weights (instant: nothing recomputed)."""
        if self.adapter is not None and segmenter.cache is not None:
            segmenter.cache.set_adapter(None)
        self.adapter = None
        if self.decoder_state is not None and segmenter._sam is not None:
            self.load_decoder(segmenter._sam, None)
        self.decoder_state = None
        self.calibration = None
        self.summary = None
        self.tag = None

    def _load_offsets(self, offsets: dict[str, np.ndarray]) -> None:
        """A bank's "calibration/<class id>" entries (one float each) as the current calibration (none: no offsets)."""
        from .calibration import Calibration

        chosen = {int(c): float(np.asarray(v).reshape(-1)[0]) for c, v in offsets.items()}
        self.calibration = Calibration(chosen, {c: 0 for c in chosen}) if any(chosen.values()) else None


def _tuned_count(state: dict[str, torch.Tensor], params) -> int:
    """How many decoder weights Fine-tune trained (FineTuneParams.decoder_tuned's part of `state`)."""
    from .decoder_tuning import TUNED_PARTS

    return sum(v.numel() for k, v in state.items() if k.startswith(TUNED_PARTS[params.decoder_tuned]))


def _renumbered(job, offset: int, total: int):
    """Run a training generator, its Progress renumbered into one bar of `total` steps from `offset`."""
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        yield Progress(offset + p.done, total, p.message, loss=p.loss)


def _decoder_examples(segmenter, support: SupportSet, signed):
    """(PlaneEmbedding, (H, W) bool component) for every class component of the signed slices (refinement's
    own components, core/refine.components), their LiteMedSAM embeddings from the segmenter's service."""
    from .refine import components

    service, stack, p = segmenter.sam, segmenter.cache.stack, segmenter.params.refine
    examples = []
    for n, i in enumerate(signed):
        target = support.targets[i]
        parts = components(target, list(range(1, support.n_classes + 1)), p.min_pixels, p.max_components)
        if parts:
            embedding = service.embedding_of(stack, i).in_float32()
            examples += [(embedding, mask) for _, mask in parts]
        yield Progress(n + 1, len(signed), f"LiteMedSAM embedding of signed slice {i + 1}")
    return examples
