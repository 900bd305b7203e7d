"""Coarse first, refined as it arrives, on the CT sample (the demo's support: 3 slices per organ, 112 slices).

    python benchmarks/refine_stream.py [--json OUT]

In one process, on one segmenter (features computed once, no cache folder): the coarse result as main gives
it by default on a CPU (refine off), the coarse result of `segment(..., refine_later=True)` (the same labels)
and `refine_result` from there (LiteMedSAM embeddings from scratch: the time until every slice is refined),
the time to the first refined slice, and the demo's Dice on the unpainted slices for the coarse and the
refined labels. Wall-clock and process CPU seconds (a busy machine inflates the first far more). ⚠ LiteMedSAM:
MedSAM's training data may include public sets (possibly BUSI); the refined Dice may be optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def clocks():
    return time.perf_counter(), time.process_time()


def since(start) -> dict:
    wall, cpu = clocks()
    return {"wall_s": round(wall - start[0], 2), "cpu_s": round(cpu - start[1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, dice, run
    from napari_fewshot.demo import paint_support_from_labels
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names

    names = ct_class_names()
    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    support = paint_support_from_labels(labels, list(names), 3)
    painted = sorted(np.flatnonzero(support.any(axis=(1, 2))).tolist())
    scored = np.setdiff1d(np.arange(len(labels)), painted)

    def score(result):
        per = {names[c]: round(float(dice(result.labels[scored] == c, labels[scored] == c)), 4) for c in names}
        return {"mean": round(float(np.mean(list(per.values()))), 4), **per}

    params = SegmentationParams(cache_dir=None, refine=RefineParams(enabled=True))
    seg = FewShotSegmenter(params)
    seg.set_image(volume.data)
    out = {"loadavg_before": Path("/proc/loadavg").read_text().split()[:3], "threads": torch.get_num_threads(),
           "omp": os.environ.get("OMP_NUM_THREADS")}
    start = clocks()
    run(seg.compute_features())
    out["features"] = since(start)

    seg.params = SegmentationParams(cache_dir=None, refine=RefineParams(enabled=False))  # main's CPU default
    start = clocks()
    main_coarse = run(seg.segment(support, similarity=True))
    out["coarse_main_default"] = since(start)
    seg.params = params
    start = clocks()
    coarse = run(seg.segment(support, similarity=True, refine_later=True))
    out["coarse_refine_later"] = since(start)
    assert np.array_equal(coarse.labels, main_coarse.labels)
    visible = int(np.median(painted))
    stream = seg.refine_result(coarse, first=[visible])
    start, first, n = clocks(), None, 0
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            final = stop.value
            break
        n += 1
        if first is None:
            first = since(start)
    out["first_refined_slice"] = first
    out["refine_all"] = since(start)
    out["refined_slices"] = n
    out["embeddings_computed"] = seg.refiner.service.computed  # slices LiteMedSAM's image encoder ran on
    out["sam_runtime"] = seg.refiner.service.runtime_status
    out["dice_coarse"], out["dice_refined"] = score(coarse), score(final)
    out["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
