"""The box-correction loop (`evaluate busi --protocol interactive --correct box`, the CLI itself) with
select_objects.KEEP set per run, and a trace of every selection: per image and segmentation, the new winner's
score and the previous object's score under the new support (contrast and likeness apart), and whether it was kept.

    OMP_NUM_THREADS=1 python benchmarks/loop_keep.py SEED KEEP OUT.json [ROUNDS]     # KEEP: none or a margin

Writes OUT.json (the CLI's report) and OUT.trace.json (the selections). Session 14, helper "loop"."""

import json
import sys

import numpy as np

from napari_fewshot import cli
from napari_fewshot.core import select_objects as so

seed, keep, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rounds = sys.argv[4] if len(sys.argv) > 4 else "10"
so.KEEP = None if keep == "none" else float(keep)
trace, segmentation, calls = [], {"n": 0}, []
original_plane, original_planes, original_score = so.select_plane, so.select_planes, so.selection_score


def parts(embedding, mask, profile):
    """(contrast, likeness) of a mask, as selection_score adds them."""
    inside = so.embedding_mean(embedding, mask) if mask.any() else None
    contrast = so.embedding_contrast(embedding, mask, inside=inside)
    like = 0.0 if profile is None or profile.appearance is None or inside is None else \
        float(profile.likeness(inside.cpu().numpy()))
    return round(float(contrast), 4), round(like, 4)


def traced_score(embedding, mask, profile):
    fit = original_score(embedding, mask, profile)
    calls.append(fit)
    return fit


def traced_plane(labels, scores, class_ids, decode, embedding, profiles, min_pixels=64, redraw=False,
                 previous=None, keep=None):
    image = sys._getframe(1).f_locals.get("i")
    calls.clear()
    out = original_plane(labels, scores, class_ids, decode, embedding, profiles, min_pixels, redraw, previous, keep)
    before = None if previous is None else previous == class_ids[0]
    held = before is not None and keep is not None and before.any()
    fits = calls[:-1] if held and calls else list(calls)
    row = {"segmentation": segmentation["n"], "image": image, "best": round(max(fits), 4) if fits else None,
           "shown": parts(embedding, out == class_ids[0], profiles.get(1)) if (out == class_ids[0]).any() else None}
    if before is not None and before.any():
        row["previous"] = parts(embedding, before, profiles.get(1))
        row["kept"] = bool(((out == class_ids[0]) == before).all())
        row["iou_with_previous"] = round(float(((out == class_ids[0]) & before).sum() /
                                               max(1, ((out == class_ids[0]) | before).sum())), 4)
    trace.append(row)
    return out


def traced_planes(*args, **kwargs):
    segmentation["n"] += 1
    return (yield from original_planes(*args, **kwargs))


so.select_plane, so.select_planes, so.selection_score = traced_plane, traced_planes, traced_score
code = cli.main(["evaluate", "busi", "../shared/data/busi", "--protocol", "interactive", "--correct", "box",
                 "--images", "20", "--shots", "3", "--rounds", rounds, "--seed", str(seed), "--json", out])
json.dump(trace, open(out.replace(".json", ".trace.json"), "w"))
report = json.load(open(out))
print("KEEP", so.KEEP, "noc_85", report["noc_85"])
print("dice_per_drag", {k: round(v, 3) for k, v in report["dice_per_drag"].items()})
print("unboxed", {k: None if v is None else round(v, 3) for k, v in report["dice_per_drag_unboxed"].items()})
print("changes", report["unboxed_changes"])
print("kept", sum(r.get("kept", False) for r in trace), "of", sum("kept" in r for r in trace), "selections with a previous object")
sys.exit(code)
