"""Where the CPU seconds of a window correction's refinement go, and what each re-decoded box would have got by
reusing a kept decode (issue 21; session 18, helper "redec").

    OMP_NUM_THREADS=1 python benchmarks/redec_where.py [--scan ct|N] [--corrections 6] [--json OUT]

The correction sequence of benchmarks/resegment_gui.py through the API (as reuse_why.py): the paint of
resegment_gui.scan, Segment all refined, then corrections (the reference of one more organ slice into the support
and a 7-pixel diagonal stroke of class 1 over it), alternating a window correction (coarse
``segment(..., refine_later=True)``, then ``refine_result(coarse, first=[z])``, then the embeddings ahead, as the
window's quiet job) and an API correction (coarse only). Per window correction, CPU seconds (process, so
OMP_NUM_THREADS=1) of: the coarse result; the refinement, and of it LiteMedSAM's decoder calls, image embeddings
computed, prompts (components, boxes), the kept-decode look-ups, apply_decoded, provisional_plane, the clean-up +
Check next's ranking of the refined labels; slices refined, slices whose coarse labels changed, boxes prompted,
boxes decoded, decoder calls. For each box decoded: slice, class, component pixels, distance from the corrected
slice, the smallest largest corner move from a kept box of its class on its slice (px of the 256-px input), the share
of its pixels that differ from the nearest kept component, and the Dice (inside the plane) between the mask decoded
now (p > 0.5 in its box) and the mask the nearest kept decode gives (by pixels differing; and by box move).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import napari_fewshot.core.refine as refine_module  # noqa: E402
import napari_fewshot.core.refinement as refinement_module  # noqa: E402
from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run  # noqa: E402
from napari_fewshot.core.ahead import embed_ahead  # noqa: E402
from napari_fewshot.core.sam_prompt import SIDE, box_region  # noqa: E402

TIMES: dict[str, float] = {}
COUNTS: dict[str, int] = {}


def timed(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def call(*a, **k):
        start = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            TIMES[label] = TIMES.get(label, 0.0) + time.process_time() - start
            COUNTS[label] = COUNTS.get(label, 0) + 1

    setattr(owner, name, call)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="ct")
    parser.add_argument("--corrections", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from resegment_gui import scan

    ct = args.scan == "ct"
    volume, truth, painted, organ = scan("ct" if ct else "tiled", 0 if ct else int(args.scan))
    support = np.zeros(volume.shape, np.uint8)
    support[painted] = truth[painted]
    params = SegmentationParams(cache_dir=tempfile.mkdtemp(prefix="fewshot-where-"), device="cpu",
                                refine=RefineParams(enabled=True))
    seg = FewShotSegmenter(params)
    seg.set_image(volume)
    run(seg.compute_features())
    sam = seg.sam
    timed(sam, "decode", "decoder")
    timed(sam, "_compute", "embeddings computed")
    for name, label in (("plane_prompts", "prompts"), ("apply_decoded", "apply_decoded")):
        timed(refine_module, name, label)
    timed(refine_module.DecodedBoxes, "get", "kept-decode look-ups")
    timed(refinement_module, "provisional_plane", "provisional_plane")
    state = {"z": None}
    boxes_seen: list[dict] = []
    real_decode = refine_module.Refiner._decode

    def recording_decode(self, stack, labels, batch, class_ids, stop=None):
        """Before the real _decode: for each box it will decode, what the kept decodes of its slice offer."""
        kept = self.boxes
        pending = []
        for i, _, q in batch:
            if q is None:
                continue
            for box, (k, mask) in zip(q.boxes, q.parts):
                if kept.nearest(i, box, self._shift(labels[i]), (k, mask), self.params.refine.reuse_changed,
                                self._pixels(labels[i])) is not None:
                    continue
                pending.append((i, box, k, mask, labels[i].shape))
        calls = COUNTS.get("decoder", 0)
        real_decode(self, stack, labels, batch, class_ids, stop)
        for i, box, k, mask, shape in pending:
            scale = SIDE / max(shape)
            now = kept._kept.get(kept.key(i, box))
            row = {"slice": int(i), "class": int(k), "pixels": int(mask.sum()),
                   "from_corrected": None if state["z"] is None else abs(int(i) - state["z"])}
            if now is None:
                boxes_seen.append(row)
                continue
            window, crop = now
            new = np.zeros(shape, bool)
            new[window] = crop > 0.5
            best_px = best_mv = None
            for key, (b, c, comp) in kept._parts.get(i, {}).items():
                if c != k or key == kept.key(i, box) or key not in kept._kept:
                    continue
                w = kept._kept[key][0]
                differ = int(mask.sum() - mask[w].sum() + (mask[w] ^ comp).sum())
                move = float(np.abs(b - np.asarray(box, np.float32)).max()) * scale
                if best_px is None or differ < best_px[0]:
                    best_px = (differ, key)
                if best_mv is None or move < best_mv[0]:
                    best_mv = (move, key)
            for tag, best in (("px", best_px), ("move", best_mv)):
                if best is None:
                    continue
                w, old_crop = kept._kept[best[1]]
                old = np.zeros(shape, bool)
                old[w] = old_crop > 0.5
                old &= box_region(box, shape)  # apply_decoded reads a reused decode inside the new box only
                row[f"dice_reuse_{tag}"] = round(mask_dice(new, old), 4)
            if best_px is not None:
                row["differ_share"] = round(best_px[0] / max(int(mask.sum()), 1), 3)
            if best_mv is not None:
                row["move_px256"] = round(best_mv[0], 2)
            boxes_seen.append(row)
        COUNTS["decoder calls seen"] = COUNTS.get("decoder calls seen", 0) + COUNTS.get("decoder", 0) - calls

    refine_module.Refiner._decode = recording_decode
    real_finish = refinement_module.PendingRefinement.finish_coarse.__func__

    def finish_coarse(cls, result, stack, finish, *a, **k):
        def timed_finish(res, *fa, **fk):
            start = time.process_time()
            try:
                return finish(res, *fa, **fk)
            finally:
                if fk.get("refined"):
                    TIMES["clean-up + ranking (refined)"] = TIMES.get("clean-up + ranking (refined)", 0.0) + \
                        time.process_time() - start
        return real_finish(cls, result, stack, timed_finish, *a, **k)

    refinement_module.PendingRefinement.finish_coarse = classmethod(finish_coarse)
    real_prompts = sam.decode

    def counting(requests, *a, **k):
        COUNTS["boxes decoded"] = COUNTS.get("boxes decoded", 0) + sum(len(r[1]) for r in requests)
        return real_prompts(requests, *a, **k)

    sam.decode = counting
    candidates = [z for z in organ if z not in painted]
    chosen = candidates[:: max(1, len(candidates) // 6)][:args.corrections]
    report = {"scan": list(volume.shape), "painted": painted, "corrections": chosen, "rounds": []}
    for n, z in enumerate([None] + chosen):
        if z is not None:
            support[z] = truth[z]
            rows, cols = np.nonzero(truth[z] == 1)
            r, c = int(np.median(rows)), int(np.median(cols))
            for d in range(-3, 4):
                support[z, max(0, r + d - 1):r + d + 2, max(0, c + d - 1):c + d + 2] = 1
        state["z"] = z
        window = z is None or n % 2 == 1
        cpu0 = time.process_time()
        coarse = run(seg.segment(support, refine_later=True))
        row = {"corrected": z, "window": window, "coarse_cpu_s": round(time.process_time() - cpu0, 3),
               "load": round(os.getloadavg()[0], 2)}
        if window:
            TIMES.clear(), COUNTS.clear(), boxes_seen.clear()
            changed = [i for i in coarse.refinement.indices
                       if (seg.refiner._refined.get(i) is None or seg.refiner._refined[i][0] != __import__(
                           "hashlib").blake2b(coarse.refinement.coarse[i].tobytes(), digest_size=16).digest())]
            cpu1, wall1 = time.process_time(), time.perf_counter()
            result = run(seg.refine_result(coarse, first=[] if z is None else [z]))
            row["refine_cpu_s"] = round(time.process_time() - cpu1, 3)
            row["refine_wall_s"] = round(time.perf_counter() - wall1, 3)
            row["slices_refined"] = len(coarse.refinement.indices)
            row["slices_coarse_changed"] = len(changed)
            row["cpu_s"] = {k: round(v, 3) for k, v in TIMES.items()}
            row["counts"] = dict(COUNTS)
            row["boxes"] = list(boxes_seen)
            row["liver_dice"] = round(mask_dice(np.asarray(result.labels) == 1, truth == 1), 4)
            cpu2 = time.process_time()
            run(embed_ahead(seg, result))
            row["ahead_cpu_s"] = round(time.process_time() - cpu2, 2)
        report["rounds"].append(row)
        short = {k: v for k, v in row.items() if k != "boxes"}
        print(json.dumps(short), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
