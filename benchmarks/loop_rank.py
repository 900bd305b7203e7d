"""The box-correction loop (`evaluate busi --protocol interactive --correct box`, the CLI itself) with
select_objects.KEEP set per run, and a trace of Check next's signs: per segmentation and image not boxed, the
estimated error and every sign it is made of.

    OMP_NUM_THREADS=1 [LOOP_CACHE=DIR] python benchmarks/loop_rank.py SEED KEEP OUT.json [ROUNDS]

KEEP: none or a float; LOOP_CACHE: a feature and embedding cache folder shared by runs of one draw.

Writes OUT.json (the CLI's report) and OUT.rank.json (the signs). Session 15, helper "loop2"."""

import dataclasses
import hashlib
import os
import json
import sys

import numpy as np

from napari_fewshot import cli
from napari_fewshot.core import select_objects as so
from napari_fewshot.core import uncertainty as U

seed, keep, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rounds = sys.argv[4] if len(sys.argv) > 4 else "10"
so.KEEP = None if keep == "none" else float(keep)
trace, state = [], {"n": 0}
original_rank, original_error = U.rank_slices, U.image_error


def traced_rank(coarse, labels, is_volume, *args, **kwargs):
    state["n"] += 1
    return original_rank(coarse, labels, is_volume, *args, **kwargs)


def traced_error(scores, labels, sizes, scale, stability=None, quality=None):
    error = original_error(scores, labels, sizes, scale, stability, quality)
    frame = sys._getframe(1).f_locals
    area = float(np.count_nonzero(labels)) / labels.size
    contrast = U.foreground_contrast(scores, labels) if area else None
    typical = float(np.median(sizes)) if len(sizes) else area
    wrong = U.expected_errors(scores, labels, [], scale) if area else None
    trace.append({"segmentation": state["n"], "image": int(frame.get("i", -1)), "error": error, "area": area,
                  "contrast": contrast, "size_ratio": None if not area else area / typical,
                  "boundary": None if wrong is None else wrong / ((area + typical) * labels.size),
                  "stability": stability, "quality": quality,
                  "digest": hashlib.blake2b(np.ascontiguousarray(labels).tobytes(), digest_size=8).hexdigest()})
    return error


U.rank_slices, U.image_error = traced_rank, traced_error
if os.environ.get("LOOP_CACHE"):  # features and LiteMedSAM embeddings kept on disk between runs of one draw
    from napari_fewshot.evaluation import interactive_images as ii

    plain = ii.evaluate_busi_boxes

    def cached(folder, rounds, pick, shots, images, seed, params, *a, **k):
        return plain(folder, rounds, pick, shots, images, seed,
                     dataclasses.replace(params, cache_dir=os.environ["LOOP_CACHE"]), *a, **k)

    ii.evaluate_busi_boxes = cached
code = cli.main(["evaluate", "busi", "../shared/data/busi", "--protocol", "interactive", "--correct", "box",
                 "--images", "20", "--shots", "3", "--rounds", rounds, "--seed", str(seed), "--json", out])
json.dump(trace, open(out.replace(".json", ".rank.json"), "w"))
report = json.load(open(out))
print("KEEP", so.KEEP, "noc_85", report["noc_85"])
print("dice_per_drag", {k: round(v, 3) for k, v in report["dice_per_drag"].items()})
print("picked", [(p["image"], round(p["dice_before"], 2)) for p in report["picked"]])
print("spearman", report.get("ranking_spearman_mean"))
sys.exit(code)
