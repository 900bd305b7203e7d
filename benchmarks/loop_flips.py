"""What a new box does to the images nobody boxed (issue 20 item 3; session 21, helper "flips"): the CLI's own
`evaluate busi --protocol interactive --correct box --images 20 --shots 3 --rounds 10` loop, with read-only
wrappers that keep each segmentation's labels per image and, per selection, the new winner's score (after refit)
and the score of the object the image showed before, under the new support (select_objects.selection_score; an
embedding mean, no decode). After each drag, for the images boxed neither before nor by that drag: how many fell /
rose by > 0.1 Dice, the sum of the falls, and per fall whether the selected object MOVED (bounding-box IoU with the
previous segmentation's object < 0.5) or the same object was REDRAWN differently.

    OMP_NUM_THREADS=1 python benchmarks/loop_flips.py SEED OUT.json [--set NAME=VALUE ...]   # select_objects.NAME
    python benchmarks/loop_flips.py --report OUT.json [OUT2.json ...]

--set sets a select_objects module constant for the run (e.g. KEEP=0.05, KEEP_AFTER_REFIT=1). OUT.json holds the
CLI's report (`loop`) and the flips (`flips`); OUT's per-selection trace sits beside it in `selections`.
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets (possibly BUSI) and abdominal
CT/MR sets, so these figures may be optimistic.
"""
from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLIP, MOVED = 0.1, 0.5


