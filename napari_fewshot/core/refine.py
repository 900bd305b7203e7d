"""Refine: prototypes find, LiteMedSAM delineates.

After prototype matching, every predicted connected component of a class on a slice (or image) becomes a
box prompt (its bounding box grown by RefineParams.margin; optionally the component itself as a dense mask
prompt) for LiteMedSAM's mask decoder (core/sam_prompt.py). The decoded mask replaces the component,
unless it is implausible (empty, or more than RefineParams.max_growth times larger or smaller than the
component): then the component stays as it was. Where classes overlap, the highest probability wins.
The 3D clean-up of volumes (and the largest-component rule of 2D images) runs afterwards, in
FewShotSegmenter.segment.

LiteMedSAM, its embeddings and its decoder belong to the segmenter's LiteMedSAMService (core/sam_service.py,
shared with the box tool): a slice's embedding is computed once (kept in memory within a byte budget and
under the feature cache folder, keyed by the windowed pixels), so re-segmenting after a stroke decodes
boxes only, and each box is decoded for its own pixels only (the decoder upscales the cells of its token grid
they read, LiteMedSAMService.decode's `inside`). The prompts of several slices go to the decoder together (up to
MAX_PROMPTS; one decoder call per slice), and
a slice whose coarse labels did not change since its last refinement (same image, classes, settings and
decoder weights) is not decoded again, nor is a box decoded before on its slice (DecodedBoxes); by default a
component that changed by at most 5 % of its pixels since it was decoded reuses that decode too
(RefineParams.reuse_changed: after a correction most slices' components change by a few boundary pixels, which
moves their boxes; BENCHMARKS.md, session 12 "reseg"). A volume's refiner is handed the coarse labels after
the 3D clean-up
(core/finishing.py), so what the clean-up removes is never redrawn and false-positive slices cost no
embedding. The refiner always uses the original LiteMedSAM image encoder,
whatever encoder (fine-tuned or not) found the objects.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Generator, Sequence

import numpy as np
from scipy import ndimage

from .config import RefineParams, SegmentationParams
from .postprocess import bounding_window
from .progress import Progress, Stop, check_stop
from .sam_prompt import SIDE, box_of, box_region
from .sam_service import MAX_PROMPTS, LiteMedSAMService
from .stack import ImageStack

FALLBACK = 0.5 + 1e-3  # probability given to a kept coarse component: above background, below a confident decode
SLICES_PER_BATCH = 4  # slices whose prompts are decoded together (a streaming caller waits for the batch)


@dataclass
class PlanePrompts:
    """The prompts of one slice: parts [(class position k, (H, W) bool component)], boxes (N, 4), masks
    (N, H, W) float32 or None (no mask prompts)."""

    parts: list
    boxes: np.ndarray
    masks: np.ndarray | None


def components(labels: np.ndarray, class_ids: Sequence[int], min_pixels: int,
               max_per_class: int | None = None) -> list[tuple[int, np.ndarray]]:
    """(H, W) label plane -> [(class position k in 1..K, (H, W) bool component)] for the 8-connected
    components of at least `min_pixels` pixels, each class's largest first, at most `max_per_class` each."""
    out = []
    for k, class_id in enumerate(class_ids, start=1):
        mask = labels == class_id
        window = bounding_window(mask)
        if window is None:
            continue
        parts, count = ndimage.label(mask[window], structure=np.ones((3, 3), bool))  # the class's window only
        sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
        order = [p for p in np.argsort(-sizes, kind="stable") if sizes[p] >= min_pixels][:max_per_class]
        for p in order:
            part = np.zeros(labels.shape, bool)
            part[window] = parts == p + 1
            out.append((k, part))
    return out


def plane_prompts(labels: np.ndarray, class_ids: Sequence[int], params: RefineParams) -> PlanePrompts | None:
    """(H, W) label plane -> the prompts refining it, or None when it has no component to refine."""
    parts = components(labels, class_ids, params.min_pixels, params.max_components)
    if not parts:
        return None
    boxes = np.stack([box_of(mask, params.margin) for _, mask in parts])
    masks = np.stack([mask for _, mask in parts]).astype(np.float32) if params.mask_prompt else None
    return PlanePrompts(parts, boxes, masks)


