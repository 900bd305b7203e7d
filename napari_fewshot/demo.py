"""The main job on the shipped CT sample: paint support from its labels, segment, write, report Dice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .pipeline import PaintedSupport, ProgressLine, segment_file
from .core import FewShotSegmenter, SegmentationParams, dice
from .evaluation.datasets import slice_range, spread_slices
from .io import Volume, read_labels, read_volume, write_mask


def paint_support_from_labels(labels: np.ndarray, class_ids, slices_per_class: int = 3) -> np.ndarray:
    """What a clinician would paint: `slices_per_class` slices spread over each organ's range, with
    every requested organ painted on each chosen slice. labels: (S, H, W) -> support (S, H, W)."""
    chosen = sorted({s for c in class_ids if (r := slice_range(labels, c)) for s in spread_slices(*r, slices_per_class)})
    support = np.zeros_like(labels)
    support[chosen] = np.where(np.isin(labels[chosen], list(class_ids)), labels[chosen], 0)
    return support


def run_demo(out_dir: str | Path, params: SegmentationParams | None = None, slices_per_class: int = 3,
             log: Callable[[str], None] = print) -> dict:
    """Segment the CT sample from 3 painted slices per organ (pipeline.segment_file, as the CLI); write the
    mask, the support and one heatmap per organ to `out_dir`.

    Returns {"volume", "labels", "support", "support_slices", "result", "dice": {name: float}, "names",
    "files": [...], "seconds"}.
    """
    from .sample_data import CT_IMAGE, CT_LABELS, ct_class_names

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ct_class_names()
    volume: Volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    support = paint_support_from_labels(labels, list(names), slices_per_class)
    painted = sorted(np.flatnonzero(support.any(axis=(1, 2))).tolist())
    log(f"CT sample {volume.data.shape} (slices, rows, cols), spacing {volume.spacing} mm; "
        f"support painted on slices {painted}")
    started = time.perf_counter()
    segmenter = FewShotSegmenter(params or SegmentationParams())
    outcome = segment_file(PaintedSupport(support), segmenter, volume, out_dir / "prediction.nii.gz", overwrite=True,
                           heatmaps=out_dir, heatmap_names=names, keep_result=True, progress=ProgressLine())
    result = outcome["result"]
    seconds = time.perf_counter() - started
    log(f"encoder {segmenter.encoder.name} on {segmenter.device}: {len(volume.data)} slices in {seconds:.1f} s")
    scored = np.setdiff1d(np.arange(len(labels)), painted)
    scores = {names[c]: dice(result.labels[scored] == c, labels[scored] == c) for c in names}
    for name, score in scores.items():
        log(f"  Dice {name:<13} {score:.3f}  (on the {len(scored)} unpainted slices)")
    log(f"  mean Dice {np.mean(list(scores.values())):.3f}")
    files = [Path(p) for p in outcome["written"]]
    files += write_mask(out_dir / "support.nii.gz", support, like=volume, overwrite=True)
    log("wrote " + ", ".join(str(f) for f in files))
    return {"volume": volume, "labels": labels, "support": support, "result": result, "dice": scores,
            "files": files, "seconds": seconds, "names": names, "support_slices": painted}
