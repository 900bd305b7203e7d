"""LiteMedSAM as encoder and as refiner: one protocol, one encoder, refine on or off -> a JSON report.

    python benchmarks/litemedsam.py chaos_within3 --encoder litemedsam --refine [--cases 1,2,3]
        [--seed 0] [--episodes 50] [--cache-dir DIR] [--set refine.mask_prompt=true ...] [--out benchmarks/results]
    python benchmarks/litemedsam.py table      # a Markdown table of every report in benchmarks/results/litemedsam

Protocols: chaos_within1, chaos_within3, chaos_across, ct_within3, busi5, busi20 (the commands of
BENCHMARKS.md, through the same evaluation functions as `napari-fewshot evaluate`). Features go to the
persistent cache (--cache-dir, default /tmp/fewshot-bench-cache), so each scan's features are computed once
per encoder and later runs time matching + refinement only (the report says how many were cached).
`--set NAME=VALUE` overrides any SegmentationParams setting by its dotted name (core/settings.py; e.g. a
measured variant of the refinement, refine.margin=0.2).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import ct_folder  # noqa: E402

from napari_fewshot.core import SegmentationParams  # noqa: E402
from napari_fewshot.core.settings import with_settings  # noqa: E402
from napari_fewshot.evaluation.busi import evaluate_busi  # noqa: E402
from napari_fewshot.evaluation.volumes import evaluate_volumes  # noqa: E402

CHAOS = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}
CT = {5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left"}


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _subset(folder: Path, cases: str | None, tmp: Path) -> Path:
    """A folder of symlinks to the chosen CHAOS cases (all when cases is None)."""
    if not cases:
        return folder
    out = tmp / "subset"
    out.mkdir(exist_ok=True)
    for case in cases.split(","):
        for kind in ("image", "label"):
            (out / f"{kind}_{case}.nii.gz").symlink_to((folder / f"{kind}_{case}.nii.gz").resolve())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=("chaos_within1", "chaos_within3", "chaos_across", "ct_within3",
                                             "busi5", "busi20", "table"))
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--cases", default=None, help="CHAOS case ids (default all ten)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--cache-dir", default="/tmp/fewshot-bench-cache")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                        help="the shared data folder (default ../shared/data)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default=None, help="report file stem (default from the options)")
    args = parser.parse_args()
    if args.protocol == "table":
        return print_table(Path(args.out) / "litemedsam")

    values = {"encoder": args.encoder, "cache_dir": args.cache_dir, "seed": args.seed, "refine.enabled": args.refine}
    for item in args.set:
        name, _, text = item.partition("=")
        values[name] = _value(text)
    params = with_settings(SegmentationParams(), values)
    data = Path(args.data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chaos = _subset(data / "chaos_t2", args.cases, tmp)
        if args.protocol.startswith("chaos_within"):
            report = evaluate_volumes(chaos, "within", int(args.protocol[-1]), params, classes=CHAOS, log=print)
        elif args.protocol == "chaos_across":
            report = evaluate_volumes(chaos, "across", params=params, classes=CHAOS, log=print)
        elif args.protocol == "ct_within3":
            report = evaluate_volumes(ct_folder(data, tmp), "within", 3, params, classes=CT, log=print)
        else:
            shots = int(args.protocol[4:])
            episodes = args.episodes or (50 if shots == 5 else 30)
            report = evaluate_busi(data / "busi", shots, episodes, args.seed, params, log=print)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["config"]["cases_subset"] = args.cases
    report["config"]["seed"] = args.seed
    stem = args.name or "_".join([
        "litemedsam" if args.encoder == "litemedsam" else "lite0", args.protocol,
        "refine" if args.refine else "norefine", f"seed{args.seed}",
    ] + ([f"cases{args.cases.replace(',', '-')}"] if args.cases else []) + [s.replace("=", "-") for s in args.set])
    out = Path(args.out) / "litemedsam" / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"{stem}: mean Dice {report['dice_mean']:.3f} {report['dice_per_class']} in {report['seconds']:.0f} s -> {out}")


def print_table(folder: Path) -> None:
    """One row per report: name, mean Dice, per class, wall seconds."""
    print("| report | mean | per class | seconds |\n|---|---|---|---|")
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        if "dice_mean" not in report:
            continue
        per = ", ".join(f"{k} {v:.3f}" for k, v in report["dice_per_class"].items())
        print(f"| {path.stem} | {report['dice_mean']:.3f} | {per} | {report['seconds']:.0f} |")


if __name__ == "__main__":
    main()
