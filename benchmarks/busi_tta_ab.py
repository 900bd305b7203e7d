"""BUSI episodes with flipped / rescaled views (core/augment.py), several variants in one process (issue 20).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python benchmarks/busi_tta_ab.py ../shared/data/busi --seed 2 \
        --shots 5 --episodes 50 --variants none flip scale qflip --out benchmarks/results/s21_tta

Each variant is `evaluate_busi` (what `napari-fewshot evaluate busi DIR --shots K --episodes E --seed S` runs) with
the defaults plus the variant's settings:  none (today's defaults), flip / scale / flip+scale (support_augment),
qflip (query_flip), and NAME+qflip (both). The variants share one feature cache folder (params.cache_dir, a
temporary folder, or --cache-dir), so LiteMedSAM's embeddings and lite0's features of the seed's images are computed once: they are
float16 in memory and on disk alike, so every figure equals the plain command's. Writes busi_{shots}shot_seed{S}_{variant}.json
(the evaluate report, plus cpu_s and the load) per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from napari_fewshot.core import SegmentationParams
from napari_fewshot.evaluation.busi import evaluate_busi


def variant_params(name: str, cache_dir: str) -> SegmentationParams:
    """Today's defaults plus `name`'s views: "none", "flip", "scale", "flip+scale", "qflip", "flip+qflip", ..."""
    parts = name.split("+")
    query_flip = "qflip" in parts
    support = "+".join(p for p in parts if p != "qflip") or "none"
    return replace(SegmentationParams(), support_augment=support, query_flip=query_flip, cache_dir=cache_dir)


def run_variants(description: str, variants: list[str], out_default: str, params_of) -> None:
    """The command line both A/B scripts share (DIR --seed S [--shots K] [--episodes E] [--variants ...] [--out DIR]
    [--cache-dir DIR]): each variant's `evaluate_busi` with `params_of(name, seed, cache_dir)` (SegmentationParams),
    in one process and one feature cache folder; its report (plus cpu_s, wall_s, the load) written and printed."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--variants", nargs="+", default=variants)
    parser.add_argument("--out", default=out_default)
    parser.add_argument("--cache-dir", default=None, help="a feature cache folder to keep (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="busi-ab-") as temporary:
        cache_dir = args.cache_dir or temporary
        for name in args.variants:
            started, wall = time.process_time(), time.perf_counter()
            report = evaluate_busi(args.dir, args.shots, args.episodes, args.seed, params_of(name, args.seed, cache_dir))
            report["cpu_s"] = round(time.process_time() - started, 1)
            report["wall_s"] = round(time.perf_counter() - wall, 1)
            report["load_after"] = os.getloadavg()[0]
            report["variant"] = name
            tag = name.replace("=", "-").replace(",", "_")
            (out / f"busi_{args.shots}shot_seed{args.seed}_{tag}.json").write_text(json.dumps(report, indent=1))
            print(f"seed {args.seed} {args.shots}-shot {name:24s} Dice {report['dice_mean']:.3f} hit "
                  f"{report['hit_rate']:.2f} on hits {report['dice_on_hits']:.3f}  cpu {report['cpu_s']} s "
                  f"wall {report['wall_s']} s load {report['load_after']:.1f}", flush=True)


def main() -> None:
    run_variants(__doc__, ["none", "flip", "qflip"], "benchmarks/results/s21_tta",
                 lambda name, seed, cache_dir: variant_params(name, cache_dir))


if __name__ == "__main__":
    main()
