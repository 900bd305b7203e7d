"""BUSI episodes with the localisation figures (hit rate, Dice on hits, false positives on misses), through
evaluation/busi.py's evaluate_busi exactly as `napari-fewshot evaluate busi` runs it, plus a persistent feature
and LiteMedSAM-embedding cache so that several variants on a shared CPU do not embed every image again.

    python benchmarks/busi_localisation.py --seed 0 --shots 5 --episodes 50 [--refine-select peaks|off]
        [--encoder litemedsam] [--no-refine] --json benchmarks/results/busi/NAME.json

⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core.config import SegmentationParams  # noqa: E402
from napari_fewshot.evaluation.busi import evaluate_busi  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/busi")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--no-refine", action="store_true")
    parser.add_argument("--refine", default="", help="refine settings, e.g. 'second_pass=False,select=False'")
    parser.add_argument("--cache-dir", default=os.environ.get("BUSI_CACHE", "/tmp/busi_cache"))
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    params = SegmentationParams(seed=args.seed, cache_dir=args.cache_dir)
    if args.encoder:
        params = replace(params, encoder=args.encoder)
    refine = {"enabled": False} if args.no_refine else {}
    for item in filter(None, args.refine.split(",")):
        key, value = item.split("=")
        refine[key] = {"True": True, "False": False}.get(value, value)
        if isinstance(refine[key], str):
            refine[key] = type(getattr(params.refine, key))(value)
    params = replace(params, refine=replace(params.refine, **refine))
    report = evaluate_busi(args.data, args.shots, args.episodes, args.seed, params, log=print)
    report["config"]["params"]["cache_dir"] = None  # a speed-up only, not part of the result
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"mean Dice {report['dice_mean']:.3f}, hit rate {report['hit_rate']:.2f}, Dice on hits "
          f"{report['dice_on_hits']:.3f}, false positives on misses {report['false_positive_px']:.0f} px, "
          f"{report['seconds']:.0f} s -> {args.json}")


if __name__ == "__main__":
    main()
