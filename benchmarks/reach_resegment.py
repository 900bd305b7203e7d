"""Re-segmenting after a correction through the Python API with each slice matched against the painted slices next
to it (support_reach "nearest", the default since session 29) and against every painted slice ("all"), on the CT
sample: liver and spleen painted from its reference on 2 slices, then 6 corrections (the slices resegment_gui.py
picks), each followed by ``FewShotSegmenter.segment(support, refine_later=True)`` (the coarse result, as the window
shows it first). Each reach runs in its own process, one after the other, --repeat times.

    python benchmarks/reach_resegment.py [--repeat 2] [--float32] [--json OUT]

Prints per correction the wall and CPU seconds and the liver / spleen Dice of the coarse result. --float32 makes the
matching's products float32 (NAPARI_FEWSHOT_MATMUL), as on CPUs without AVX512-BF16 / AMX / VNNI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(reach: str) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from resegment_gui import scan

    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run

    volume, truth, painted, organ = scan("ct", 0)
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", support_reach=reach))
    segmenter.set_image(volume)
    support = np.zeros_like(truth)
    support[painted] = truth[painted]
    start = time.perf_counter()
    run(segmenter.segment(support, refine_later=True))
    first = time.perf_counter() - start
    candidates = [z for z in organ if z not in painted]
    rows = []
    for z in candidates[:: max(1, len(candidates) // 6)][:6]:
        support[z] = truth[z]
        start, cpu = time.perf_counter(), time.process_time()
        result = run(segmenter.segment(support, refine_later=True))
        rows.append({"slice": z, "s": round(time.perf_counter() - start, 3), "cpu_s": round(time.process_time() - cpu, 3),
                     "liver": round(float(dice(result.labels == 1, truth == 1)), 4),
                     "spleen": round(float(dice(result.labels == 2, truth == 2)), 4)})
    return {"reach": reach, "painted": painted, "first_segment_s": round(first, 2), "corrections": rows,
            "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.float32:
        env["NAPARI_FEWSHOT_MATMUL"] = "float32"
    runs = []
    for _ in range(args.repeat):
        for reach in ("all", "nearest"):
            out = subprocess.run([sys.executable, __file__, "--one", reach], env=env, capture_output=True, text=True,
                                 check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            rows = runs[-1]["corrections"]
            print(f"{reach:<8} s {[r['s'] for r in rows]} cpu {[r['cpu_s'] for r in rows]} "
                  f"liver {[r['liver'] for r in rows]} spleen {[r['spleen'] for r in rows]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"float32": args.float32, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