def refine_plane(labels: np.ndarray, class_ids: Sequence[int],
                 decode: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
                 params: RefineParams) -> np.ndarray:
    """One slice's labels refined.

    labels: (H, W) label values (0 background, else one of class_ids).
    decode: (N, 4) boxes, optional (N, H, W) mask prompts -> (N, H, W) probabilities (the decoder bound to
            the slice's embedding); only called when there is a component to refine.
    Returns a new (H, W) array of the same dtype; a plane without components comes back unchanged.
    """
    prompts = plane_prompts(labels, class_ids, params)
    if prompts is None:
        return labels
    return apply_decoded(labels, class_ids, prompts, decode(prompts.boxes, prompts.masks), params)


def apply_decoded(labels: np.ndarray, class_ids: Sequence[int], prompts: PlanePrompts,
                  probabilities: np.ndarray, params: RefineParams) -> np.ndarray:
    """(H, W) labels with each prompted component replaced by its (N, H, W) decoded probabilities.

    Only the window around the boxes is scored: outside every box nothing is decoded or replaced, so each
    pixel keeps its label there (labels hold 0 or class_ids)."""
    parts, boxes = prompts.parts, prompts.boxes
    out = labels.copy()
    regions = [box_region(box, labels.shape) for box in boxes]
    window = bounding_window(np.logical_or.reduce(regions)) if regions else None
    if window is None:
        return out
    crop = labels[window]
    lut = np.array([0] + list(class_ids), labels.dtype)
    decoded = np.zeros((len(class_ids) + 1, *crop.shape), np.float32)
    replaced = np.zeros(decoded.shape, bool)
    for (k, mask), region, prob in zip(parts, regions, probabilities):
        inside = np.where(region[window], prob[window], 0).astype(np.float32)  # the box bounds the object
        area, coarse = int((inside > 0.5).sum()), int(mask.sum())
        if area == 0 or area > params.max_growth * coarse or area * params.max_growth < coarse:
            continue  # implausible: the component stays as it was
        replaced[k] |= mask[window]
        np.maximum(decoded[k], inside, out=decoded[k])
    # Kept components (implausible decodes, those too small or too many to prompt) score just above background,
    # so a confident decode of another class wins where they overlap.
    score = np.where((lut[:, None, None] == crop[None]) & ~replaced, FALLBACK, 0.0).astype(np.float32)
    score[0] = 0.5
    np.maximum(score, decoded, out=score)
    out[window] = lut[np.argmax(score, axis=0)]
    return out


