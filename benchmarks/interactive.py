"""Regenerate "Interactive correction (NoC@0.90)" of BENCHMARKS.md with the `napari-fewshot evaluate` CLI.

    python benchmarks/interactive.py [--data ../shared/data] [--out benchmarks/results]
                                     [--only chaos_interactive_suggested,busi_interactive_worst] [--rounds N]
                                     [--busi-seeds 0,1,2]

Runs one after the other (each is one process; on 2 cores run nothing else beside it), writes
results/{chaos,busi}_interactive_{suggested,uniform,worst}.json and prints a Markdown table of Dice
per round per pick. `python benchmarks/plots.py` draws docs/dice_per_round.png from those reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

from accuracy import CHAOS_CLASSES, CLI, ROOT

PICKS = ("suggested", "uniform", "worst")


def benchmarks(data: Path, rounds: int | None, busi_seeds: list[int] = (0,)) -> dict[str, list[str]]:
    """Run name -> CLI arguments. BUSI draws of seed S != 0 are named busi_interactive_PICK_seedS."""
    chaos, busi = str(data / "chaos_t2"), str(data / "busi")
    extra = ["--rounds", str(rounds)] if rounds is not None else []
    runs = {}
    for pick in PICKS:
        runs[f"chaos_interactive_{pick}"] = ["evaluate", "volumes", chaos, "--protocol", "interactive",
                                             "--classes", CHAOS_CLASSES, "--pick", pick, *extra]
    for seed in busi_seeds:
        for pick in PICKS:
            runs[f"busi_interactive_{pick}{f'_seed{seed}' if seed else ''}"] = [
                "evaluate", "busi", busi, "--protocol", "interactive", "--pick", pick, "--seed", str(seed), *extra]
    return runs


def core_digest() -> str:
    """A digest of napari_fewshot/core/*.py as the run found them (the engine changes between commits)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "napari_fewshot" / "core").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def table(reports: dict[str, dict]) -> str:
    """One row per run: Dice after 0, 1, ... corrections (whole signed mask, then not yet corrected)."""
    rounds = max(len(r["dice_per_round"]) for r in reports.values())
    head = ("| run | " + " | ".join(str(k) for k in range(rounds))
            + " | NoC@0.90 (mean curve) | NoC@0.90 per case (mean) | reached | seconds |")
    rule = "|" + "---|" * (rounds + 5)
    lines = [head, rule]
    for name, r in reports.items():
        for label, key in (("signed", "dice_per_round"), ("not yet corrected", "dice_per_round_uncorrected")):
            values = " | ".join(f"{v:.3f}" for v in r[key]) + " | " * (rounds - len(r[key]))
            tail = (f" | {r['noc_90']} | {r['noc_90_mean']:.2f} | {r['noc_90_reached']} | {r['seconds']:.0f} |"
                    if key == "dice_per_round" else " | | | | |")
            lines.append(f"| {name} ({label}) | {values}{tail}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--only", default=None, help="comma-separated run names")
    parser.add_argument("--rounds", type=int, default=None, help="corrections (default: the CLI's, 10 CHAOS / 5 BUSI)")
    parser.add_argument("--busi-seeds", default="0",
                        help="comma-separated BUSI draws (default 0; BENCHMARKS.md: 0,1,2)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = benchmarks(Path(args.data), args.rounds, [int(s) for s in args.busi_seeds.split(",")])
    wanted = args.only.split(",") if args.only else list(runs)
    reports = {}
    for name in wanted:
        command = runs[name] + ["--json", str(out / f"{name}.json")]
        print("$ napari-fewshot " + " ".join(command), flush=True)
        started, core = time.perf_counter(), core_digest()
        subprocess.run(CLI + command, check=True, cwd=ROOT)
        report = json.loads((out / f"{name}.json").read_text())
        report["wall_seconds"] = round(time.perf_counter() - started, 1)  # the whole process, loading included
        report["core_digest"] = core  # napari_fewshot/core/*.py when the run started
        (out / f"{name}.json").write_text(json.dumps(report, indent=1))
        print(f"{name}: {report['wall_seconds']} s wall", flush=True)
        reports[name] = report
    print(table(reports))


if __name__ == "__main__":
    main()
