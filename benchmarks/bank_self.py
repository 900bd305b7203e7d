"""A bank on a scan without paint: the CT sample's self-bank check (issue 21 item 4).

Paint 3 slices per organ on the CT sample (demo.paint_support_from_labels), build a PrototypeBank, save it,
load it and segment the same scan with no paint (PrototypeBank.segment_volume). Dice per organ over all
slices, and the slice range each organ is labelled on.

    OMP_NUM_THREADS=1 python benchmarks/bank_self.py [--json OUT] [--no-priors]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-priors", action="store_true", help="drop the bank's priors (a bank as before them)")
    parser.add_argument("--slices", type=int, default=3, help="painted slices per organ")
    parser.add_argument("--organs", default="", help="comma-separated organ names to paint (default all)")
    args = parser.parse_args()
    from napari_fewshot.core import SegmentationParams, dice
    from napari_fewshot.core.bank import PrototypeBank
    from napari_fewshot.demo import paint_support_from_labels
    from napari_fewshot.evaluation.datasets import slice_range
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names

    names = ct_class_names()
    if args.organs:
        names = {c: n for c, n in names.items() if n in args.organs.split(",")}
    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    support = paint_support_from_labels(labels, list(names), args.slices)
    started = time.perf_counter()
    bank = PrototypeBank.build([(volume.data, support)], SegmentationParams(), class_names=names)
    with tempfile.TemporaryDirectory() as tmp:
        path = bank.save(Path(tmp) / "ct.fewshot")
        bank = PrototypeBank.load(path)
    if args.no_priors:
        bank.priors = None
    result = bank.segment_volume(volume.data)
    seconds = time.perf_counter() - started
    out = {"dice": {}, "range_true": {}, "range_predicted": {}, "seconds": round(seconds, 1),
           "priors": not args.no_priors}
    for c, name in names.items():
        out["dice"][name] = dice(result.labels == c, labels == c)
        out["range_true"][name] = slice_range(labels, c)
        out["range_predicted"][name] = slice_range(result.labels, c)
        print(f"{name:<13} Dice {out['dice'][name]:.3f}  true slices {out['range_true'][name]}  "
              f"labelled {out['range_predicted'][name]}")
    out["dice_mean"] = float(np.mean(list(out["dice"].values())))
    print(f"mean Dice {out['dice_mean']:.3f} ({seconds:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
