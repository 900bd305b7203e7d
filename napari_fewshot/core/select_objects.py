"""Propose and select on 2D images: LiteMedSAM draws many candidate objects of a class; the one that stands out
most from its surroundings in LiteMedSAM's own embedding *and* looks most like the painted objects is kept
(RefineParams.select, on for images).

    labels = select_plane(labels, scores, class_ids, decode, embedding, profiles)

Candidates (core/proposals.py propose_boxes): the three largest predicted components' boxes at margins 0, 0.1
and 0.25; boxes of 0.7, 1 and 1.4 times the support objects' typical size around the 5 strongest peaks of the
class's margin map (LARGE_PEAKS can keep the 1.4 ones to the strongest); the box of the two largest components'
strongest cells covering once and twice the support objects' typical area. They are decoded at the decoder's
own resolution (the plane's longer side 256, bfloat16 where native: the service's low_res decode) and scored
there; the winner's own mask then gives boxes that fit it (:data:`REFIT`, :func:`refit`), decoded once more,
and the best-scoring of the winner and these is kept (a growing round, :func:`grow`, its box grown on the sides
where the class margin stays high and the box of its confident core, is built but off: :data:`GROWING`); the
result is resized to full size as the decoder would (:func:`full_size`).
A 1.4 box only around the strongest peak (LARGE_PEAKS = 1) was tried in session 12: 8 % less CPU per image and
+0.011 / +0.003 at 5 shots (seeds 0 / 1), but -0.010 at 20 shots on seed 1 (held out) and on a 100-image set, so
it is off (BENCHMARKS.md, session 12 "busi").
Score (:func:`selection_score`): the embedding contrast (:func:`embedding_contrast`: 1 minus the cosine between
the mean image embedding inside the candidate and in a ring around it, a quarter of its size wide, at least 3
pixels) plus its likeness to the support (candidate_score.SupportProfile.likeness: the mean cosine of its mean
embedding with each painted object's), unweighted. The prototype map finds *where* (the candidates come from
it); the contrast says *which outline* is an object (a blob that spills over the lesion's surroundings, or
half a lesion, looks like its ring); the likeness says *which object* was painted (on organ slices another
organ stands out as much as the painted one). Measured on BUSI (BENCHMARKS.md, "BUSI: propose and select");
volumes keep refine.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .ambiguity import rival_record
from .candidate_score import SupportProfile
from .progress import Progress
from .proposals import decoded_masks, propose_boxes
from .sam_prompt import SIDE, PlaneEmbedding, box_of, box_region

MARGINS = (0.0, 0.1, 0.25)  # component boxes
COMPONENTS = 3  # the largest predicted components whose boxes are candidates
PEAKS, PEAK_SIZES = 5, (0.7, 1.0, 1.4)  # peak boxes, in typical support-object sizes
LARGE_PEAKS = None  # 1.4 boxes around every peak; 1 (only the strongest) saved 8 % CPU but lost on held-out 20 shots
TOP_AREAS = (1.0, 2.0)  # a component's strongest cells covering this many typical support-object areas
RING = 0.25  # ring width, as a share of the candidate's square-root area (at least 3 pixels)
KEEP = -0.03
"""Hysteresis after the support changed (a new box, a stroke): an image keeps the object it showed before unless
the new winner (after :func:`refit`) beats that object's :func:`selection_score`, both scored now at the decoder's
resolution, by more than this margin (None: off, every image chosen afresh; negative: the previous object must be
clearly better to stay). The previous object is the image's last selection in the same set (select_planes' memo,
FewShotSegmenter._selected); a first Segment has none and is unchanged. On since session 21 ("flips"): on the box
loop -0.03 reached mean Dice 0.85 in 9 / 9 / 7 / 10 boxes on seeds 1 / 2 / 0 / 3, against 8 / never / 9 / 10
chosen afresh, ended higher on all four (0.868 / 0.905 / 0.899 / 0.885 against 0.858 / 0.833 / 0.892 / 0.883) and
cut the untouched images that fell by > 0.1 after a box (seeds 1 / 2 / 3: 12 / 12 / 9 -> 6 / 1 / 5); 0 froze the set
(never on seed 1); session 14's 0.05, compared before refit, lost seed 2."""


