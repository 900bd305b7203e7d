"""A box on one image must not spoil the images nobody touched, as a sonographer sees it (issue 20 item 3; session
21, helper "flips"): the box loop's seed-S set of 20 BUSI images opened as a folder in a real viewer, the first 3
boxed with the widget's box tool (their reference lesion's box grown by 10 %), Segment (the widget's button), one
more image boxed (`--box`, default the one the loop boxes next), Segment again. Done once per `--keep` (a fresh
viewer each, so no selection is remembered between them; select_objects.KEEP, "none" = off). Prints each untouched
image's Dice after both Segments and screenshots (the whole window) every untouched image whose Dice moved by more
than 0.1 in any run, before and after the second Segment: OUT_DIR/{keep}_{before,after}_{stem}.png, and
OUT_DIR/side_{stem}.png (canvases: off before | off after | on after).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/busi_flips_gui.py OUT_DIR --seed 1 --box "malignant (43)"
        [--first STEM ...] [--keep none 0.05] [--show STEM ...]

⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound (possibly BUSI) and abdominal CT/MR
sets, so these figures may be optimistic.
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


def box_image(viewer, widget, i: int, mask: np.ndarray) -> None:
    """Drag the box tool's rectangle around image i's reference lesion (grown by 10 %) and wait for its paint."""
    import time

    from busi_refit_gui import pump
    from napari_fewshot.core.sam_prompt import box_of

    viewer.dims.set_current_step(0, i)
    boxes = widget.boxes.start()
    x0, y0, x1, y1 = box_of(mask, 0.1)
    boxes.add_rectangles(np.array([[i, y0, x0], [i, y0, x1], [i, y1, x1], [i, y1, x0]], float))
    end = time.perf_counter() + 300
    while (widget.boxes.busy or len(boxes.data)) and time.perf_counter() < end:
        pump(0.1)


def segment(viewer, widget) -> np.ndarray:
    from busi_refit_gui import pump
    from gui_driver import wait_idle

    widget.ui.segment_button.click()
    wait_idle(widget, settle_s=0)
    pump(0.5)
    return np.asarray(widget.prediction_layer.data).copy()


def shot(viewer, i: int, path: Path, canvas: Path) -> None:
    from busi_refit_gui import pump

    viewer.dims.set_current_step(0, i)
    viewer.reset_view()
    pump(0.5)
    viewer.screenshot(str(path), canvas_only=False)
    viewer.screenshot(str(canvas), canvas_only=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first", nargs="*", default=None, help="stems boxed before the first Segment (default: "
                        "the draw's first 3)")
    parser.add_argument("--box", default=None, help="stem of the image boxed after the first Segment")
    parser.add_argument("--keep", nargs="*", default=["none", "0.05"])
    parser.add_argument("--show", nargs="*", default=None, help="stems to screenshot (default: those that moved)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from busi_refit_gui import open_painted, seeded_set
    from napari_fewshot.core import dice, select_objects

    shown: set[str] = set(args.show or [])  # stems shot in every run after the one they moved in
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        folder, chosen = seeded_set(tmp, args.seed)
        first = args.first or [Path(n).name for n in chosen[:3]]
        target = args.box or Path(chosen[3]).name
        for keep in args.keep:
            select_objects.KEEP = None if keep == "none" else float(keep)
            viewer, widget, info, masks = open_painted(folder, set())  # a new support layer, nothing painted
            stems = [Path(n).stem for n in info.names]
            for stem in first:
                box_image(viewer, widget, stems.index(stem), masks[stems.index(stem)])
            before = segment(viewer, widget)
            j = stems.index(target)
            box_image(viewer, widget, j, masks[j])
            after = segment(viewer, widget)
            scores = {}
            for i, stem in enumerate(stems):
                if stem in first or i == j:
                    continue
                h, w = masks[i].shape
                scores[stem] = (dice(before[i, :h, :w] != 0, masks[i]), dice(after[i, :h, :w] != 0, masks[i]))
            print(f"[KEEP {keep}] boxed {first} then {target}; status: {widget.ui.status_label.text()}")
            for stem, (a, b) in scores.items():
                print(f"  {stem:16s} Dice {a:.3f} -> {b:.3f}{'  FELL' if b < a - 0.1 else '  ROSE' if b > a + 0.1 else ''}")
            print(f"  mean of the {len(scores)} untouched: {np.mean([a for a, _ in scores.values()]):.3f} -> "
                  f"{np.mean([b for _, b in scores.values()]):.3f}")
            shown |= {s for s, (a, b) in scores.items() if abs(b - a) > 0.1}
            for stem in sorted(shown):
                i = stems.index(stem)
                widget.prediction_layer.data = before
                shot(viewer, i, args.out / f"{keep}_before_{stem}.png", args.out / f"canvas_{keep}_before_{stem}.png")
                widget.prediction_layer.data = after
                shot(viewer, i, args.out / f"{keep}_after_{stem}.png", args.out / f"canvas_{keep}_after_{stem}.png")
            viewer.close()
    from PIL import Image

    off, on = args.keep[0], args.keep[-1]
    for stem in {p.name.split("_", 3)[-1][:-4] for p in args.out.glob(f"canvas_{off}_after_*.png")}:
        parts = [args.out / f"canvas_{off}_before_{stem}.png", args.out / f"canvas_{off}_after_{stem}.png",
                 args.out / f"canvas_{on}_after_{stem}.png"]
        if not all(p.exists() for p in parts):
            continue
        images = [Image.open(p).convert("RGB") for p in parts]
        side = Image.new("RGB", (sum(i.width for i in images) + 16, max(i.height for i in images)), (255, 255, 255))
        x = 0
        for image in images:
            side.paste(image, (x, 0))
            x += image.width + 8
        side.save(args.out / f"side_{stem}.png")


if __name__ == "__main__":
    main()
