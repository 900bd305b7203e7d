"""Candidate signs for Check next on image sets, recorded on the BUSI box loop (issue 20 item 3; session 25).

    OMP_NUM_THREADS=1 python benchmarks/loop_signs_dump.py SEED ROUNDS OUT.json
    python benchmarks/loop_signs_dump.py --report OUT.json [OUT.json ...]

The loop is `evaluation.interactive_images.evaluate_busi_boxes` with the CLI's defaults (native grid), cut at ROUNDS
picks. At each pick, for every unboxed image, read-only: its Dice, Check next's sign today (1 - LiteMedSAM's IoU
estimate of the prediction's box) and signs that do not come from LiteMedSAM's view of the kept object's outline:

- `area_ratio`: log(predicted area / the boxed supports' median area) (a 0.5 % lesion under a 40 % blob);
- `likeness`: the kept object's mean LiteMedSAM embedding against each boxed support's (mean cosine), and
  `support_likeness`, the same for each support against the others (leave-one-out, the level a lesion reaches);
- `contrast`: the kept object's embedding contrast with its ring (core/select_objects.embedding_contrast);
- `sim_inside`: the prototype map's mean best-class cosine inside the kept object, and `sim_support` the range the
  support's own objects reach (result.similarity_range);
- `outside_share`: of the cells whose prototype similarity reaches the support's low level, the share outside the
  kept object (the lesion map's mass spread elsewhere).

--report prints each sign's Spearman with 1 - Dice per round and where the misses (Dice < 0.2) rank under today's
sign and each candidate. ⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets
(possibly BUSI), so these figures may be optimistic.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"


def _signs(segmenter, result, j: int, boxed: dict) -> dict:
    from napari_fewshot.core.select_objects import (embedding_contrast, embedding_mean, low_res,
                                                    support_profiles)

    service, stack = segmenter.refiner.service, segmenter.stack

    def embedding(i):
        return service.embedding_of(stack, i).in_float32()

    kept = np.asarray(result.labels[j]) == 1
    supports = {i: m.astype(np.uint8) for i, m in boxed.items() if m.any()}
    areas = [m.mean() for m in supports.values()]
    out = {"area": float(kept.mean()), "support_median_area": float(np.median(areas))}
    if not kept.any():
        return out
    out["area_ratio"] = float(np.log(kept.mean() / np.median(areas)))
    profile = support_profiles(supports, 1, embedding)[1]
    e = embedding(j)
    small = low_res(kept, e.resized) > 0.5
    inside = embedding_mean(e, small)
    out["contrast"] = embedding_contrast(e, small, inside=inside)
    out["likeness"] = profile.likeness(inside.cpu().numpy()) if inside is not None else None
    rows = profile.appearance
    loo = [float(np.mean([np.dot(rows[a], rows[b]) / (np.linalg.norm(rows[a]) * np.linalg.norm(rows[b]))
                          for b in range(len(rows)) if b != a])) for a in range(len(rows))] if len(rows) > 1 else []
    out["support_likeness"] = float(np.median(loo)) if loo else None
    sim = np.asarray(result.similarity[1][j], np.float32)
    low, high = result.similarity_range.get(1, (float(sim.min()), float(sim.max())))
    out["sim_inside"] = float(sim[kept].mean())
    out["sim_outside_max"] = float(sim[~kept].max()) if (~kept).any() else None
    out["sim_support"] = [float(low), float(high)]
    hot = sim >= low
    out["outside_share"] = float((hot & ~kept).sum() / max(1, hot.sum()))
    return out


def run(seed: int, rounds: int, out: Path) -> None:
    from napari_fewshot.core import SegmentationParams, dice
    from napari_fewshot.evaluation import interactive_images as loop

    made, records, real_pick, real_segmenter = [], [], loop.pick_suggested, loop.FewShotSegmenter

    def segmenter(*a, **k):  # heatmaps on (similarity=True) for the prototype-map signs; labels unchanged
        made.append(real_segmenter(*a, **k))
        plain = made[-1].segment
        made[-1].segment = lambda support, **kw: plain(support, similarity=True, **kw)
        return made[-1]

    truth = {}

    def pick(result, free, boxed_order):
        seg = made[-1]
        boxed = {i: np.asarray(seg_support[i]) for i in boxed_order}
        rec = {"boxed": list(boxed_order), "images": {}}
        for j in free:
            row = _signs(seg, result, j, boxed)
            row["estimate"] = float(result.uncertainty[j])
            row["dice"] = float(dice(np.asarray(result.labels[j]) == 1, truth[j]))
            rec["images"][str(j)] = row
        records.append(rec)
        return real_pick(result, free, boxed_order)

    seg_support = {}
    real_box_mask, real_pool = loop.box_mask, loop.seeded_busi_pool

    def box_mask(boxes, stack, index, box):
        seg_support[index] = real_box_mask(boxes, stack, index, box)
        return seg_support[index]

    def pool(*a, **k):
        names, drawn, images, masks = real_pool(*a, **k)
        truth.update(enumerate(masks))
        return names, drawn, images, masks

    loop.FewShotSegmenter, loop.pick_suggested, loop.box_mask, loop.seeded_busi_pool = segmenter, pick, box_mask, pool
    params = SegmentationParams(seed=seed)
    report = loop.evaluate_busi_boxes(DATA, rounds=rounds, seed=seed, params=params, box_every_image=False)
    out.write_text(json.dumps({"seed": seed, "names": report["config"]["images_drawn"], "rounds": records,
                               "curve": report["dice_per_drag"]}))
    print(f"seed {seed}: curve {[round(v, 3) for v in report['dice_per_drag'].values()]}")


def candidate_signs(row: dict) -> dict:
    """Each candidate as 'higher = check first' (None where the image has nothing drawn: those rank first anyway)."""
    if "area_ratio" not in row:
        return {}
    like = row["likeness"] if row["likeness"] is not None else 0.0
    ref = row["support_likeness"] if row["support_likeness"] is not None else like
    return {
        "estimate": row["estimate"],
        "area_far": abs(row["area_ratio"]),
        "area_large": row["area_ratio"],
        "unlike": ref - like,
        "low_contrast": -row["contrast"],
        "sim_low": row["sim_support"][0] - row["sim_inside"],
        "outside": row["outside_share"],
        "estimate+unlike": row["estimate"] + (ref - like),
        "estimate+outside": row["estimate"] + 0.25 * row["outside_share"],
        "estimate+area": row["estimate"] + 0.1 * max(0.0, abs(row["area_ratio"]) - np.log(2.0)),
        **{f"estimate+{w}*standout@{g}": row["estimate"] + w * float(np.clip((g - row["contrast"]) / g, 0, 1))
           for w in (0.1, 0.2, 0.4) for g in (0.2, 0.25, 0.3)},
    }


def report(paths: list[Path]) -> None:
    from scipy.stats import spearmanr

    table: dict[str, list] = {}
    top: dict[str, list] = {}
    gain: dict[str, list] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for r, rec in enumerate(data["rounds"]):
            rows = {j: row for j, row in rec["images"].items() if "area_ratio" in row}
            if len(rows) < 3:
                continue
            errors = np.array([1 - row["dice"] for row in rows.values()])
            signs = [candidate_signs(row) for row in rows.values()]
            for name in signs[0]:
                values = np.array([s[name] for s in signs])
                table.setdefault(name, []).append(spearmanr(values, errors)[0])
                # the pick: is the image it ranks first a miss (Dice < 0.5)?
                top.setdefault(name, []).append(float(errors[int(np.argmax(values))] > 0.5))
                gain.setdefault(name, []).append(float(errors[int(np.argmax(values))]))
    print(f"{'sign':28s} {'spearman':>9s} {'top is a miss':>14s} {'1-Dice of top':>14s}  (rounds: "
          f"{len(table['estimate'])}; an image with nothing drawn ranks first under every sign and is left out)")
    for name in table:
        print(f"{name:28s} {np.nanmean(table[name]):9.3f} {np.mean(top[name]):14.2f} {np.mean(gain[name]):14.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report([Path(p) for p in sys.argv[2:]])
    else:
        run(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
