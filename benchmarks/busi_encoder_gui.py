"""Encoders chosen in the window, as a sonographer would (issue 20 item 2; sessions 26-27): the box loop's seed-S
set of 20 BUSI images in a real viewer, its first 3 painted from their reference masks; for each encoder named (by
default efficientnet-lite0, then "auto", the default, which is efficientnet-lite0+litemedsam on an image set), the
Encoder setting set to it, Segment, a screenshot. Each image's Dice after each Segment is printed, with the status
and model lines.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/busi_encoder_gui.py OUT_DIR [--seed 2] [--encoders A B]

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "auto"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from busi_refit_gui import open_painted, pump, seeded_set
    from gui_driver import wait_idle
    from napari_fewshot.core import dice

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        folder, chosen = seeded_set(tmp, args.seed)
        viewer, widget, info, masks = open_painted(folder, {Path(n).name for n in chosen[:3]})
        painted = np.asarray(widget.support_layer.data).copy()
        for step, encoder in enumerate(args.encoders):
            widget.ui.settings["encoder"].value = encoder
            started = time.perf_counter()
            widget.ui.segment_button.click()
            wait_idle(widget, settle_s=0)
            seconds = time.perf_counter() - started
            pump(0.5)
            viewer.screenshot(str(args.out / f"{step}_{encoder}.png"), canvas_only=False)
            prediction = np.asarray(widget.prediction_layer.data)
            result = widget.session.last_result
            dices = {}
            for i in result.check_order():
                h, w = masks[i].shape
                dices[Path(info.names[i]).stem] = dice(prediction[i, :h, :w] != 0, masks[i])
            print(f"[{encoder}] Segment {seconds:.1f} s; status: {widget.ui.status_label.text()}; "
                  f"{widget.ui.model_label.text()}")
            print(f"  mean Dice over {len(dices)} images {np.mean(list(dices.values())):.3f}; found (> 0.1) "
                  f"{sum(d > 0.1 for d in dices.values())}")
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in dices.items()))
            assert np.array_equal(np.asarray(widget.support_layer.data), painted), "the paint changed"
        viewer.close()


if __name__ == "__main__":
    main()