class DecodedBoxes:
    """Decoded probabilities kept per (slice, box), least recently used dropped beyond `budget` bytes: a
    box decoded again on the same embedding gives the same probabilities, so it is not decoded again. Only
    the box's own pixels are kept (apply_decoded reads nothing outside it).

    Approximate reuse (`get`'s shift and changed: RefineParams.reuse_shift, 0 by default, and reuse_changed,
    0.05 by default): a box none of whose four
    coordinates moved by more than `shift` pixels from a box decoded on the same slice, or (`changed` or `pixels` > 0)
    whose component differs from the component decoded there (same class) by at most that share of its pixels or
    that many pixels (RefineParams.reuse_pixels, 0 by default: small far components), reuses
    that decode (the nearest; its probabilities padded with 0 outside the box really decoded). The kept entry
    stays the box really decoded, so reuse never drifts further than the tolerance from a real decode."""

    def __init__(self, budget: int):
        self.budget, self.nbytes = budget, 0
        self._kept: OrderedDict[tuple, tuple[tuple[slice, slice], np.ndarray]] = OrderedDict()
        self._parts: dict[int, dict[tuple, tuple]] = {}  # slice -> {key of _kept: ((4,) box, class k, mask crop)}

    def clear(self) -> None:
        self._kept.clear()
        self._parts.clear()
        self.nbytes = 0

    @staticmethod
    def key(index: int, box: np.ndarray) -> tuple:
        return index, np.asarray(box, np.float32).tobytes()

    def nearest(self, index: int, box: np.ndarray, shift: float = 0.0, part: tuple | None = None,
                changed: float = 0.0, pixels: float = 0.0) -> tuple | None:
        """The key of the kept decode `box` (on slice `index`) may reuse, or None: the same box; else the kept box
        with the smallest largest coordinate move, if at most `shift` pixels; else (`part` = (class k, (H, W) bool
        component), `changed` or `pixels` > 0) the kept component of class k differing from it in the fewest
        pixels, if at most `changed` times its size or at most `pixels` (pixels of the slice)."""
        key = self.key(index, box)
        if key in self._kept:
            return key
        kept = self._parts.get(index, {})
        if kept and shift > 0:
            moves = {k: float(np.abs(b - np.asarray(box, np.float32)).max()) for k, (b, _, _) in kept.items()}
            best = min(moves, key=moves.get)
            if moves[best] <= shift:
                return best
        if kept and part is not None and (changed > 0 or pixels > 0):
            k, mask = part
            differ = {}
            for name, (_, c, crop) in kept.items():
                if c == k:
                    window = self._kept[name][0]
                    differ[name] = int(mask.sum() - mask[window].sum() + (mask[window] ^ crop).sum())
            best = min(differ, key=differ.get, default=None)
            if best is not None and differ[best] <= max(changed * mask.sum(), pixels):
                return best
        return None

    def get(self, index: int, box: np.ndarray, shape: tuple[int, int], shift: float = 0.0,
            part: tuple | None = None, changed: float = 0.0, pixels: float = 0.0) -> np.ndarray | None:
        """(H, W) float32 probabilities `box` reuses on slice `index` (see :meth:`nearest`; 0 outside the box
        really decoded), or None."""
        key = self.nearest(index, box, shift, part, changed, pixels)
        if key is None:
            return None
        self._kept.move_to_end(key)
        (rows, cols), crop = self._kept[key]
        out = np.zeros(shape, np.float32)
        out[rows, cols] = crop
        return out

    def put(self, index: int, box: np.ndarray, probabilities: np.ndarray, part: tuple | None = None) -> None:
        """Keep the (H, W) `probabilities` decoded for `box` on slice `index` (their box's pixels only), and of
        `part` (class k, (H, W) bool component prompted by the box) the class and the box's pixels."""
        window = bounding_window(box_region(box, probabilities.shape))
        if window is None:
            return
        crop = np.array(probabilities[window], np.float32)
        key = self.key(index, box)
        if key in self._kept:
            self._drop(key)
        k, mask = part if part is not None else (None, np.zeros(probabilities.shape, bool))
        self._kept[key] = (window, crop)
        self._parts.setdefault(index, {})[key] = (np.asarray(box, np.float32).copy(), k, mask[window].copy())
        self.nbytes += crop.nbytes + self._parts[index][key][2].nbytes
        while self.nbytes > self.budget and self._kept:
            self._drop(next(iter(self._kept)))  # the least recently used

    def _drop(self, key: tuple) -> None:
        _, crop = self._kept.pop(key)
        self.nbytes -= crop.nbytes + self._parts[key[0]].pop(key)[2].nbytes


