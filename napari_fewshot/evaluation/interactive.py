"""The interactive protocol: a simulated clinician corrects one slice (or image) per round until the
mask can be signed; how many corrections does it take (NoC@0.90)?

Volumes (CHAOS-T2 layout, `find_cases`): each class is its own 1-way task, as in the within
protocol. The clinician starts from K painted slices (default 1: the middle slice of the class's
range, as `within` with K=1). Each round one slice that was not drawn yet is corrected, i.e. replaced
by the reference (support[z] = reference[z] == class), and everything is segmented again with the
same segmenter (features cached). Which slice:

- suggested: the first slice of the tool's own ranking, `result.check_order(exclude=drawn)` (the
             segmenter's uncertainty: expected wrongly labelled pixels per slice);
- worst:     (oracle) the slice with the most wrongly labelled pixels against the reference;
- uniform:   the next in even spacing: the midpoint of the largest gap between 0, the drawn slices
             and S-1.

Score per round: 3D Dice of the whole signed mask (drawn slices are the reference there: what the
clinician signs), and, the honest "lift" figure, 3D Dice over the slices not drawn yet. A corrected
slice where the class is absent (the clinician erased a false positive) has no paint: it is passed as
`segment(support, empty_slices=...)`, a support slice that is background everywhere.

BUSI (`load_busi`): `random.Random(seed).sample(range(N), images)` draws the pool (25 by default);
the first `shots` of the draw are painted with their reference masks, the other 20 are what the
clinician signs; the pool is one image set (features once). Each round one of the 20 is corrected
(suggested / worst / uniform = the next in draw order). Score per round: mean per-image Dice over the
20 (corrected ones count, with Dice 1) and over those not corrected yet.

NoC@0.90: `noc_90` is the number of corrections after which the mean Dice curve first reaches 0.90
(null if never). Per case (a case x class task for volumes, an image for BUSI) the same rule gives
`noc_90` per row, and a row that never reaches 0.90 counts as `rounds` (standard interactive
segmentation practice); `noc_90_mean` averages those.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ..core import AdaptParams, FewShotSegmenter, FineTuneParams, SegmentationParams, dice, run
from ..errors import FewShotError
from .adaptation import adapted_state
from .datasets import find_cases, load_case, present_classes, seeded_busi_pool, slice_range, spread_slices

PICKS = ("suggested", "worst", "uniform")
THRESHOLD = 0.90
NOC_RULE = ("noc_90: corrections after which the mean Dice first reaches 0.90 (null: never). Per row: the same "
            "on the row's own curve; a row that never reaches 0.90 counts as `rounds` (interactive-segmentation "
            "practice); noc_90_mean averages the rows.")


# -- the rules, on plain arrays ---------------------------------------------------------------------
def check_pick(pick: str) -> str:
    if pick not in PICKS:
        raise FewShotError(f"Unknown --pick {pick!r}; use suggested, worst or uniform.")
    return pick


def check_rounds(rounds: int) -> int:
    if rounds < 0:
        raise FewShotError(f"--rounds must be 0 or more, not {rounds}.")
    return rounds


def pick_uniform(n_slices: int, drawn: Sequence[int]) -> int:
    """The midpoint of the largest gap between 0, the drawn slices and S-1 that is not drawn yet
    (ties: the lowest gap); when no gap has an undrawn midpoint, the undrawn slice farthest from any drawn one."""
    drawn_set = {int(z) for z in drawn}
    if len(drawn_set) >= n_slices:
        raise FewShotError("Every slice is drawn already; nothing is left to correct.")
    points = sorted(drawn_set | {0, n_slices - 1})
    gaps = sorted(((b - a, -a, (a + b) // 2) for a, b in zip(points, points[1:])), reverse=True)
    for _, _, middle in gaps:
        if middle not in drawn_set:
            return int(middle)
    free = np.array([z for z in range(n_slices) if z not in drawn_set])
    distance = np.min(np.abs(free[:, None] - np.array(sorted(drawn_set))[None]), axis=1)
    return int(free[np.argmax(distance)])


def pick_worst(errors: Sequence[float], candidates: Sequence[int]) -> int:
    """The candidate with the most wrongly labelled pixels (`errors[i]`; ties: the first candidate)."""
    candidates = list(candidates)
    if not candidates:
        raise FewShotError("Nothing is left to correct.")
    return int(candidates[int(np.argmax([errors[i] for i in candidates]))])


def pick_suggested(result, candidates: Sequence[int], drawn: Sequence[int] = ()) -> int:
    """The first of the tool's own ranking (`result.check_order(exclude=drawn)`, most unsure first) that is
    a candidate."""
    candidates = list(candidates)
    if not candidates:
        raise FewShotError("Nothing is left to correct.")
    check_order = getattr(result, "check_order", None)
    if check_order is None:
        raise FewShotError("--pick suggested needs the segmenter's uncertainty ranking (check_order), which this "
                           "version does not have; use --pick worst or uniform.")
    allowed = set(candidates)
    for i in check_order(exclude=sorted(int(z) for z in drawn)):
        if int(i) in allowed:
            return int(i)
    # The ranking covers only what it segmented; an undrawn slice it left out (none expected) comes last.
    return int(candidates[0])


def errors_per_slice(prediction: np.ndarray | Sequence[np.ndarray], reference) -> np.ndarray:
    """Wrongly labelled pixels per slice / image (boolean masks, a volume or lists of 2D images)."""
    return np.array([int(np.count_nonzero(np.asarray(p, bool) != np.asarray(r, bool)))
                     for p, r in zip(prediction, reference)])


def noc(curve: Sequence[float], threshold: float = THRESHOLD) -> int | None:
    """Number of corrections after which `curve` (Dice before any correction, then after each) first
    reaches `threshold`; None when it never does."""
    for k, value in enumerate(curve):
        if value >= threshold:
            return k
    return None


def noc_per_case(curve: Sequence[float], rounds: int, threshold: float = THRESHOLD) -> int:
    """`noc`, with a case that never reaches the threshold counted as `rounds`."""
    reached = noc(curve, threshold)
    return rounds if reached is None else reached


def _mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    return [float(v) for v in np.mean(np.asarray(curves, float), axis=0)] if curves else []


def _choose(pick, result, errors, candidates, n, drawn, order=None) -> int:
    if pick == "suggested":
        return pick_suggested(result, candidates, drawn)
    if pick == "worst":
        return pick_worst(errors, candidates)
    if order is not None:  # BUSI: the next in the seeded draw order
        return int(next(i for i in order if i in set(candidates)))
    return pick_uniform(n, drawn)


def _check_options(pick: str, rounds: int) -> None:
    """The checks both interactive protocols make of their options (one sentence each)."""
    check_pick(pick)
    check_rounds(rounds)


def _fine_tuned(segmenter, support, fine_tune: FineTuneParams | None, empty) -> None:
    """What pressing Fine-tune before this round's Segment does: undo the last round's, adapt on every signed
    slice (painted, corrected, marked empty)."""
    if fine_tune is not None:
        segmenter.reset_weights()
        run(segmenter.fine_tune(support, fine_tune, empty_slices=empty))


# -- volumes ----------------------------------------------------------------------------------------
def evaluate_volumes_interactive(
    folder,
    rounds: int = 10,
    pick: str = "suggested",
    initial_slices: int = 1,
    params: SegmentationParams | None = None,
    fine_tune: FineTuneParams | None = None,
    classes: dict[int, str] | None = None,
    adapt: AdaptParams | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """The interactive protocol on a folder of image_*/label_* volumes; returns the JSON-able report."""
    _check_options(pick, rounds)
    if initial_slices < 1:
        raise FewShotError(f"--support-slices must be at least 1, not {initial_slices}.")
    params = params or SegmentationParams()
    started = time.perf_counter()
    rows = []
    for case, image_path, label_path in find_cases(folder):
        image, labels = load_case(image_path, label_path)
        segmenter = FewShotSegmenter(params)
        segmenter.set_image(image)
        adapted_state(segmenter, adapt, log)
        for class_id, name in present_classes(labels, classes).items():
            initial = spread_slices(*slice_range(labels, class_id), initial_slices)
            if len(labels) - len(initial) < rounds:
                raise FewShotError(f"Case {case} has {len(labels)} slices: too few for {rounds} rounds.")
            row = _volume_task(segmenter, labels == class_id, initial, rounds, pick, fine_tune)
            row = {"case": case, "class": name, "class_id": class_id, **row}
            rows.append(row)
            log(f"case {case} {name} ({pick}): Dice " + " ".join(f"{d:.3f}" for d in row["dice_per_round"])
                + f"; corrected {row['corrected']}; NoC@0.90 {row['noc_90']}")
    return _report(rows, rounds, pick, started, params, adapt, folder,
                   {"protocol": "interactive", "support_slices": initial_slices,
                    "fine_tune": None if fine_tune is None else fine_tune.__dict__})


def _volume_task(segmenter, reference: np.ndarray, initial: list[int], rounds: int, pick: str,
                 fine_tune: FineTuneParams | None = None) -> dict:
    """One case x class: paint `initial`, then `rounds` corrections; Dice curves and what was picked."""
    n = len(reference)
    support = np.zeros(reference.shape, np.uint8)
    support[initial] = reference[initial]
    drawn = list(initial)
    curve, lift, picked, regret, seconds = [], [], [], [], []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        empty = [z for z in drawn if not reference[z].any()]  # "no organ here": background-only support
        _fine_tuned(segmenter, support, fine_tune, empty)
        result = run(segmenter.segment(support, empty_slices=empty))
        seconds.append(round(time.perf_counter() - t0, 3))
        signed = np.asarray(result.labels) == 1
        signed[drawn] = reference[drawn]  # what the clinician drew is what is signed (empty slices too)
        curve.append(dice(signed, reference))
        free = [z for z in range(n) if z not in set(drawn)]
        lift.append(dice(signed[free], reference[free]))
        if r == rounds:
            break
        errors = errors_per_slice(signed, reference)
        z = _choose(pick, result, errors, free, n, drawn)
        picked.append(z)
        # How good the pick was against the oracle: wrongly labelled pixels on it vs on the worst slice.
        regret.append([int(errors[z]), int(errors[free].max())])
        support[z] = reference[z]
        drawn.append(z)
    return {"support_slices": list(initial), "corrected": picked,
            "corrected_empty": [z for z in picked if not reference[z].any()], "dice_per_round": curve,
            "dice_per_round_uncorrected": lift, "dice": curve[-1], "noc_90": noc_per_case(curve, rounds),
            "noc_90_reached": noc(curve) is not None, "picked_vs_worst_errors": regret,
            "segment_seconds": seconds}


# -- BUSI -------------------------------------------------------------------------------------------
def evaluate_busi_interactive(
    folder,
    rounds: int = 5,
    pick: str = "suggested",
    shots: int = 5,
    images: int = 25,
    seed: int = 0,
    params: SegmentationParams | None = None,
    fine_tune: FineTuneParams | None = None,
    adapt: AdaptParams | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """The interactive protocol on a BUSI-like folder (one seeded pool of `images`, `shots` painted)."""
    _check_options(pick, rounds)
    params = params or SegmentationParams()
    started = time.perf_counter()
    names, drawn, pool, masks = seeded_busi_pool(folder, shots, images, rounds, seed, "unpainted images")
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(pool)
    adapted_state(segmenter, adapt, log)
    support = [np.zeros(m.shape, np.uint8) for m in masks]
    for j in range(shots):
        support[j] = masks[j]
    targets = list(range(shots, images))  # the images the clinician signs, in draw order
    corrected: list[int] = []
    per_image: dict[int, list[float]] = {j: [] for j in targets}
    curve, lift, picked, regret, seconds = [], [], [], [], []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        empty = [j for j in list(range(shots)) + corrected if not masks[j].any()]
        _fine_tuned(segmenter, support, fine_tune, empty)
        result = run(segmenter.segment(support, empty_slices=empty))
        seconds.append(round(time.perf_counter() - t0, 3))
        signed = [np.asarray(lab) == 1 for lab in result.labels]
        for j in corrected:
            signed[j] = masks[j]
        scores = {j: dice(signed[j], masks[j]) for j in targets}
        for j in targets:
            per_image[j].append(scores[j])
        curve.append(float(np.mean(list(scores.values()))))
        free = [j for j in targets if j not in set(corrected)]
        lift.append(float(np.mean([scores[j] for j in free])))
        log(f"BUSI ({pick}) round {r}: Dice {curve[-1]:.3f}, not yet corrected {lift[-1]:.3f}")
        if r == rounds:
            break
        errors = np.zeros(images)
        errors[free] = errors_per_slice([signed[j] for j in free], [masks[j] for j in free])
        j = _choose(pick, result, errors, free, images, list(range(shots)) + corrected, order=targets)
        picked.append(j)
        regret.append([int(errors[j]), int(errors[free].max())])
        support[j] = masks[j].astype(np.uint8)
        corrected.append(j)
    rows = [{"case": names[drawn[j]], "class": "lesion", "class_id": 1, "corrected_in_round":
             (corrected.index(j) + 1 if j in corrected else None), "dice_per_round": per_image[j],
             "dice": per_image[j][-1], "noc_90": noc_per_case(per_image[j], rounds),
             "noc_90_reached": noc(per_image[j]) is not None} for j in targets]
    report = _report(rows, rounds, pick, started, params, adapt, folder,
                     {"protocol": "interactive", "shots": shots, "images": images, "seed": seed,
                      "draw": f"random.Random({seed}).sample(range({len(names)}), {images}): the first "
                              f"{shots} painted, the rest signed; uniform corrects them in draw order",
                      "painted": [names[drawn[j]] for j in range(shots)],
                      "fine_tune": None if fine_tune is None else fine_tune.__dict__})
    # The pool's curves are per image set, not averages of per-row curves of the signed images alone.
    report["dice_per_round"] = curve
    report["dice_per_round_uncorrected"] = lift
    report["dice_per_round_per_class"] = {"lesion": curve}
    report["noc_90"] = noc(curve)
    report["corrected"] = [names[drawn[j]] for j in picked]
    report["picked_vs_worst_errors"] = regret
    report["segment_seconds"] = seconds
    return report


# -- report -----------------------------------------------------------------------------------------
def _report(rows, rounds, pick, started, params, adapt, folder, config) -> dict:
    """The JSON-able report shared by both data sets: means per class and over classes, per round."""
    names = sorted({r["class"] for r in rows}, key=lambda n: min(r["class_id"] for r in rows if r["class"] == n))
    per_class_curve = {n: _mean_curve([r["dice_per_round"] for r in rows if r["class"] == n]) for n in names}
    per_class_lift = {n: _mean_curve([r.get("dice_per_round_uncorrected", r["dice_per_round"])
                                      for r in rows if r["class"] == n]) for n in names}
    curve = _mean_curve(list(per_class_curve.values()))  # mean over classes of the mean over cases
    lift = _mean_curve(list(per_class_lift.values()))
    per_class = {n: c[-1] for n, c in per_class_curve.items()}
    return {
        "dice_mean": curve[-1] if curve else float("nan"),
        "dice_per_class": per_class,
        "dice_per_round": curve,
        "dice_per_round_uncorrected": lift,
        "dice_per_round_per_class": per_class_curve,
        "noc_90": noc(curve),
        "noc_90_mean": float(np.mean([r["noc_90"] for r in rows])) if rows else float("nan"),
        "noc_90_reached": f"{sum(r['noc_90_reached'] for r in rows)} of {len(rows)}",
        "noc_rule": NOC_RULE,
        "cases": rows,
        "seconds": round(time.perf_counter() - started, 2),
        "config": {**config, "pick": pick, "rounds": rounds, "threshold": THRESHOLD, "params": params.to_dict(),
                   "adapt": None if adapt is None else adapt.__dict__, "folder": str(folder)},
    }
