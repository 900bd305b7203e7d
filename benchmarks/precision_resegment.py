"""Re-segmenting after a correction through the API, the matching's precisions interleaved in one process.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/precision_resegment.py --scan ct|tiled [--slices 100]
                                                                               [--precision float32,int8] [--json OUT]

The scan and paint of benchmarks/resegment_gui.py (--scan ct: the CT sample, liver and spleen on 2 slices; tiled:
the 512 x 512 DICOM CT of ../shared/data tiled to --slices slices). One segmenter (features computed once); each
precision (core/precision.py, NAPARI_FEWSHOT_MATMUL) has its own MatchCache, swapped in before each of its calls,
so both see the same load: Segment all, then 3 corrections (one more reference slice into the support each), each
timed as ``segment(support, refine_later=True)`` (the coarse result, cleaned up and ranked) for every precision in
turn, wall and process CPU seconds. Labels of each precision are compared with the first's (Dice per class).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", choices=("ct", "tiled"), default="ct")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--precision", default="float32,int8")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import numpy as np
    import torch

    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run
    from napari_fewshot.core.matching import MatchCache
    from napari_fewshot.core.precision import ENV, matmul_dtype
    from resegment_gui import scan

    names = args.precision.split(",")
    volume, truth, painted, organ = scan(args.scan, args.slices)
    support = np.zeros(volume.shape, np.uint8)
    support[painted] = truth[painted]
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(volume)
    run(segmenter.compute_features())
    budget, query_budget = segmenter._matches.budget, segmenter._matches.query_budget
    caches = {p: MatchCache(budget, query_budget) for p in names}
    rows = {p: {"matmul": None, "segment_all_s": None, "wall_s": [], "cpu_s": [], "load": [], "dice_vs_first": []}
            for p in names}
    fixes = [z for z in organ if z not in painted]
    fixes = [fixes[len(fixes) // 4], fixes[len(fixes) // 2], fixes[3 * len(fixes) // 4]]
    for step in [None, *fixes]:
        if step is not None:
            support[step] = truth[step]
        labels = {}
        for p in names:
            os.environ[ENV] = p
            segmenter._matches = caches[p]
            wall, cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                result = run(segmenter.segment(support, refine_later=True))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            labels[p] = result.labels
            row = rows[p]
            row["matmul"] = str(matmul_dtype("cpu")).replace("torch.", "")
            if step is None:
                row["segment_all_s"] = [round(wall, 2), round(cpu, 2)]
                continue
            row["wall_s"].append(round(wall, 2))
            row["cpu_s"].append(round(cpu, 2))
            row["load"].append(round(os.getloadavg()[0], 1))
            classes = [c for c in np.unique(truth) if c]
            row["dice_vs_first"].append({int(c): round(float(dice(labels[p] == c, labels[names[0]] == c)), 4)
                                         for c in classes})
            print(p, "correction at", step, f"wall {wall:.2f} s, CPU {cpu:.2f} s, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    for p in names:
        rows[p]["median_wall_s"] = round(float(np.median(rows[p]["wall_s"])), 2)
        rows[p]["median_cpu_s"] = round(float(np.median(rows[p]["cpu_s"])), 2)
    out = {"scan": list(volume.shape), "threads": torch.get_num_threads(), "corrections_at": fixes, "runs": rows}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
