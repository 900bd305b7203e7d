"""Re-segmenting after a correction through the Python API: an old revision *as it shipped* (A) against this checkout
with its defaults (B), interleaved in one process, correction after correction (issue 21's "at least 5x faster than
today's code measured beside it", today = the revision the issue was filed at).

    python benchmarks/resegment_then.py [--baseline 9e43027] [--scan ct|N] [--corrections 4] [--json OUT]

A is the old revision's whole package, extracted with ``git archive`` and imported under another name
(``napari_fewshot_then``; its imports are relative), used as its API was then: ``FewShotSegmenter(SegmentationParams(
device="cpu"))``, ``segment(support)`` with its defaults (at 9e43027 LiteMedSAM's refinement was off for volumes
on a CPU, so A is the coarse result a user got). B is this checkout: ``segment(..., refine_later=True)``, then
``refine_result(coarse, first=[z])`` to the end (LiteMedSAM's re-decode included, as the window streams it), then the
embeddings ahead (core/ahead.py: idle time, timed apart, not in B's figures). The same scan, paint and corrections as
``resegment_ab.py`` (Segment all first, not timed as a correction; then the reference of one more organ slice into
the support per correction, A/B order alternating). Prints wall and CPU seconds (process CPU: one thread with
OMP_NUM_THREADS=1) of each, and each one's mean Dice over the classes against the reference.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
NAME = "napari_fewshot_then"


def old_package(rev: str):
    """The package napari_fewshot of git revision `rev`, imported as NAME."""
    folder = Path(tempfile.mkdtemp(prefix="fewshot-then-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "napari_fewshot"], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder)
    (folder / "napari_fewshot").rename(folder / NAME)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{NAME}.core")


def timed(job, run):
    start, cpu = time.perf_counter(), time.process_time()
    out = run(job)
    return round(time.perf_counter() - start, 2), round(time.process_time() - cpu, 2), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="9e43027")
    parser.add_argument("--scan", default="ct")
    parser.add_argument("--corrections", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import numpy as np

    import napari_fewshot.core as new
    from napari_fewshot.core.ahead import embed_ahead
    from resegment_ab import dice_mean
    from resegment_gui import scan

    old = old_package(args.baseline)
    ct = args.scan == "ct"
    volume, truth, painted, organ = scan("ct" if ct else "tiled", 0 if ct else int(args.scan))
    support = np.zeros(volume.shape, np.uint8)
    support[painted] = truth[painted]
    classes = [int(c) for c in np.unique(truth) if c]
    name_a, name_b = f"A {args.baseline} as shipped", "B this checkout"
    segs = {name_a: old.FewShotSegmenter(old.SegmentationParams(device="cpu")),
            name_b: new.FewShotSegmenter(new.SegmentationParams(device="cpu"))}
    rows = {name: {"wall": [], "cpu": [], "dice": []} for name in segs}
    rows[name_b].update(coarse_wall=[], coarse_cpu=[], ahead=[])
    for name, seg in segs.items():
        core = old if name == name_a else new
        seg.set_image(volume)
        wall, cpu, _ = timed(seg.compute_features(), core.run)
        rows[name]["features"] = (wall, cpu)
        if name == name_a:
            rows[name]["segment_all"] = timed(seg.segment(support), core.run)[:2]
        else:
            wall, cpu, coarse = timed(seg.segment(support, refine_later=True), core.run)
            rwall, rcpu, final = timed(seg.refine_result(coarse), core.run)
            rows[name]["segment_all"] = (wall, cpu, rwall, rcpu)
            rows[name]["ahead"].append(timed(embed_ahead(seg, final), core.run)[:2])
    candidates = [z for z in organ if z not in painted]
    chosen = candidates[:: max(1, len(candidates) // args.corrections)][:args.corrections]
    for n, z in enumerate(chosen):
        support[z] = truth[z]
        for name in (list(segs) if n % 2 == 0 else list(segs)[::-1]):
            seg, row = segs[name], rows[name]
            if name == name_a:
                wall, cpu, result = timed(seg.segment(support), old.run)
            else:
                cwall, ccpu, coarse = timed(seg.segment(support, refine_later=True), new.run)
                rwall, rcpu, result = timed(seg.refine_result(coarse, first=[z]), new.run)
                wall, cpu = round(cwall + rwall, 2), round(ccpu + rcpu, 2)
                row["coarse_wall"].append(cwall)
                row["coarse_cpu"].append(ccpu)
                row["ahead"].append(timed(embed_ahead(seg, result), new.run)[:2])
            row["wall"].append(wall)
            row["cpu"].append(cpu)
            row["dice"].append(dice_mean(result.labels, truth, classes))
        print(f"correction on slice {z}:", {k: (v["wall"][-1], v["cpu"][-1], v["dice"][-1]) for k, v in rows.items()},
              "load:", round(os.getloadavg()[0], 1), flush=True)
    for row in rows.values():
        row["median_wall_s"], row["median_cpu_s"] = float(np.median(row["wall"])), float(np.median(row["cpu"]))
    a, b = rows[name_a], rows[name_b]
    out = {"scan": list(volume.shape), "corrected_slices": chosen, "rows": rows,
           "speedup_cpu": [round(x / y, 2) for x, y in zip(a["cpu"], b["cpu"])],
           "speedup_wall": [round(x / y, 2) for x, y in zip(a["wall"], b["wall"])],
           "omp": os.environ.get("OMP_NUM_THREADS"), "load_average": [round(x, 1) for x in os.getloadavg()]}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
