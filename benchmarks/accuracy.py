"""Regenerate the accuracy tables of BENCHMARKS.md ("## Accuracy") with the `napari-fewshot evaluate` CLI.

    python benchmarks/accuracy.py [--data ../shared/data] [--out benchmarks/results] [--only chaos_within3,ct]

Each benchmark runs the exact command printed in BENCHMARKS.md and writes its JSON report to --out;
a Markdown table per benchmark is printed at the end. The CT example (TotalSegmentator's
example_ct.nii.gz) is not laid out as image_N/label_N: a temporary folder of symlinks is built for it,
with the label ids 5 liver, 1 spleen, 2 kidney_right, 3 kidney_left.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "napari_fewshot.cli"]
CHAOS_CLASSES = "1:liver,2:kidney_right,3:kidney_left,4:spleen"
CT_CLASSES = "5:liver,1:spleen,2:kidney_right,3:kidney_left"


def ct_folder(data: Path, tmp: Path) -> Path:
    folder = tmp / "ct_totalseg"
    folder.mkdir(exist_ok=True)
    for name, target in (("image_1.nii.gz", "example_ct.nii.gz"),
                         ("label_1.nii.gz", "example_seg_fast_force_split.nii.gz")):
        link = folder / name
        if not link.exists():
            link.symlink_to((data / "ct_totalseg" / target).resolve())
    return folder


def benchmarks(data: Path, tmp: Path) -> dict[str, list[str]]:
    chaos = str(data / "chaos_t2")
    busi = str(data / "busi")
    return {
        "chaos_within1": ["evaluate", "volumes", chaos, "--protocol", "within", "--support-slices", "1",
                          "--classes", CHAOS_CLASSES],
        "chaos_within3": ["evaluate", "volumes", chaos, "--protocol", "within", "--support-slices", "3",
                          "--classes", CHAOS_CLASSES],
        "chaos_within5": ["evaluate", "volumes", chaos, "--protocol", "within", "--support-slices", "5",
                          "--classes", CHAOS_CLASSES],
        "chaos_within3_ft20": ["evaluate", "volumes", chaos, "--protocol", "within", "--support-slices", "3",
                               "--classes", CHAOS_CLASSES, "--fine-tune-steps", "20"],
        "chaos_across": ["evaluate", "volumes", chaos, "--protocol", "across", "--classes", CHAOS_CLASSES],
        "chaos_across_adapt30": ["evaluate", "volumes", chaos, "--protocol", "across", "--classes", CHAOS_CLASSES,
                                 "--adapt-steps", "30"],
        "busi_1shot": ["evaluate", "busi", busi, "--shots", "1", "--episodes", "50", "--seed", "0"],
        "busi_10shot": ["evaluate", "busi", busi, "--shots", "10", "--episodes", "50", "--seed", "0"],
        "busi_5shot": ["evaluate", "busi", busi, "--shots", "5", "--episodes", "50", "--seed", "0"],
        "busi_5shot_adapt30": ["evaluate", "busi", busi, "--shots", "5", "--episodes", "50", "--seed", "0",
                               "--adapt-steps", "30"],
        "busi_20shot": ["evaluate", "busi", busi, "--shots", "20", "--episodes", "30", "--seed", "0"],
        "busi_20shot_ft20": ["evaluate", "busi", busi, "--shots", "20", "--episodes", "30", "--seed", "0",
                             "--fine-tune-steps", "20"],
        "ct_within3": ["evaluate", "volumes", str(ct_folder(data, tmp)), "--protocol", "within",
                       "--support-slices", "3", "--classes", CT_CLASSES],
    }


def table(name: str, report: dict, command: list[str]) -> str:
    per = report["dice_per_class"]
    params = report["config"]["params"]
    head = "| " + " | ".join(["mean"] + list(per)) + " | encoder | input | seconds |"
    rule = "|" + "---|" * (len(per) + 4)
    row = "| " + " | ".join(f"{v:.3f}" for v in [report["dice_mean"]] + list(per.values()))
    # 2D images (BUSI) are encoded at image_input_size, volumes at input_size (SegmentationParams.input_size_for).
    two_d = name.startswith("busi") and params.get("image_input_size")
    size = params["image_input_size"] if two_d else params["input_size"]
    row += f" | {params['encoder']} | {size} | {report['seconds']:.0f} |"
    return f"### {name}\n`napari-fewshot {' '.join(command)}`\n\n{head}\n{rule}\n{row}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("extra", nargs="*", help="extra CLI options for every run, after -- (e.g. -- --no-postprocess)")
    args, unknown = parser.parse_known_args()
    args.extra = list(args.extra) + unknown
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = benchmarks(Path(args.data), Path(tmp))
        wanted = args.only.split(",") if args.only else list(runs)
        tables = []
        for name in wanted:
            command = runs[name] + list(args.extra) + ["--json", str(out / f"{name}.json")]
            print("$ napari-fewshot " + " ".join(command), flush=True)
            subprocess.run(CLI + command, check=True, cwd=ROOT)
            report = json.loads((out / f"{name}.json").read_text())
            tables.append(table(name, report, runs[name] + list(args.extra)))
    print("\n".join(tables))


if __name__ == "__main__":
    main()
