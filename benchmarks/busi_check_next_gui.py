"""Where Check next goes on a BUSI folder, as a sonographer sees it (issue 20 item 3; session 20, helper "ambig"):
the box loop's seed-S set of 20 images in a real viewer, its first 3 painted from their reference masks, Segment
(the widget's button), then Check next clicked `--checks` times, a screenshot of the window after each click, the
status line and the shown image's Dice printed. `--weight W` sets uncertainty.AMBIGUITY_WEIGHT (Check next's
ambiguity sign), `--standout W` uncertainty.STANDOUT_WEIGHT (its standout sign, session 25); the code's defaults
without them.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/busi_check_next_gui.py OUT_DIR [--seed 2] [--weight W]
        [--standout W]

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data" / "busi"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--weight", type=float, default=None)
    parser.add_argument("--standout", type=float, default=None)
    parser.add_argument("--checks", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from busi_refit_gui import open_painted, pump, seeded_set
    from gui_driver import wait_idle
    from napari_fewshot.core import dice, uncertainty

    if args.weight is not None:
        uncertainty.AMBIGUITY_WEIGHT = args.weight
    if args.standout is not None:
        uncertainty.STANDOUT_WEIGHT = args.standout
    tag = f"w{uncertainty.AMBIGUITY_WEIGHT:g}_s{uncertainty.STANDOUT_WEIGHT:g}"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        folder, chosen = seeded_set(tmp, args.seed)  # "malignant/malignant (18)"; the first 3 are painted
        viewer, widget, info, masks = open_painted(folder, {Path(n).name for n in chosen[:3]})
        widget.ui.segment_button.click()
        wait_idle(widget, settle_s=0)
        pump(0.5)
        viewer.screenshot(str(args.out / f"{tag}_0_segment.png"), canvas_only=False)
        print(f"[{tag}] after Segment: {widget.ui.status_label.text()}")
        prediction = np.asarray(widget.prediction_layer.data)
        result = widget.session.last_result
        for i in result.check_order():
            h, w = masks[i].shape
            print(f"  {Path(info.names[i]).stem:16s} Dice {dice(prediction[i, :h, :w] != 0, masks[i]):.3f} "
                  f"sign {result.uncertainty[i]:.3f} ambiguity {result.ambiguity.get(i, float('nan')):.3f} "
                  f"standout {result.standout.get(i) or float('nan'):.3f}")
        for n in range(1, args.checks + 1):
            widget.ui.check_next_button.click()
            pump(0.5)
            i = int(viewer.dims.current_step[0])
            h, w = masks[i].shape
            viewer.screenshot(str(args.out / f"{tag}_{n}_check.png"), canvas_only=False)
            print(f"[{tag}] Check next {n}: image {Path(info.names[i]).stem} (Dice "
                  f"{dice(prediction[i, :h, :w] != 0, masks[i]):.3f}): {widget.ui.status_label.text()}")
        viewer.close()


if __name__ == "__main__":
    main()
