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

from dataclasses import fields, replace

from busi_tta_ab import run_variants  # (benchmarks/ is the script's folder)

from napari_fewshot.core import SegmentationParams


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
    run_variants(__doc__, ["default"], "benchmarks/results/s22_sample", variant_params)


if __name__ == "__main__":
    main()
