"""The box-correction loop (`evaluate busi --protocol interactive --correct box --images 20 --shots 3`, the CLI
itself) with Check next's ranking rule set per run (core/uncertainty.CHECK_NEXT: signs, estimate), and
the decoder boxes Check next decoded counted (issue 20 cost; session 16, helper "cost"). The third rule measured in
session 16, "selection", was removed in session 17: run this script at commit b2b1b32 for it.

    OMP_NUM_THREADS=1 [LOOP_CACHE=DIR] python benchmarks/loop_check_next.py SEED MODE OUT.json [ROUNDS]

LOOP_CACHE: a feature and embedding cache folder shared by runs of one draw (the second run skips the encoders)."""

import dataclasses
import json
import os
import sys

from napari_fewshot import cli
from napari_fewshot.core import uncertainty as U

seed, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rounds = sys.argv[4] if len(sys.argv) > 4 else "10"
assert mode in ("signs", "estimate"), mode
U.CHECK_NEXT = mode
boxes = {"n": 0}
plain = U.box_signs


def counted(labels, decode, seed=0, jittered=None):
    boxes["n"] += 1 + (U.JITTERED_BOXES if jittered is None else jittered)
    return plain(labels, decode, seed, jittered)


U.box_signs = counted
if os.environ.get("LOOP_CACHE"):
    from napari_fewshot.evaluation import interactive_images as ii

    evaluate = ii.evaluate_busi_boxes

    def cached(folder, rounds, pick, shots, images, seed, params, *a, **k):
        return evaluate(folder, rounds, pick, shots, images, seed,
                        dataclasses.replace(params, cache_dir=os.environ["LOOP_CACHE"]), *a, **k)

    ii.evaluate_busi_boxes = cached
code = cli.main(["evaluate", "busi", "../shared/data/busi", "--protocol", "interactive", "--correct", "box",
                 "--images", "20", "--shots", "3", "--rounds", rounds, "--seed", str(seed), "--json", out])
report = json.load(open(out))
report["check_next_mode"], report["check_next_boxes_decoded"] = mode, boxes["n"]
json.dump(report, open(out, "w"), indent=1)
print("mode", mode, "noc_85", report["noc_85"], "boxes decoded by Check next", boxes["n"])
print("dice_per_drag", {k: round(v, 3) for k, v in report["dice_per_drag"].items()})
print("picked", [(p["image"], round(p["dice_before"], 2)) for p in report["picked"]])
sys.exit(code)
