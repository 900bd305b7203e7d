"""Big volumes on this machine: peak memory, cache size and seconds for 512 x 512 x N CT volumes.

    python benchmarks/scale.py [--slices 100 300 600] [--input-size 384 (the default)] [--refine on|off] [--json OUT]

The volume is the real 20-slice DICOM CT of ../shared/data tiled along z to N slices (real anatomy
and HU, so normalisation and features behave as on a scan). The liver is painted on 3 slices. Each
size runs in a fresh process so its peak RSS is its own. Reports: peak RSS, feature-cache bytes in
memory (and spilled to disk), seconds for features and for segmenting every slice, and the latency
of re-segmenting one slice after a stroke (features cached). --refine on|off: LiteMedSAM's refinement of
every predicted slice (one call, as the CLI does) on or off (default: the defaults, on for volumes); the
number of LiteMedSAM embeddings computed is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_totalseg"


def one_size(slices: int, input_size: int, budget_mb: int, refine: str | None = None, distinct: bool = False) -> dict:
    import numpy as np
    import torch

    from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run
    from napari_fewshot.io import read_labels, read_volume

    torch.set_num_threads(torch.get_num_threads())
    ct = read_volume(DATA / "example_ct_dicom")
    labels = read_labels(DATA / "example_seg_dicom.nii.gz", like=ct)
    reps = -(-slices // len(ct.data))
    # --distinct: each repeat 1 HU brighter, so that no two slices share a LiteMedSAM embedding (named by pixels)
    volume = np.concatenate([ct.data + r * distinct for r in range(reps)])[:slices]
    support = np.zeros(volume.shape, np.uint8)
    for z in (slices // 6, slices // 2, 5 * slices // 6):
        support[z] = labels[z % len(labels)] == 5  # liver
    params = SegmentationParams(input_size=input_size, memory_budget_mb=budget_mb)
    if refine is not None:
        params = SegmentationParams(input_size=input_size, memory_budget_mb=budget_mb,
                                    refine=RefineParams(enabled=refine == "on"))
    segmenter = FewShotSegmenter(params)
    embedded = [0]
    if refine != "off":
        real = segmenter.sam._compute

        def counting(*a, **k):
            embedded[0] += 1
            return real(*a, **k)

        segmenter.sam._compute = counting
    started = time.perf_counter()
    segmenter.set_image(volume)
    run(segmenter.compute_features(first=np.flatnonzero(support.any((1, 2))).tolist()))
    features_s = time.perf_counter() - started
    started = time.perf_counter()
    result = run(segmenter.segment(support))
    segment_s = time.perf_counter() - started
    z = slices // 3
    support[slices // 2, 100:110, 100:110] = 1  # one more stroke
    latencies = []
    for _ in range(5):
        started = time.perf_counter()
        run(segmenter.segment(support, indices=[z]))
        latencies.append(time.perf_counter() - started)
    cache = segmenter.cache
    return {
        "slices": slices, "shape": list(volume.shape), "input_size": input_size,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "cache_memory_mib": cache.nbytes / 1024**2, "cache_slices": len(cache),
        "features_s": features_s, "segment_all_s": segment_s,
        "resegment_one_slice_s": sorted(latencies)[len(latencies) // 2],
        "labelled_voxels": int((result.labels == 1).sum()), "device": str(segmenter.device),
        "refine": refine or "default", "refined": params.refine.enabled_for(segmenter.cache.stack, segmenter.device),
        "embeddings_computed": embedded[0], "cpu_s": time.process_time(), "distinct": distinct,
    }


def main() -> None:
    from napari_fewshot.core import SegmentationParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--input-size", type=int, default=SegmentationParams().input_size)
    parser.add_argument("--memory-budget-mb", type=int, default=4096)
    parser.add_argument("--json", default=None)
    parser.add_argument("--refine", choices=["on", "off"], default=None)
    parser.add_argument("--distinct", action="store_true", help="no two slices with the same pixels")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.input_size, args.memory_budget_mb, args.refine, args.distinct)))
        return
    rows = []
    for n in args.slices:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--input-size", str(args.input_size),
                              "--memory-budget-mb", str(args.memory_budget_mb)] + ["--refine", args.refine] * bool(args.refine)
                             + ["--distinct"] * args.distinct,
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"512x512x{n}: peak RSS {r['peak_rss_gib']:.2f} GiB, cache {r['cache_memory_mib']:.0f} MiB in memory, "
              f"features {r['features_s']:.0f} s, segment all {r['segment_all_s']:.0f} s, "
              f"re-segment one slice {r['resegment_one_slice_s']:.2f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
