"""What a sonographer sees of select_objects.REFIT (session 18, "hits"): a folder of BUSI images in a real viewer,
three painted from their masks, Segment (the widget's button), once with REFIT off and once on (a fresh viewer
each, so no selection is remembered between them); screenshots of the images that changed, and each image's Dice.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/busi_refit_gui.py OUT_DIR [--show NAME ...]

Session 19 ("grow"): `--switch grow` compares the growing round instead (select_objects.GROWING off / on, with the
code's GROW_* settings; REFIT on in both); `--switch window` the low-resolution windows of helper "cost"
(sam_service.LOW_RES_INSIDE off / on: the prediction layers should be equal); `--painted` / `--segmented` name
other images (e.g. "malignant (12)": the class folder from the name).

Prints per image the Dice of the prediction layer against the reference, off and on, whether the two prediction
layers are equal and Segment's wall seconds; writes OUT_DIR/{off,on}_NAME.png
(the whole window on that image) and OUT_DIR/side_NAME.png (off | on, the canvas only).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT.parent / "shared" / "data" / "busi"
PAINTED = ("benign (3)", "benign (8)", "benign (5)")
SEGMENTED = ("benign (11)", "benign (2)", "benign (34)", "benign (30)", "benign (50)", "benign (12)")


def pump(seconds: float) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def open_painted(folder: Path, painted) -> tuple:
    """A napari window (1600 x 1000) with `folder` (BUSI images and their *_mask files) opened as an image set, the
    dock widget on the CPU, a new support layer with the images whose stems are in `painted` painted from their
    masks -> (viewer, widget, the set's info, every image's (H, W) bool mask)."""
    import napari

    from napari_fewshot.io import read_busi_mask
    from napari_fewshot.plugin import IMAGE_SET_KEY

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open(str(folder), plugin="napari-fewshot")
    info = viewer.layers[folder.name].metadata[IMAGE_SET_KEY]
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    pump(0.5)
    widget.ui.new_support_button.click()
    data = np.array(widget.support_layer.data)
    masks = [read_busi_mask(folder / name) for name in info.names]
    for i, name in enumerate(info.names):
        if Path(name).stem in painted:
            data[i, : masks[i].shape[0], : masks[i].shape[1]][masks[i]] = 1
    widget.support_layer.data = data
    return viewer, widget, info, masks


def copy_stems(tmp, name: str, stems) -> Path:
    """The BUSI images of `stems` ("benign (3)") with their mask files copied into the folder `tmp`/`name`."""
    folder = Path(tmp) / name
    folder.mkdir()
    for stem in stems:
        for f in (DATA / stem.split(" (")[0]).glob(f"{stem}*.png"):
            if f.stem == stem or f.stem.startswith(f"{stem}_mask"):
                shutil.copy(f, folder / f.name)
    return folder


def side_by_side(out: Path, stems) -> None:
    """OUT/side_STEM.png: OUT/canvas_off_STEM.png | OUT/canvas_on_STEM.png, for each of `stems`."""
    from PIL import Image

    for stem in stems:
        a, b = (Image.open(out / f"canvas_{t}_{stem}.png").convert("RGB") for t in ("off", "on"))
        side = Image.new("RGB", (a.width + b.width + 8, max(a.height, b.height)), (255, 255, 255))
        side.paste(a, (0, 0))
        side.paste(b, (a.width + 8, 0))
        side.save(out / f"side_{stem}.png")


def seeded_set(tmp, seed: int) -> tuple[Path, list[str]]:
    """The box loop's seed-`seed` set of 20 BUSI images (`evaluate busi --protocol interactive`), each with its mask
    files, copied into a folder under `tmp` -> (the folder, the names as the loop draws them: "benign/benign (8)")."""
    from napari_fewshot.evaluation.datasets import seeded_busi_pool

    names, drawn, _, _ = seeded_busi_pool(DATA, 3, 20, 10, seed, "images")
    chosen = [names[d] for d in drawn]
    folder = Path(tmp) / f"busi_seed{seed}"
    folder.mkdir()
    for name in chosen:
        for f in (DATA / name.split("/")[0]).glob(f"{Path(name).name}*.png"):
            if f.stem == Path(name).name or f.stem.startswith(f"{Path(name).name}_mask"):
                shutil.copy(f, folder / f.name)
    return folder, chosen


def scores_and_shots(viewer, widget, info, masks, painted, show, out: Path, tag: str) -> tuple[dict, np.ndarray]:
    """After a Segment: each unpainted image's Dice against its mask, and screenshots (OUT/TAG_STEM.png the window,
    OUT/canvas_TAG_STEM.png the canvas) of the stems in `show` -> (stem -> Dice, the (N, H, W) prediction)."""
    from napari_fewshot.core import dice

    prediction = np.asarray(widget.prediction_layer.data).copy()
    scores = {}
    for i, name in enumerate(info.names):
        stem = Path(name).stem
        if stem in painted:
            continue
        h, w = masks[i].shape
        scores[stem] = dice(prediction[i, :h, :w] != 0, masks[i])
        if stem in show:
            viewer.dims.set_current_step(0, i)
            viewer.reset_view()
            pump(0.5)
            viewer.screenshot(str(out / f"{tag}_{stem}.png"), canvas_only=False)
            viewer.screenshot(str(out / f"canvas_{tag}_{stem}.png"), canvas_only=True)
    return scores, prediction


def segment(folder: Path, refit: bool, out: Path, show: list[str], painted=PAINTED, switch: str = "refit",
            ) -> tuple[dict, np.ndarray, float]:
    """Per segmented image its Dice, the (N, H, W) prediction layer and Segment's wall seconds, `switch` off or on."""
    import time

    from napari_fewshot.core import sam_service, select_objects

    from gui_driver import wait_idle

    # `refit`: the switch, on / off; the others at the code's defaults
    select_objects.REFIT = (0.05, 0.2) if refit or switch != "refit" else ()
    select_objects.GROWING = refit and switch == "grow"
    sam_service.LOW_RES_INSIDE = refit or switch != "window"
    viewer, widget, info, masks = open_painted(folder, painted)
    start = time.perf_counter()
    widget.ui.segment_button.click()
    wait_idle(widget, settle_s=0)
    seconds = time.perf_counter() - start
    pump(0.5)
    scores, prediction = scores_and_shots(viewer, widget, info, masks, painted, show, out, "on" if refit else "off")
    viewer.close()
    return scores, prediction, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--show", nargs="*", default=["benign (11)", "benign (34)", "benign (2)"])
    parser.add_argument("--switch", choices=("refit", "grow", "window"), default="refit")
    parser.add_argument("--painted", nargs="*", default=list(PAINTED))
    parser.add_argument("--segmented", nargs="*", default=list(SEGMENTED))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        folder = copy_stems(tmp, "busi_refit", args.painted + args.segmented)
        off, p_off, s_off = segment(folder, False, args.out, args.show, args.painted, args.switch)
        on, p_on, s_on = segment(folder, True, args.out, args.show, args.painted, args.switch)
    side_by_side(args.out, args.show)
    for stem in off:
        print(f"{stem:14s} Dice off {off[stem]:.3f}  on {on[stem]:.3f}")
    print(f"mean of {len(off)}: off {np.mean(list(off.values())):.3f}  on {np.mean(list(on.values())):.3f}")
    print(f"prediction layers equal: {np.array_equal(p_off, p_on)}; Segment wall s: off {s_off:.1f}  on {s_on:.1f}"
          " (the first includes loading the models)")


if __name__ == "__main__":
    main()
