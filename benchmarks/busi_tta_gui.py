"""What a sonographer sees of the flipped / rescaled views (core/augment.py, session 21 "tta"): a folder of BUSI
images in a real viewer, three painted from their masks, Segment (the widget's button) with the views
off (the defaults), then in a fresh viewer with the variant set on the widget's parameters (not in the panel);
screenshots of the images asked for, and each image's Dice.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/busi_tta_gui.py OUT_DIR [--support flip] [--query-flip]
        [--painted NAME ...] [--segmented NAME ...] [--show NAME ...]

Writes OUT_DIR/{off,on}_NAME.png (the whole window), OUT_DIR/side_NAME.png (off | on, canvas only).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from busi_refit_gui import copy_stems, open_painted, pump, scores_and_shots, side_by_side


def segment(folder: Path, views: dict, tag: str, out: Path, show: list[str], painted) -> tuple[dict, np.ndarray]:
    from gui_driver import wait_idle


    viewer, widget, info, masks = open_painted(folder, painted)
    params = widget.params  # the views are not in the panel (session 21): the widget's params with them set
    widget.params = lambda: dataclasses.replace(params(), **views)
    pump(0.3)
    start = time.perf_counter()
    widget.ui.segment_button.click()
    wait_idle(widget, settle_s=0)
    print(f"{tag}: Segment {time.perf_counter() - start:.1f} s wall", flush=True)
    pump(0.5)
    scores, prediction = scores_and_shots(viewer, widget, info, masks, painted, show, out, tag)
    viewer.close()
    return scores, prediction


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--support", default="none", help="support_augment for the 'on' run")
    parser.add_argument("--query-flip", action="store_true", help="query_flip on for the 'on' run")
    parser.add_argument("--painted", nargs="*", default=["benign (3)", "benign (8)", "malignant (5)"])
    parser.add_argument("--segmented", nargs="*", default=["benign (11)", "benign (2)", "benign (34)", "benign (30)",
                                                           "malignant (12)", "malignant (21)", "malignant (58)"])
    parser.add_argument("--show", nargs="*", default=None, help="images to screenshot (default: those that change)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        folder = copy_stems(tmp, "busi_tta", args.painted + args.segmented)
        show = args.show if args.show is not None else args.segmented
        off, _ = segment(folder, {}, "off", args.out, show, args.painted)
        on, _ = segment(folder, {"support_augment": args.support, "query_flip": args.query_flip}, "on", args.out,
                        show, args.painted)
    side_by_side(args.out, show)
    for stem in off:
        print(f"{stem:16s} Dice off {off[stem]:.3f}  on {on[stem]:.3f}{'  <- changed' if abs(off[stem] - on[stem]) > 0.01 else ''}")
    print(f"mean of {len(off)}: off {np.mean(list(off.values())):.3f}  on {np.mean(list(on.values())):.3f}")


if __name__ == "__main__":
    main()
