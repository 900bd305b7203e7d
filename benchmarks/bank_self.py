"""A bank on a scan without paint (issue 21 item 4), with and without the bank's priors (core/bank_priors.py).

CT sample (default): paint `--slices` slices per organ (demo.paint_support_from_labels), build a PrototypeBank,
save and load it, segment the same scan with no paint. `--chaos DIR`: build the bank from CHAOS case
`--support-case` (3 slices per organ) and apply it to every other case of DIR, whole scans, no paint (no
slice range given, unlike the `across` protocol). Dice per organ over all slices, and the slices labelled.

    OMP_NUM_THREADS=1 python benchmarks/bank_self.py [--organs liver,spleen --slices 2] [--json OUT]
    OMP_NUM_THREADS=1 python benchmarks/bank_self.py --chaos ../shared/data/chaos_t2 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

CHAOS_NAMES = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}


def score(bank, segmenter, labels, names, priors):
    from napari_fewshot.core import dice, run
    from napari_fewshot.evaluation.datasets import slice_range

    saved = bank.priors
    bank.priors = priors
    try:
        predicted = run(bank.segment(segmenter)).labels
    finally:
        bank.priors = saved
    return {name: {"dice": dice(predicted == c, labels == c), "true": slice_range(labels, c),
                   "labelled": slice_range(predicted, c)} for c, name in names.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--slices", type=int, default=3, help="painted slices per organ")
    parser.add_argument("--organs", default="", help="comma-separated organ names to paint (default all)")
    parser.add_argument("--chaos", default=None, help="a CHAOS-T2 folder: bank from one case, applied to the others")
    parser.add_argument("--support-case", default="1")
    args = parser.parse_args()
    from napari_fewshot.core import SegmentationParams
    from napari_fewshot.core.bank import PrototypeBank
    from napari_fewshot.demo import paint_support_from_labels
    from napari_fewshot.evaluation.datasets import find_cases, load_case
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names

    if args.chaos:
        names = dict(CHAOS_NAMES)
        cases = {c: (i, l) for c, i, l in find_cases(args.chaos)}
        image, labels = load_case(*cases.pop(args.support_case))
        queries = {case: load_case(*paths) for case, paths in cases.items()}
    else:
        names = ct_class_names()
        volume = read_volume(CT_IMAGE)
        image, labels = volume.data, read_labels(CT_LABELS, like=volume)
        queries = {"ct (same scan)": (image, labels)}
    if args.organs:
        names = {c: n for c, n in names.items() if n in args.organs.split(",")}
    support = paint_support_from_labels(labels, list(names), args.slices)
    started = time.perf_counter()
    bank = PrototypeBank.build([(image, support)], SegmentationParams(), class_names=names)
    with tempfile.TemporaryDirectory() as tmp:
        bank = PrototypeBank.load(bank.save(Path(tmp) / "bank.fewshot"))
    segmenter = bank.make_segmenter()
    out = {"cases": {}, "support_slices": sorted(np.flatnonzero(support.any(axis=(1, 2))).tolist())}
    for case, (q_image, q_labels) in queries.items():
        segmenter.set_image(q_image)
        rows = {"before": score(bank, segmenter, q_labels, names, None),
                "after": score(bank, segmenter, q_labels, names, bank.priors)}
        out["cases"][case] = rows
        for name in names.values():
            b, a = rows["before"][name], rows["after"][name]
            print(f"{case} {name:<13} Dice {b['dice']:.3f} -> {a['dice']:.3f}  true slices {b['true']}  "
                  f"labelled {b['labelled']} -> {a['labelled']}", flush=True)
    for when in ("before", "after"):
        per = {n: float(np.mean([r[when][n]["dice"] for r in out["cases"].values()])) for n in names.values()}
        out[f"dice_{when}"] = per
        out[f"mean_{when}"] = float(np.mean(list(per.values())))
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(f"mean Dice without priors {out['mean_before']:.3f}, with {out['mean_after']:.3f} "
          f"({out['seconds']:.0f} s)  per organ: {out['dice_before']} -> {out['dice_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
