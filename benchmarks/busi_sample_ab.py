"""BUSI episodes with other subsamples of each painted image's local prototypes, several variants in one process
(issue 20; session 22, helper "sample").

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python benchmarks/busi_sample_ab.py ../shared/data/busi --seed 2 \
        --shots 5 --episodes 50 --variants seed=0 seed=1 seed=2 --out benchmarks/results/s22_sample --cache-dir /tmp/c

Each variant is `evaluate_busi` (what `napari-fewshot evaluate busi DIR --shots K --episodes E --seed S` runs) with
the defaults, params.seed = the episode seed as the CLI sets it, plus the variant's settings: a variant is
`field=value[,field=value]` of SegmentationParams (e.g. `seed=0`, `image_local_sampling=grid`,
`image_max_local_prototypes=1024`), or `default`. The variants share one feature cache folder, so LiteMedSAM's
embeddings and lite0's features are computed once (float16 in memory and on disk alike, so every figure equals the
plain command's). Writes busi_{shots}shot_seed{S}_{variant}.json (the report plus cpu_s and the load) per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

from napari_fewshot.core import SegmentationParams
from napari_fewshot.evaluation.busi import evaluate_busi


def variant_params(name: str, seed: int, cache_dir: str) -> SegmentationParams:
    """The CLI's defaults for episode seed `seed` plus `name`'s `field=value` changes."""
    params = replace(SegmentationParams(), seed=seed, cache_dir=cache_dir)
    if name == "default":
        return params
    types = {f.name: type(getattr(params, f.name)) for f in fields(params)}
    changes = {}
    for part in name.split(","):
        key, value = part.split("=")
        changes[key] = types[key](value)
    return replace(params, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--out", default="benchmarks/results/s22_sample")
    parser.add_argument("--cache-dir", default=None, help="a feature cache folder to keep (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="busi-sample-") as temporary:
        cache_dir = args.cache_dir or temporary
        for name in args.variants:
            started, wall = time.process_time(), time.perf_counter()
            report = evaluate_busi(args.dir, args.shots, args.episodes, args.seed, variant_params(name, args.seed, cache_dir))
            report["cpu_s"] = round(time.process_time() - started, 1)
            report["wall_s"] = round(time.perf_counter() - wall, 1)
            report["load_after"] = os.getloadavg()[0]
            report["variant"] = name
            tag = name.replace("=", "-").replace(",", "_")
            (out / f"busi_{args.shots}shot_seed{args.seed}_{tag}.json").write_text(json.dumps(report, indent=1))
            print(f"seed {args.seed} {args.shots}-shot {name:40s} Dice {report['dice_mean']:.3f} hit "
                  f"{report['hit_rate']:.2f} on hits {report['dice_on_hits']:.3f}  cpu {report['cpu_s']} s "
                  f"wall {report['wall_s']} s load {report['load_after']:.1f}", flush=True)


if __name__ == "__main__":
    main()
