"""FewShotSegmenter: set an image once, segment it from painted support as often as you like.

    seg = FewShotSegmenter(SegmentationParams(encoder="efficientnet-lite0"))
    seg.set_image(volume)                       # (S, H, W) array, or a list of 2D images
    result = run(seg.segment(support))          # support: label map of the same shape
    result.labels                               # (S, H, W) with the support's label values; result.explain(z, y, x)
    result = run(seg.segment_with(prototypes))  # ready prototypes (a bank's): finished the same way
    coarse = run(seg.segment(support, refine_later=True))  # at once; then, slice by slice (core/refinement.py):
    result = run(seg.refine_result(coarse, first=[z]))     # yields RefinedSlice, returns what segment gives

Expensive work (encoder features) is cached per slice; `segment` after a new stroke redoes only matching.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Generator, Sequence

import numpy as np
import torch

from ..errors import FewShotError
from . import predict
from .candidate_score import held_out_range
from .config import SegmentationParams
from .training_config import AdaptParams, FineTuneParams
from .devices import resolve_device
from .encoder_weights import EncoderWeights
from .encoders import AUTO, Encoder, require_grid, resolve_encoder, service_build
from .features import FeatureCache
from .finishing import cleaned_labels, finish_result
from .finetune import Adaptation
from .memory import trim_now
from .progress import Progress
from .provenance import OTHER_SCAN, Explainer
from .refinement import PendingRefinement, refine_stream
from .result import SegmentationResult
from .augment import Views
from .bounded import coarse_similarity
from .matching import MatchCache, PrototypeGroup, local_group
from .nearest import nearest_scores, profiles_for
from .prototypes import PrototypeSet, SlicePrototypes, combine_slices, global_prototypes, pool_slice
from .stack import ImageStack
from .support import SupportSet, label_dtype, parse_support, require_unpainted


class FewShotSegmenter:
    def __init__(self, params: SegmentationParams | None = None, encoder: Encoder | None = None, weights_path=None):
        self.params = params or SegmentationParams()
        self._device = resolve_device(self.params.device)
        grid, given = self.params.feature_grid, getattr(encoder, "grid", "native")
        if grid != "native":  # a LiteMedSAM encoder's builder is not the registry's: checked before anything is built
            require_grid(self.params.encoder, grid)
        if encoder is not None and given != grid:
            raise FewShotError(f"This encoder places its cells on the {given!r} grid, but the settings ask for {grid!r}.")
        self._weights_path, self._given = weights_path, encoder is not None
        auto = getattr(encoder, "name", resolve_encoder(AUTO, False, grid))  # a volume's until set_image says
        self._weights = self._weights_for(auto if self.params.encoder == AUTO else self.params.encoder, encoder)
        self.stack: ImageStack | None = None
        self.cache: FeatureCache | None = None
        self._refiner = self._sam = None  # core.refine.Refiner, core.sam_service.LiteMedSAMService: made on first use
        self._selected: dict = {}  # image -> its last selection (core/select_objects.py select_planes)
        self.adaptation = Adaptation()  # Fine-tune's feature adapter and decoder weights (core/finetune.py)
        self._pooled: dict[tuple, SlicePrototypes] = {}  # per-slice pooled prototypes, see _pieces()
        self._views = Views()  # flipped / rescaled views of 2D images (core/augment.py)
        budget = self.params.memory_budget_mb * 1024**2
        self._matches = MatchCache(budget // 4, budget // 8)  # per (query slice, support slice) similarity
        self.bounded = True  # match a volume only where labels need it (core/bounded.py); False: every cell

    # -- encoder and its weights (core/encoder_weights.py) ---------------------------------
    encoder = property(lambda self: self._weights.encoder, doc="The Encoder (core/encoders.py)")
    encoder_name = property(lambda self: self._weights.name, doc="Its registry name (not built for asking)")

    def _weights_for(self, name: str, encoder: Encoder | None = None) -> EncoderWeights:
        build = service_build(name, self._weights_path, lambda: self.sam)  # LiteMedSAM read once
        return EncoderWeights(name, self._device, self._weights_path, encoder, build, self.params.feature_grid)

    def _follow_auto(self, stack: ImageStack) -> None:
        """With "auto", the encoder it is on `stack` (encoder_for); a given or fine-tuned (kept: work) one stays."""
        name = self.params.encoder_for(stack)
        if self.params.encoder == AUTO and not (self._given or self.is_fine_tuned) and name != self._weights.name:
            self._weights = self._weights_for(name)

    @property
    def is_fine_tuned(self) -> bool:
        """Whether the encoder's weights differ from the original ones (fine-tuned, adapted or loaded)."""
        return self._weights.changed or self.adaptation.changed

    encoder_changed = property(lambda self: self._weights.changed, doc="The encoder's own weights changed")

    @property
    def weights_tag(self) -> str | None:
        """Who loaded the current weights (load_encoder_state's `tag`, e.g. a bank); None once they change."""
        return self._weights.tag

    def fine_tune(self, support, params: FineTuneParams | None = None, empty_slices: Sequence[int] = (),
                  ) -> Generator[Progress, None, list[float]]:
        """Fine-tune on the signed slices (painted, and `empty_slices`): what params.method says (core/finetune.py
        Adaptation; "encoder": the whole encoder); yields Progress, returns the losses."""
        params = params or FineTuneParams()
        cache, support_set = self._require_image(), self.parse_support(support, empty_slices)
        if params.method != "encoder":
            return (yield from self.adaptation.run(self, support_set, params))
        return (yield from self._weights.fine_tune(cache, support_set, self.params, params))

    def adapt(self, params: AdaptParams | None = None, indices: Sequence[int] | None = None,
              ) -> Generator[Progress, None, list[float]]:
        """"Adapt to this scan" on slices `indices` (default all), no support (EncoderWeights.adapt)."""
        return (yield from self._weights.adapt(self._require_image(), self.params, params or AdaptParams(), indices))

    def load_encoder_state(self, state: dict[str, torch.Tensor], tag: str | None = None) -> None:
        """Load fine-tuned encoder weights (e.g. a bank's, named by `tag`); the current features are forgotten."""
        self._weights.load(state, tag, self.cache)

    def reset_weights(self) -> None:
        """Back to the original weights; their features of the current image come back, not recomputed."""
        self._weights.reset(self.cache, self.params.cache_dir)
        self.adaptation.reset(self)

    @property
    def sam(self):
        """This segmenter's LiteMedSAM (core/sam_service.py: the model, loaded on first use on this segmenter's
        device, its embedding cache and decoder), shared by the refiner and the box tool."""
        if self._sam is None:
            from .sam_service import LiteMedSAMService

            budget = self.params.memory_budget_mb * 1024**2 // 4
            self._sam = LiteMedSAMService(self.device, budget, self.params.cache_dir)
        return self._sam

    @property
    def refiner(self):
        """The LiteMedSAM refiner (core/refine.py) on :attr:`sam`, made on first use. Always the current params."""
        if self._refiner is None:
            from .refine import Refiner

            self._refiner = Refiner(self.params, self.sam)
        self._refiner.params = self.params
        return self._refiner

    @property
    def device(self) -> torch.device:
        """Where the encoder runs (it can move to the CPU if the GPU runs out of memory)."""
        return self.cache.device if self.cache is not None else self._device

    # -- image and features ---------------------------------------------------------------
    def set_image(self, image: np.ndarray | Sequence[np.ndarray], rgb: bool | None = None) -> None:
        """image: (S, H, W), (S, H, W, 3), (H, W) or a list of 2D images. Forgets cached features."""
        self.stack = ImageStack(image, self.params.modality, rgb)
        self._device = self.device  # keeps a CPU fallback made after a GPU ran out of memory
        self._follow_auto(self.stack)
        disk_dir, encoder_id = self._weights.persistence(self.params.cache_dir)
        self.cache = FeatureCache(self.encoder, self.stack, self._device, self.params.input_size_for(self.stack),
                                  self.params.batch_size, self.params.memory_budget_mb * 1024**2, disk_dir, encoder_id)
        self._pooled.clear()
        self._matches.clear()
        self._selected.clear()  # each image's last selection belongs to the set it was made on
        self._weights.forget_set_aside()
        self.adaptation.attach(self.cache)

    def release_image(self) -> None:
        """Forget the image and its features (the encoder and its weights stay), e.g. between scans."""
        self.stack = self.cache = None
        self._pooled.clear()
        self._matches.clear()
        self._weights.forget_set_aside()

    def forget_features(self) -> None:
        """Forget the current image's cached features, persisting none from now on: for an encoder shared
        with another segmenter that changed its weights (e.g. adapted to another scan)."""
        self._require_image().invalidate()

    def slice_features(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """(C, h, w) features of the current image's slices `indices` (computed when not cached)."""
        cache = self._require_image()
        return [cache.get(i) for i in indices]

    def _require_image(self) -> FeatureCache:
        if self.cache is None:
            raise FewShotError("No image is set; call set_image first.")
        return self.cache

    def compute_features(self, indices: Sequence[int] | None = None, first: Sequence[int] = ()) -> Generator[Progress, None, None]:
        """Compute (and cache) the features of `indices` (default all), `first` first; yields Progress."""
        yield from self._require_image().compute(indices, first)

    # -- segmentation ---------------------------------------------------------------------
    def parse_support(self, support, empty_slices: Sequence[int] = ()) -> SupportSet:
        """Check the support against the image and read its semantics (see support.parse_support;
        `empty_slices`: unpainted slices that are support all the same, every pixel background)."""
        cache = self._require_image()
        if len(support) != len(cache.stack):
            raise FewShotError(f"The support has {len(support)} slices but the image has {len(cache.stack)}.")
        for i in range(len(support)):
            if tuple(np.shape(support[i])) != cache.stack.shape_of(i):
                raise FewShotError(
                    f"The support slice {i} is {np.shape(support[i])} but the image slice is {cache.stack.shape_of(i)}; "
                    "the support must have the image's shape."
                )
        return parse_support(support, self.params.support_mode, self.params.background_label, empty_slices)

    def _pieces(self, support_set: SupportSet) -> dict[tuple, SlicePrototypes]:
        """What each support slice contributes, pooled once per (slice, its paint, the class list): after a
        stroke only the stroked slice is pooled again. Key -> pooled slice, in slice order."""
        cache = self._require_image()
        p = self.params
        memo = {}
        for i in support_set.slice_indices:
            target = support_set.targets[i]
            paint = hashlib.blake2b(target.tobytes(), digest_size=16).hexdigest()
            key = (id(cache), cache.generation, i, paint, tuple(support_set.class_ids))
            piece = self._pooled.get(key)
            if piece is None:
                piece = pool_slice(cache.get(i), torch.from_numpy(target).long(), support_set.n_classes,
                                   p.prototype_mode, p.local_grid, p.local_coverage)
            memo[key] = piece
        self._pooled = memo  # keeps only what the current support uses
        return memo

    def prototypes(self, support_set: SupportSet) -> PrototypeSet:
        """Prototypes from the (cached) features of the support slices, as one set (for banks and scripts)."""
        p = self.params
        pieces = self._pieces(support_set)
        cap, seed, how = p.local_cap_for(self.cache.stack)
        return combine_slices(list(pieces.values()), support_set.class_ids, cap, seed, [key[2] for key in pieces], how)

    def _groups(self, support_set: SupportSet) -> list[PrototypeGroup]:
        """The support as prototype groups: the global prototypes (never cached), then each support slice's
        local prototypes keyed like its pooled piece (cached per query slice, see matching.MatchCache)."""
        pieces = self._pieces(support_set)
        pieces = {**pieces, **self._views.support_pieces(self, support_set, pieces)}
        n = support_set.n_classes
        means = global_prototypes(list(pieces.values()), support_set.class_ids)
        groups = [PrototypeGroup.make(None, means, torch.arange(n + 1, device=means.device), n)]
        cap, seed, how = self.params.local_cap_for(self.cache.stack)
        for key, piece in pieces.items():  # each made once, then remembered (matching.MatchCache.group)
            mine = key + (cap, seed if how == "random" else how)  # the seed picks only a random subsample
            group = self._matches.group(mine, partial(local_group, mine, piece, n, cap, seed, key[2], how))
            groups += [group] if group is not None else []
        return groups

    def segment(self, support, indices: Sequence[int] | None = None, similarity: bool = False,
                empty_slices: Sequence[int] = (), refine_later: bool = False,
                ) -> Generator[Progress, None, SegmentationResult]:
        """Segment `indices` (default: every slice that is not a support slice) from the support.

        support: label map shaped like the image ((S, H, W) or a list of (H_i, W_i)).
        Support slices are copied into the result in dense mode (their unpainted pixels are background by definition)
        and predicted in scribble mode. `empty_slices` are slices checked and found free of every class: support too,
        all background. Yields Progress per slice. Matching is remembered per support slice, so segmenting again after
        one slice's paint changed matches only that slice's prototypes again. refine_later: when RefineParams refines
        this image, return the coarse result (cleaned up and ranked) for `refine_result` (core/refinement.py).
        """
        cache = self._require_image()
        support_set = self.parse_support(support, empty_slices)
        if indices is None:
            require_unpainted(support_set, len(cache.stack), self.params.support_mode)  # before any features
        yield from cache.compute(support_set.slice_indices)
        copied = support_set.slice_indices if self.params.support_mode == "dense" else []
        # The 3D clean-up needs the whole volume (a subset's gaps cut organs off the paint); one slice is 2D.
        whole_volume = indices is None and cache.stack.is_3d
        if indices is None:
            indices = range(len(cache.stack))
        skip = set() if similarity else set(copied)  # support slices are predicted only for their heatmaps
        indices = [i for i in indices if i not in skip]
        if self.params.self_support is not None:  # self-support re-matches each query with its own cells
            groups = self.prototypes(support_set)
        else:
            groups = self._groups(support_set)
            self._matches.retain([g.key for g in groups if g.key is not None])
        result, coarse = yield from self._segment_groups(groups, support_set.class_ids, indices, similarity,
                                                         support_set)
        if similarity and not cache.stack.is_volume and not isinstance(groups, PrototypeSet):
            # an image set's heatmaps share one range, from the support's own levels (a volume's is its own layer)
            result.similarity_range = held_out_range(groups[1:], [g.key[2] for g in groups[1:]], cache.get, support_set)
        for i in copied:
            result.labels[i] = np.asarray(support[i]).astype(result.labels[i].dtype)
        result.support_slices = copied
        result.explainer = Explainer.for_support(self, support_set, groups)
        finish = partial(finish_result, self, coarse=coarse, whole=whole_volume, support_set=support_set)
        yield from self._refine_and_finish(result, finish, refine_later, support_set.slice_indices)
        return result

    def segment_with(self, prototypes: PrototypeSet | Sequence[tuple[PrototypeSet, Sequence[int]]],
                     indices: Sequence[int] | None = None, similarity: bool = False, priors=None,
                     refine_later: bool = False) -> Generator[Progress, None, SegmentationResult]:
        """Segment the current image with ready prototypes (possibly pooled from another scan), finished
        like `segment`: the same clean-up (for a whole volume, anchored on each class's largest 3D
        component since there is no paint), heatmaps and uncertainty ranking. Yields Progress per slice.

        prototypes: one PrototypeSet for `indices` (default all slices), or a plan: (PrototypeSet, slice
        indices) pairs, one set per slice range, all with the same class ids (the across protocol's
        chunks); a plan is one segmentation, cleaned up over the slices it covers, and `indices` is unused.
        Slices not segmented are 0 in the result. priors: class id -> core/bank_priors.ClassPrior (a bank's),
        applied before the 3D clean-up (bank_priors.apply_priors). refine_later: as in `segment`.
        """
        plan = [(prototypes, indices)] if isinstance(prototypes, PrototypeSet) else list(prototypes)
        if not plan:
            raise FewShotError("No prototypes to segment with.")
        class_ids = list(plan[0][0].class_ids)
        if any(list(p.class_ids) != class_ids for p, _ in plan):
            raise FewShotError("Every prototype set of a plan must have the same classes.")
        result, coarse = None, {}
        for part, part_indices in plan:
            groups = self._set_groups(part)
            piece, piece_coarse = yield from self._segment_groups(groups, class_ids, part_indices, similarity)
            coarse.update(piece_coarse)
            if result is None:
                result = piece
                continue
            for i in piece.segmented_slices:
                result.labels[i] = piece.labels[i]
                for c in class_ids:
                    if i in piece.similarity.get(c, {}):
                        result.similarity[c][i] = piece.similarity[c][i]
            result.segmented_slices = sorted(set(result.segmented_slices) | set(piece.segmented_slices))
        result.explainer = Explainer(self.cache, plan, OTHER_SCAN)
        whole = indices is None or not isinstance(prototypes, PrototypeSet)
        finish = partial(finish_result, self, coarse=coarse, whole=whole, priors=priors)
        yield from self._refine_and_finish(result, finish, refine_later)
        return result

    def _set_groups(self, prototypes: PrototypeSet):
        """A ready prototype set as matching groups (one, its matches cached), or itself with self-support."""
        if self.params.self_support is not None:
            return prototypes
        digest = hashlib.blake2b(prototypes.vectors.detach().cpu().numpy().tobytes(), digest_size=16)
        digest.update(prototypes.owner.cpu().numpy().tobytes())
        key = ("set", id(self._require_image()), self.cache.generation, digest.hexdigest())
        self._matches.retain([key])
        return [PrototypeGroup.make(key, prototypes.vectors, prototypes.owner, prototypes.n_classes,
                                    prototypes.origins)]

    def _segment_groups(self, groups, class_ids: list[int], indices: Sequence[int] | None, similarity: bool,
                        support_set: SupportSet | None = None) -> Generator[Progress, None, SegmentationResult]:
        """Labels (and, with `similarity`, heatmaps) of `indices` from prototype groups (or, with
        self-support, one PrototypeSet; `support_set`: the paint, whose objects' sizes guide the selection
        on 2D images). Returns (result, slice -> (K + 1, h, w) coarse scores)."""
        cache = self._require_image()
        indices = list(range(len(cache.stack)) if indices is None else indices)
        yield from cache.compute(indices)
        lut = np.array([0] + list(class_ids), dtype=label_dtype(class_ids))
        labels = [np.zeros(cache.stack.shape_of(i), lut.dtype) for i in range(len(cache.stack))]
        sims: dict[int, dict[int, np.ndarray]] = {c: {} for c in class_ids}
        coarse, near = yield from nearest_scores(self, groups, indices, similarity, support_set, list(class_ids))
        coarse = yield from self._views.query_flip(self, groups, indices, coarse, list(class_ids))
        for n, i in enumerate(indices):
            index, upsampled = predict.labels_from_scores(torch.from_numpy(coarse[i]), cache.stack.shape_of(i),
                                                          keep_scores=similarity)
            labels[i] = lut[index]
            if similarity:
                for k, c in enumerate(class_ids, start=1):
                    sims[c][i] = upsampled[k].numpy().astype(np.float16)
            trim_now(n + 1)
            if n % 8 == 7 or n == len(indices) - 1:
                yield Progress(n + 1, len(indices), f"segmented slice {i + 1} of {len(cache.stack)}")
        if self._selects(cache.stack):  # unpainted 2D images: LiteMedSAM proposes, the most distinct is kept
            from .select_objects import select_planes

            sam, targets = partial(self.refiner.service.embedding_of, cache.stack), getattr(support_set, "targets", {})
            chosen = [i for i in indices if support_set is None or i not in support_set.slice_indices]
            yield from select_planes(self.refiner, cache.stack, labels, chosen, list(class_ids), coarse,
                                     profiles_for(near, targets, len(class_ids), sam), self._selected)
        out = np.stack(labels) if cache.stack.is_volume else labels
        return SegmentationResult(out, list(class_ids), [], indices, sims if similarity else {}), coarse

    def _refine_and_finish(self, result: SegmentationResult, finish, later: bool, painted: Sequence[int] = ()):
        """Refine the coarse `result`'s predicted slices by LiteMedSAM if RefineParams says so (with `later`:
        left to `refine_result`), then `finish` it (clean-up, ranking) in place."""
        stack = self._require_image().stack
        predicted = [i for i in result.segmented_slices if i not in set(result.support_slices)]
        if self._selects(stack):  # selection drew the unpainted images; a painted one keeps every object it has
            predicted = [i for i in predicted if i in set(painted)]
        if not predicted or not self.params.refine.enabled_for(stack, self.device):
            finish(result)
        elif later:
            PendingRefinement.finish_coarse(result, stack, finish, predicted, painted)
        else:  # LiteMedSAM redraws what the clean-up of the coarse labels keeps; the clean-up runs again after
            if stack.is_3d:
                result.labels = cleaned_labels(result, finish)
            yield from self.refiner.refine(stack, result.labels, predicted, list(result.class_ids))
            finish(result, refined=True)

    def _selects(self, stack: ImageStack) -> bool:
        """Whether selection (RefineParams.select) draws the unpainted 2D images (one object per class each)."""
        p, images = self.params, not stack.is_3d
        return images and p.refine.select and p.postprocess and p.refine.enabled_for(stack, self.device)

    def refine_result(self, result: SegmentationResult, first: Sequence[int] = (), stop=None,
                      ) -> Generator[Progress, None, SegmentationResult]:
        """Refine a `refine_later` result: `first` first, then outward from the paint; yields a RefinedSlice per slice,
        returns it refined, cleaned up, ranked, as without refine_later (core/refinement.py; `stop`: check_stop's)."""
        if result.refinement is not None and result.refinement.stack is not self._require_image().stack:
            raise FewShotError("This result is of another image than the one set; segment it again to refine it.")
        return (yield from refine_stream(self.refiner, result, first, stop)) if result.refinement else result

    def _coarse_similarity(self, groups, indices: Sequence[int]):
        """Slice index -> (K + 1, h, w) float32 best similarity per class on the feature grid (bounded.py)."""
        return (yield from coarse_similarity(self, groups, indices))