class Refiner:
    """Refines predicted label planes with the decoder of `service` (a LiteMedSAMService; LiteMedSAM is
    loaded on first use)."""

    def __init__(self, params: SegmentationParams, service: LiteMedSAMService):
        self.params = params
        self.service = service
        self._setting: tuple | None = None  # (stack signature, classes, refine settings, decoder) of `_refined`
        self._refined: dict[int, tuple[bytes, np.ndarray]] = {}  # slice -> (digest of coarse labels, refined)
        self.boxes = DecodedBoxes(params.memory_budget_mb * 1024**2 // 16)  # same setting as `_refined`
        # Check next's box stability per image (core/uncertainty.refiner_decoder): (stack signature, decoder), memo
        self.stability_memo: tuple[tuple | None, dict] = (None, {})

    def refine(self, stack: ImageStack, labels: list[np.ndarray], indices: Sequence[int],
               class_ids: Sequence[int], stop: Stop | None = None) -> Generator[Progress, None, None]:
        """Refine labels[i] ((H_i, W_i) label values) in place for every i in `indices`, in that order, a few
        slices per decoder call; yields Progress per slice. Slices without a component to refine cost
        nothing (no embedding is computed for them). `stop` (core.progress.check_stop) is checked before each
        slice's embedding and before the decoder call: a batch stopped midway raises Stopped and writes nothing
        (the embeddings it computed are kept)."""
        indices = list(indices)
        p = self.params
        # On / off / automatic and embedding ahead do not change what a refinement gives: it keeps the refined slices.
        setting = (stack.signature(), tuple(class_ids), replace(p.refine, enabled=None, ahead=0),
                   self.service.decoder_version)
        if setting != self._setting:
            self._refined.clear()
            self.boxes.clear()
            self._setting = setting
        batch: list[tuple[int, bytes | None, PlanePrompts | None]] = []  # slices waiting for the decoder
        for n, i in enumerate(indices):
            # After a correction most slices come out of matching unchanged: their refinement is reused.
            coarse = hashlib.blake2b(labels[i].tobytes(), digest_size=16).digest()
            done = self._refined.get(i)
            if done is not None and done[0] == coarse and done[1].dtype == labels[i].dtype:
                labels[i] = done[1].copy()
                batch.append((i, None, None))  # nothing to remember
            else:
                batch.append((i, coarse, plane_prompts(labels[i], class_ids, p.refine)))
            prompts = sum(len(q.boxes) for _, _, q in batch if q is not None)
            if n + 1 == len(indices) or len(batch) >= SLICES_PER_BATCH or prompts >= MAX_PROMPTS:
                self._decode(stack, labels, batch, class_ids, stop)
                for m, (j, _, _) in enumerate(batch, start=n + 2 - len(batch)):
                    yield Progress(m, len(indices), f"refined slice {j + 1}")
                batch = []

    def _shift(self, plane: np.ndarray) -> float:
        """RefineParams.reuse_shift (pixels of LiteMedSAM's 256-px input) in pixels of the (H, W) `plane`."""
        return self.params.refine.reuse_shift * max(plane.shape) / SIDE

    def _pixels(self, plane: np.ndarray) -> float:
        """RefineParams.reuse_pixels (pixels of LiteMedSAM's 256-px input) in pixels of the (H, W) `plane`."""
        return self.params.refine.reuse_pixels * (max(plane.shape) / SIDE) ** 2

    def _decode(self, stack: ImageStack, labels: list[np.ndarray], batch: list, class_ids: Sequence[int],
                stop: Stop | None = None) -> None:
        """Decode the prompts of every slice of `batch` [(slice, digest of its coarse labels or None when its
        refinement was reused, PlanePrompts or None)] in one go; writes and remembers the refined planes."""
        todo = [(i, q) for i, _, q in batch if q is not None]
        reuse = self.params.refine.reuse_changed
        known = {i: [None if q.masks is not None else self.boxes.get(i, box, labels[i].shape, self._shift(labels[i]),
                                                                      part, reuse, self._pixels(labels[i]))
                     for box, part in zip(q.boxes, q.parts)] for i, q in todo}  # mask prompts: always decoded
        new = [(i, q, [n for n, p in enumerate(known[i]) if p is None]) for i, q in todo]
        new = [(i, q, fresh) for i, q, fresh in new if fresh]
        requests = []
        for i, q, fresh in new:  # an embedding is the step's long part (~0.8 CPU-s each): a stop is checked before each
            check_stop(stop)
            requests.append((self.service.embedding_of(stack, i), q.boxes[fresh],
                             None if q.masks is None else q.masks[fresh]))
        check_stop(stop)
        for (i, q, fresh), probabilities in zip(new, self.service.decode(requests, inside=True) if requests else []):
            for n, p in zip(fresh, probabilities):
                known[i][n] = p
                if q.masks is None:
                    self.boxes.put(i, q.boxes[n], p, q.parts[n])
        for i, q in todo:
            labels[i] = apply_decoded(labels[i], class_ids, q, np.stack(known[i]), self.params.refine)
        for i, coarse, _ in batch:
            if coarse is not None:
                self._refined[i] = (coarse, labels[i].copy())
