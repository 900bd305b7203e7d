"""Interleaved A/B of two ways to run the default 2D path, image by image, in one process (issue 20 cost; the
skeleton of busi_cost_window_ab.py and busi_cost_check_next_ab.py).

busi_cost_set.py's image set (spread evenly over the folder, the first `painted` painted with their reference
masks); one segmenter per side on the same set (each computes its own features and embeddings); before each image,
the side's switch is called (it sets the module state the side stands for), then segment(..., indices=[n]); ABBA
order; every `every`-th unpainted image. Per image and side: process CPU seconds, wall seconds, Check next's
estimate, and whether the sides' labels and estimates agree. The first measured image is left out of the summary
(models loading, the painted images' features and embeddings).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402


def interleaved(sides: dict[str, Callable[[], None]], images: int = 30, painted: int = 3, every: int = 1,
                data: str = "../shared/data/busi", json_out: str | None = None,
                params: Callable[[str], SegmentationParams] | None = None) -> dict:
    """sides: name -> switch (two of them: A first, then B). params(name): that side's SegmentationParams (default
    SegmentationParams(device="cpu")). Returns {"summary", "rows"} and writes it to json_out when given."""
    (a, b) = list(sides)
    names, stack, masks = load_busi(data)
    picked = np.linspace(0, len(stack) - 1, min(images, len(stack))).round().astype(int).tolist()
    support = [masks[i].astype(np.uint8) if n < painted else np.zeros(masks[i].shape, np.uint8)
               for n, i in enumerate(picked)]
    segmenters = {}
    for side in sides:
        segmenters[side] = FewShotSegmenter(params(side) if params else SegmentationParams(device="cpu"))
        segmenters[side].set_image([stack[i] for i in picked])
    rows = []
    for k, n in enumerate(range(painted, len(picked), every)):
        row, labels = dict(image=names[picked[n]]), {}
        for side in (a, b) if k % 2 == 0 else (b, a):
            sides[side]()
            cpu, wall = time.process_time(), time.perf_counter()
            result = run(segmenters[side].segment(support, indices=[n]))
            row[side] = time.process_time() - cpu
            row[side + "_wall"] = time.perf_counter() - wall
            labels[side] = np.asarray(result.labels[n])
            row[side + "_error"] = result.uncertainty.get(n)
        row.update(load=os.getloadavg()[0], predicted=bool(labels[b].any()),
                   same_labels=bool(np.array_equal(labels[a], labels[b])), same_error=row[a + "_error"] == row[b + "_error"])
        rows.append(row)
        print(k, json.dumps(row), flush=True)
    rest = rows[1:]
    summary = dict(images=len(picked), painted=painted, measured=len(rest), a=a, b=b,
                   load_min=min(r["load"] for r in rest), load_max=max(r["load"] for r in rest),
                   same_labels=sum(r["same_labels"] for r in rest), same_error=sum(r["same_error"] for r in rest),
                   b_cheaper=sum(r[b] < r[a] for r in rest),
                   paired_mean=float(np.mean([r[b] - r[a] for r in rest])),
                   paired_median=float(np.median([r[b] - r[a] for r in rest])))
    for side in sides:
        cpu = np.array([r[side] for r in rest])
        summary[side] = dict(cpu_mean=float(cpu.mean()), cpu_median=float(np.median(cpu)),
                             cpu_p90=float(np.quantile(cpu, 0.9)), cpu_max=float(cpu.max()),
                             over_2s=int((cpu > 2).sum()), wall_mean=float(np.mean([r[side + "_wall"] for r in rest])))
    print(json.dumps(summary))
    report = dict(summary=summary, rows=rows)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=1))
    return report