def bbox(mask: np.ndarray) -> list[int] | None:
    """(H, W) bool -> [x0, y0, x1, y1] inclusive, None when empty."""
    ys, xs = np.nonzero(mask)
    return None if not len(ys) else [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def box_iou(a, b) -> float:
    """IoU of two inclusive [x0, y0, x1, y1] boxes (0 when either is None)."""
    if a is None or b is None:
        return 0.0
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0, w) * max(0, h)
    area = lambda c: (c[2] - c[0] + 1) * (c[3] - c[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def run(seed: int, out: Path, settings: dict[str, str]) -> None:
    from napari_fewshot.core import select_objects as so
    from napari_fewshot.evaluation import interactive_images as ii

    for name, value in settings.items():  # none -> None, true / false -> bool, else a float
        getattr(so, name)  # a misspelt name fails here
        setattr(so, name, None if value == "none" else {"true": True, "false": False}.get(value.lower(), None)
                if value.lower() in ("true", "false") else float(value))
    boxes: list[dict[int, list | None]] = []  # per segmentation: image index -> its object's box
    selections: list[dict] = []
    state = {"round": -1, "image": -1}
    real_run, real_plane, real_refit = ii.run, so.select_plane, so.refit

    def traced_run(job):
        state["round"] += 1
        result = real_run(job)
        boxes.append({j: bbox(np.asarray(lab) == 1) for j, lab in enumerate(result.labels)})
        return result

    def traced_plane(labels, scores, class_ids, decode, embedding, profiles, *args, **kwargs):
        state["image"] = inspect.currentframe().f_back.f_locals.get("i", -1)
        row = {"round": state["round"], "image": state["image"], "winner": None}
        selections.append(row)
        previous = kwargs.get("previous")
        if previous is not None and (previous == class_ids[0]).any():
            before = previous == class_ids[0]
            row["held"] = round(float(so.selection_score(embedding, before, profiles.get(1))), 4)
            row["held_low"] = round(float(so.selection_score(
                embedding, so.low_res(before, embedding.resized) > 0.5, profiles.get(1))), 4)
        t0 = time.process_time()
        drawn = real_plane(labels, scores, class_ids, decode, embedding, profiles, *args, **kwargs)
        row["cpu_s"] = round(time.process_time() - t0, 3)
        if previous is not None and "held" in row:
            row["kept"] = bool(((drawn == class_ids[0]) == (previous == class_ids[0])).all())
        return drawn

    def traced_refit(drawn, box, probabilities, score, *args, **kwargs):
        out_ = real_refit(drawn, box, probabilities, score, *args, **kwargs)
        selections[-1]["candidate"] = round(float(score), 4)
        selections[-1]["winner"] = round(float(out_[2]), 4)
        return out_

    ii.run, so.select_plane, so.refit = traced_run, traced_plane, traced_refit
    from napari_fewshot.cli import main

    loop = out.with_name(out.stem + "_loop.json")
    t0 = time.process_time()
    main(["evaluate", "busi", str(ROOT.parent / "shared" / "data" / "busi"), "--protocol", "interactive",
          "--correct", "box", "--images", "20", "--shots", "3", "--rounds", "10", "--seed", str(seed),
          "--json", str(loop)])
    report = json.loads(loop.read_text())
    out.write_text(json.dumps({"seed": seed, "settings": settings, "cpu_s": round(time.process_time() - t0, 1),
                               "loop": report, "boxes": [{str(j): b for j, b in r.items()} for r in boxes],
                               "selections": selections}, indent=None))


def flips(data: dict) -> list[dict]:
    """Per drag after the first segmentation: the untouched images' falls / rises by > FLIP, the sum of the falls,
    and each fall's kind (moved: box IoU with the previous object < MOVED; redrawn: the same object, other outline)
    with the new winner's and the re-scored previous object's selection scores."""
    loop = data["loop"]
    names = loop["config"]["images_drawn"]
    shots = loop["config"]["shots"]
    drags = sorted(loop["dice_per_image"], key=int)
    picked = [p["image"] for p in loop["picked"]]
    rows = []
    for n in range(1, len(drags)):
        before, after = loop["dice_per_image"][drags[n - 1]], loop["dice_per_image"][drags[n]]
        boxed = set(names[:shots]) | set(picked[:n])
        row = {"drag": int(drags[n]), "falls": [], "rose": 0, "mean": float(np.mean(list(after.values())))}
        for j, name in enumerate(names):
            if name in boxed:
                continue
            delta = after[name] - before[name]
            row["rose"] += delta > FLIP
            if delta < -FLIP:
                iou = box_iou(data["boxes"][n - 1].get(str(j)), data["boxes"][n].get(str(j)))
                sel = [s for s in data["selections"] if s["round"] == n and s["image"] == j]
                s = sel[-1] if sel else {}
                row["falls"].append({"image": name, "delta": round(delta, 3), "box_iou": round(iou, 3),
                                     "kind": "moved" if iou < MOVED else "redrawn", "winner": s.get("winner"),
                                     "held": s.get("held"), "candidate": s.get("candidate")})
        rows.append(row)
    return rows


def report(paths: list[str]) -> None:
    for path in paths:
        data = json.loads(Path(path).read_text())
        loop = data["loop"]
        curve = " ".join(f"{v:.3f}" for _, v in sorted(loop["dice_per_drag"].items(), key=lambda kv: int(kv[0])))
        print(f"{path}: seed {data['seed']} {data['settings']}: noc_85 {loop['noc_85']}; Dice per drag {curve}; "
              f"CPU {data['cpu_s']} s; selections {len(data['selections'])}, kept the previous object "
              f"{sum(bool(s.get('kept')) for s in data['selections'])}")
        print("| drag | mean | fell > 0.1 | rose > 0.1 | sum of falls | falls: moved / redrawn | falls (image: delta, "
              "box IoU, new winner vs previous re-scored) |")
        print("|---|---|---|---|---|---|---|")
        for r in flips(data):
            moved = sum(f["kind"] == "moved" for f in r["falls"])
            detail = "; ".join(f"{f['image']}: {f['delta']:+.2f}, IoU {f['box_iou']:.2f}, {f['winner']} vs "
                               f"{f['held']}" for f in r["falls"])
            print(f"| {r['drag']} | {r['mean']:.3f} | {len(r['falls'])} | {r['rose']} | "
                  f"{sum(f['delta'] for f in r['falls']):+.2f} | {moved} / {len(r['falls']) - moved} | {detail} |")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2:])
    else:
        sets = {}
        args = sys.argv[3:]
        while args:
            if args[0] == "--set":
                name, value = args[1].split("=")
                sets[name] = value
                args = args[2:]
            else:
                raise SystemExit(f"unknown argument {args[0]}")
        run(int(sys.argv[1]), Path(sys.argv[2]), sets)