def ring_around(mask: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool, non-empty -> the pixels within `width` (chessboard distance) outside it, (H, W) bool."""
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - width - 1), min(mask.shape[0], ys.max() + width + 2)
    x0, x1 = max(0, xs.min() - width - 1), min(mask.shape[1], xs.max() + width + 2)
    distance = ndimage.distance_transform_cdt(~mask[y0:y1, x0:x1], metric="chessboard")
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = (distance > 0) & (distance <= width)
    return out


def embedding_mean(embedding: PlaneEmbedding, mask: np.ndarray) -> torch.Tensor | None:
    """Mean (C,) of the (1, C, 64, 64) embedding over an (H, W) mask of its plane (area-weighted on the
    embedding's grid, which covers the plane resized into the padded 256 x 256 input); None when empty."""
    h, w = embedding.resized
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(h, w), mode="area")
    m = F.pad(m, (0, SIDE - w, 0, SIDE - h))
    grid = embedding.features.shape[-1]
    weights = F.avg_pool2d(m, SIDE // grid)[0, 0].to(embedding.features.device)
    total = weights.sum()
    if total < 1e-6:
        return None
    return (embedding.features[0].float() * weights).sum((1, 2)) / total


MIN_COVER = 0.1
"""A candidate must cover at least this share of the class's coarse prediction: an image set of organs has other
distinct objects than the painted one (an MR slice set lost a liver to one). BUSI 5-shot, 50 episodes, offline on
the session-8 candidates: 0.620 / 0.612 (seeds 0 / 1) with it, 0.625 / 0.603 without (BENCHMARKS.md)."""


def embedding_contrast(embedding: PlaneEmbedding, mask: np.ndarray, ring: float = RING,
                       inside: torch.Tensor | None = None) -> float:
    """1 - cosine(mean embedding inside the (H, W) bool mask, mean in the ring around it): how much a candidate
    stands out from its surroundings in LiteMedSAM's embedding; -inf for an empty mask, 0 without a ring.
    inside: embedding_mean(embedding, mask) when the caller has it."""
    if not mask.any():
        return float("-inf")
    inside = embedding_mean(embedding, mask) if inside is None else inside
    around = embedding_mean(embedding, ring_around(mask, max(3, int(round(ring * np.sqrt(mask.sum()))))))
    if inside is None or around is None:
        return 0.0
    return float(1.0 - F.cosine_similarity(inside[None], around[None]).item())


def low_res(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> the (h, w) float share of each low-resolution pixel it covers (area resize)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(m, size=size, mode="area")[0, 0].numpy()


def candidates(margin: np.ndarray, coarse: np.ndarray, decode: Callable, profile: SupportProfile | None,
               size: tuple[int, int], min_pixels: int = 64, with_probabilities: bool = False,
               large_peaks: int | None = LARGE_PEAKS) -> tuple:
    """One class's candidates on one image (see module doc): (H, W) margin and coarse mask -> their (N, 4) boxes
    in the image's pixels and N (h, w) bool masks at the decoder's own `size` (empty ones dropped). Where the
    class has coarse pixels, only candidates covering at least MIN_COVER of them are kept; a box that cannot
    (a decoded mask lies inside its box) is dropped before it is decoded: a quarter of BUSI's boxes, the same
    candidates kept, at a quarter less decoder time. `with_probabilities`: also their (N, h, w) decoded
    probabilities (the third item). `large_peaks`: 1.4 boxes only around that many of the strongest peaks.
    decode: (N, 4) boxes, low_res -> (N, h, w) probabilities (low_res True) or (N, H, W)."""
    boxes = propose_boxes(margin, coarse, profile, peaks=PEAKS, components=COMPONENTS, min_pixels=min_pixels,
                          box_margins=MARGINS, peak_sizes=PEAK_SIZES, top_areas=TOP_AREAS,
                          large_peaks=large_peaks)
    shrink = np.array([size[1] / margin.shape[1], size[0] / margin.shape[0]] * 2, np.float32)
    share = low_res(coarse, size) if coarse.any() else None
    if share is not None and len(boxes):
        need = MIN_COVER * share.sum()
        boxes = boxes[[share[box_region(b, size)].sum() >= need for b in boxes * shrink]]
    if len(boxes):  # a box proposed twice (a component smaller than the support's area is its own core) once
        boxes = boxes[np.sort(np.unique(boxes, axis=0, return_index=True)[1])]
    if not len(boxes):
        return (boxes, [], np.zeros((0, *size), np.float32)) if with_probabilities else (boxes, [])
    probabilities = decode(boxes, True)
    masks = decoded_masks(boxes * shrink, probabilities)
    kept = [n for n, m in enumerate(masks) if m.any() and (share is None or share[m].sum() >= MIN_COVER * share.sum())]
    out = boxes[kept], [masks[n] for n in kept]
    return (*out, np.asarray(probabilities)[kept]) if with_probabilities else out


def full_size(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, h, w) probabilities at the decoder's own size -> (N, H, W) at the plane's `shape`, as the decoder's
    full-size output is made (its logits resized bilinearly, then the sigmoid): the logits come back from the
    probabilities (float32: exact up to |logit| ~ 16, where the mask's outline never lies). BUSI, 40 boxes:
    the same masks as decoding the box again at full size (Dice 1.0, largest |delta p| 7e-6)."""
    logits = torch.logit(torch.from_numpy(np.ascontiguousarray(probabilities, np.float32)), eps=1e-7)
    up = F.interpolate(logits[:, None], size=tuple(shape), mode="bilinear", align_corners=False)[:, 0]
    return torch.sigmoid(up).numpy()


def selection_score(embedding: PlaneEmbedding, mask: np.ndarray, profile: SupportProfile | None) -> float:
    """How well a candidate (an (H, W) or embedding.resized bool mask) fits: its embedding contrast with its
    ring, plus how much it looks like the painted objects (profile.likeness of its mean embedding: 0 without
    an appearance). Both are cosines, added unweighted."""
    inside = embedding_mean(embedding, mask) if mask.any() else None
    contrast = embedding_contrast(embedding, mask, inside=inside)
    if profile is None or profile.appearance is None or not np.isfinite(contrast) or inside is None:
        return contrast
    return contrast + profile.likeness(inside.cpu().numpy())


REFIT = (0.05, 0.2)
"""Margins of the boxes the winner's own decoded mask gives (its bounding box grown by each share of its size),
decoded in one call as a second round; the best of the winner and these by :func:`selection_score` is drawn
(() : off). The selected candidate's box is one of a few fixed shapes (a component's box, a typical-size box
around a peak), often too large for a small cyst or cutting a large lesion; the mask it gives fits the lesion
better than the box did. BUSI 5-shot, 50 episodes, offline on the dumped winners (benchmarks/busi_hits_levers.py,
BENCHMARKS.md session 18 "hits"): +0.025 / +0.022 (seeds 2 / 3) for two more prompts per image."""


def refit(drawn: np.ndarray, box: np.ndarray, probabilities: np.ndarray, score: float, decode: Callable,
          embedding: PlaneEmbedding, profile: SupportProfile | None, margins: Sequence[float] | None = None,
          ) -> tuple[np.ndarray, np.ndarray, float]:
    """The winner drawn again from boxes that fit its own mask: drawn (H, W) bool, its (1, 4) box and (1, h, w)
    low-resolution probabilities, its score -> the (1, 4) box, (1, h, w) probabilities and score of the best by
    :func:`selection_score` among it and the boxes of `drawn` grown by each of `margins` (default :data:`REFIT`),
    decoded at low resolution in one call and scored there as the candidates were."""
    margins = REFIT if margins is None else margins
    boxes = np.stack([box_of(drawn, m) for m in margins]).astype(np.float32)
    return best_by_score(boxes, drawn.shape, box, probabilities, score, decode, embedding, profile)


def best_by_score(boxes: np.ndarray, shape: tuple[int, int], box: np.ndarray, probabilities: np.ndarray,
                  score: float, decode: Callable, embedding: PlaneEmbedding, profile: SupportProfile | None,
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(N, 4) `boxes` in the (H, W) = `shape` plane's pixels decoded at low resolution in ONE call and scored there
    by :func:`selection_score` as the candidates were: the (1, 4) box, (1, h, w) probabilities and score of the
    best of them that scores higher than `score`, else the given `box`, `probabilities` and `score`."""
    size = embedding.resized
    shrink = np.array([size[1] / shape[1], size[0] / shape[0]] * 2, np.float32)
    decoded = np.asarray(decode(boxes, True))
    for n, mask in enumerate(decoded_masks(boxes * shrink, decoded)):
        value = selection_score(embedding, mask, profile) if mask.any() else float("-inf")
        if value > score:
            box, probabilities, score = boxes[n:n + 1], decoded[n:n + 1], value
    return box, probabilities, score


GROWING = False
"""The growing round (:func:`grow`) after :func:`refit`: off. With the settings below (the 2 margin-chosen sides by
50 % and the confident core, 3 prompts) it won all four development sets offline (BUSI seeds 2 / 3, 5 and 20 shots:
+0.011 / +0.014 / +0.017 / +0.014) and 5-shot seeds 0 / 1 through the CLI (+0.018 / +0.007), but lost 20-shot seed 0
(-0.003) and costs 3 decoder prompts per image (BENCHMARKS.md, session 19 "grow")."""
GROW = ()
"""A growing round after :func:`refit` (issue 20, session 19 "grow"): the chosen mask's box grown by each of these
shares of its size on every side. Grown on all sides (1.6x, 2x) it lost on one development seed: the decoder then
takes in tissue around the lesion that scores higher (BENCHMARKS.md, session 19 "grow"); off."""
GROW_SIDES = (0.5,)
"""Boxes of the chosen mask grown on one side only, by this share of its size, towards the :data:`GROW_TOP_SIDES`
sides whose added strip has the highest mean class margin (where the prototypes still see the lesion)."""
GROW_TOP_SIDES = 2
GROW_CORE = 0.97
"""The box of the chosen mask's confident core (its pixels above this probability, grown by 5 %): a loose box
around a small cyst drawn again from the cyst (None: off)."""
GROW_ROUNDS = 1
"""Rounds of :func:`grow` (each from the last round's mask, while the score rises); 2 gave no more offline."""


def grown_boxes(drawn: np.ndarray, margins: Sequence[float], sides: Sequence[float] = ()) -> np.ndarray:
    """(H, W) bool, non-empty -> (N, 4) float32 boxes: its bounding box grown by each of `margins` on every side,
    then grown on one side (left, top, right, bottom) by each of `sides` (boxes clipped to the plane)."""
    h, w = drawn.shape
    out = [box_of(drawn, m) for m in margins]
    x0, y0, x1, y1 = box_of(drawn, 0.0)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    for s in sides:
        out += [[max(0.0, x0 - s * bw), y0, x1, y1], [x0, max(0.0, y0 - s * bh), x1, y1],
                [x0, y0, min(w - 1.0, x1 + s * bw), y1], [x0, y0, x1, min(h - 1.0, y1 + s * bh)]]
    return np.asarray(out, np.float32).reshape(-1, 4)


def growing_boxes(drawn: np.ndarray, probabilities: np.ndarray, margin: np.ndarray | None,
                  margins: Sequence[float], sides: Sequence[float], top_sides: int | None,
                  core: float | None) -> np.ndarray:
    """One round's (N, 4) boxes from the (H, W) bool mask `drawn` and its (1, h, w) low-resolution probabilities:
    :func:`grown_boxes` (the side boxes only towards the `top_sides` sides whose added strip has the highest mean
    of the (H, W) class `margin`, all four without a margin map or with None), and the core box (`core`)."""
    boxes = list(grown_boxes(drawn, margins))
    inner = box_region(box_of(drawn, 0.0), drawn.shape)
    for s in sides:
        side = grown_boxes(drawn, (), (s,))
        if margin is not None and top_sides:
            strips = [box_region(b, drawn.shape) & ~inner for b in side]
            means = [float(margin[m].mean()) if m.any() else float("-inf") for m in strips]
            side = side[np.argsort(means, kind="stable")[::-1][:top_sides]]
        boxes += list(side)
    if core:
        part = drawn & (full_size(probabilities, drawn.shape)[0] > core)
        if part.sum() >= 16:
            boxes.append(box_of(part, 0.05))
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def grow(drawn: np.ndarray, box: np.ndarray, probabilities: np.ndarray, score: float, decode: Callable,
         embedding: PlaneEmbedding, profile: SupportProfile | None, margin: np.ndarray | None = None,
         margins: Sequence[float] | None = None, sides: Sequence[float] | None = None,
         top_sides: int | None = None, core: float | None = None, rounds: int | None = None,
         ) -> tuple[np.ndarray, np.ndarray, float]:
    """The chosen object drawn again from boxes grown from it, kept while its score rises: drawn (H, W) bool (its
    full-size mask), its (1, 4) box, (1, h, w) low-resolution probabilities and score, the (H, W) class margin map
    (or None) -> those of the best by :func:`selection_score` after up to `rounds` rounds. Each round decodes
    :func:`growing_boxes` of the current mask at low resolution in ONE call and keeps the best only if it scores
    higher than the current; a round that finds none ends it. Defaults: :data:`GROW`, :data:`GROW_SIDES`,
    :data:`GROW_TOP_SIDES`, :data:`GROW_CORE`, :data:`GROW_ROUNDS` (the core box in the first round only)."""
    margins = GROW if margins is None else margins
    sides = GROW_SIDES if sides is None else sides
    top_sides = GROW_TOP_SIDES if top_sides is None else top_sides
    core = GROW_CORE if core is None else core
    for round_ in range(GROW_ROUNDS if rounds is None else rounds):
        if not drawn.any():
            break
        boxes = growing_boxes(drawn, probabilities, margin, margins, sides, top_sides, core if round_ == 0 else None)
        if not len(boxes):
            break
        before = score
        box, probabilities, score = best_by_score(boxes, drawn.shape, box, probabilities, score, decode, embedding,
                                                  profile)
        if not score > before:  # nothing scored higher: the round found none
            break
        drawn = decoded_masks(box, full_size(probabilities, drawn.shape))[0]
    return box, probabilities, score


def select_plane(labels: np.ndarray, scores: np.ndarray, class_ids: Sequence[int], decode: Callable,
                 embedding: PlaneEmbedding, profiles: dict[int, SupportProfile | None],
                 min_pixels: int = 64, redraw: bool = False, previous: np.ndarray | None = None,
                 keep: float | None = None, rivals: dict | None = None) -> np.ndarray:
    """One image's labels redrawn: per class, the candidate of highest :func:`selection_score`.

    labels: (H, W) coarse label values; scores: (K + 1, H, W) class similarity (upsampled, class k of
    class_ids at k); profiles: class position k -> the support's objects of that class (or None).
    decode: (N, 4) boxes, low_res -> probabilities, (N, h, w) at the decoder's own size (embedding.resized)
    with low_res, else (N, H, W): candidates are drawn and scored at low resolution; the winner's full-size mask
    is its low-resolution decode resized as the decoder resizes (:func:`full_size`, no second decode), or with
    `redraw` (the full-size decode draws with other weights than the candidates', e.g. a tuned decoder) its
    box decoded again at full size. Classes without a candidate keep their coarse pixels. previous: (H, W) labels
    this image was given by its last selection (None: none); with `keep` (a margin, :data:`KEEP`), a class keeps
    its previous object unless the winner's score (after refit) beats that object's, scored now, by more than `keep`.
    rivals: filled with class_id -> ambiguity.rival_record of the kept object (Check next's ambiguity sign).
    Returns a new (H, W) array of labels' dtype.
    """
    out = np.zeros_like(labels)
    chosen = []
    size = embedding.resized
    for k, class_id in enumerate(class_ids, start=1):
        coarse = labels == class_id
        margin = scores[k] - np.delete(scores, k, 0).max(0)
        # the prototypes' own finding anchors the choice: a candidate must cover some of it (MIN_COVER)
        boxes, masks, probabilities = candidates(margin, coarse, decode, profiles.get(k), size, min_pixels, True)
        if not masks:
            chosen.append((float("-inf"), class_id, coarse))
            continue
        fit = [selection_score(embedding, m, profiles.get(k)) for m in masks]
        best = int(np.argmax(fit))
        winner, won = boxes[best:best + 1], probabilities[best:best + 1]
        drawn = decoded_masks(winner, full_size(won, labels.shape))[0]
        if REFIT and drawn.any():  # the winner's own outline gives a box that fits it: drawn again, kept if better
            winner, won, fit[best] = refit(drawn, winner, won, fit[best], decode, embedding, profiles.get(k))
            drawn = decoded_masks(winner, full_size(won, labels.shape))[0]
        if GROWING and drawn.any():  # part of a larger lesion, or a loose box: grown (off, see GROWING)
            winner, won, fit[best] = grow(drawn, winner, won, fit[best], decode, embedding, profiles.get(k), margin)
            drawn = decoded_masks(winner, full_size(won, labels.shape))[0]
        before = None if previous is None or keep is None else previous == class_id
        if before is not None and before.any():  # scored as the winner was: at the decoder's resolution
            held = selection_score(embedding, low_res(before, size) > 0.5, profiles.get(k))
            if np.isfinite(held) and fit[best] <= held + keep:  # the evidence did not clearly change
                chosen.append((held, class_id, before))
                continue
        if redraw:
            drawn = decoded_masks(winner, decode(winner, False))[0]
        if rivals is not None:  # how close another object scored (core/ambiguity.py), from the scores above
            rivals[class_id] = rival_record(masks, fit, best, low_res(drawn, size) > 0.5)
        chosen.append((fit[best], class_id, drawn if drawn.any() else coarse))
    for _, class_id, mask in sorted(chosen, key=lambda item: item[0]):  # the best fit wins overlaps
        out[mask] = class_id
    return out


def support_profiles(targets: dict[int, np.ndarray], n_classes: int,
                     embedding_of: Callable[[int], PlaneEmbedding] | None = None) -> dict[int, SupportProfile | None]:
    """support slice -> (H, W) class index (SupportSet.targets) -> class position k -> its SupportProfile; with
    `embedding_of` (slice -> its LiteMedSAM embedding), each painted object's mean embedding as its appearance."""
    profiles = {}
    for k in range(1, n_classes + 1):
        profile = SupportProfile.from_masks([t == k for t in targets.values()])
        if profile is not None and embedding_of is not None:
            vectors = [embedding_mean(embedding_of(i), t == k) for i, t in targets.items() if (t == k).any()]
            profile = profile.with_appearance([v.cpu().numpy() for v in vectors if v is not None])
        profiles[k] = profile
    return profiles


def select_planes(refiner, stack, labels: list, indices: Sequence[int], class_ids: Sequence[int],
                  coarse: dict[int, np.ndarray], profiles: dict[int, SupportProfile | None] | Callable,
                  memo: dict | None = None) -> Generator[Progress, None, None]:
    """select_plane for labels[i] (in place), every i in `indices`, with the refiner's LiteMedSAM and its
    embedding cache. coarse: slice -> (K + 1, h, w) scores on the feature grid; profiles: class position -> profile,
    or image -> that (core/nearest.py: each image's nearest painted images). Yields Progress per image.
    memo: image -> (digest of what its selection depends on, labels, setting, select_plane's rivals), kept by the
    caller: after a stroke, an image whose coarse scores, labels and support sizes did not change is not decoded
    again, and one that changed keeps its last selection's objects unless a candidate beats them by :data:`KEEP`."""
    from . import uncertainty
    from .predict import upsample

    service = refiner.service  # core/sam_service.py: one model, one embedding cache
    own_choice = not service.tuned_chooses  # Fine-tune's decoder draws the winner; LiteMedSAM's own chooses it
    setting = (stack.signature(), tuple(class_ids), refiner.params.refine.min_pixels, service.decoder_version,
               own_choice)
    for n, i in enumerate(indices):
        mine = profiles(i) if callable(profiles) else profiles  # per image: core/nearest.py profiles_for
        sizes = b"".join(p.log_area.tobytes() + p.box_shape.tobytes() + (b"" if p.appearance is None else
                                                                          p.appearance.tobytes())
                         for p in mine.values() if p is not None)
        digest = hashlib.blake2b(repr(setting).encode() + sizes + labels[i].tobytes() + coarse[i].tobytes(),
                                 digest_size=16).digest()
        done = None if memo is None else memo.get(i)
        previous = done[1] if done is not None and done[2] == setting else None  # the same set and decoder
        if done is not None and done[0] == digest:
            labels[i] = done[1].copy()
        elif any((labels[i] == c).any() for c in class_ids):  # nothing predicted: no embedding computed
            embedding = service.embedding_of(stack, i).in_float32()
            scores = upsample(torch.from_numpy(coarse[i])[None], labels[i].shape)[0].numpy()
            decode = lambda boxes, low, e=embedding: service.decode(  # noqa: E731
                [(e, boxes, None)], low_res=low, own_weights=low and own_choice, inside=low)[0]  # read in the box
            rivals = {} if uncertainty.AMBIGUITY_WEIGHT else None  # Check next's ambiguity sign, when on
            labels[i] = select_plane(labels[i], scores, class_ids, decode, embedding, mine,
                                     refiner.params.refine.min_pixels, redraw=service.decoder_tuned,
                                     previous=previous, keep=KEEP, rivals=rivals)
            if memo is not None:
                memo[i] = (digest, labels[i].copy(), setting, rivals)
        yield Progress(n + 1, len(indices), f"selected objects on image {i + 1} of {len(stack)}")
