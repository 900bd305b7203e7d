"""The low-resolution windows (core/sam_service.LOW_RES_INSIDE; session 19, "cost") in a real viewer: the folder of
benchmarks/busi_refit_gui.py (BUSI images, three painted from their masks), Segment (the widget's button), once
with the switch off (main's path: the whole resized frame upscaled) and once on (a fresh viewer each); whether the
prediction layers are equal, each image's Dice, Segment's wall seconds, and screenshots.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/busi_window_gui.py OUT_DIR [--show NAME ...]

Writes OUT_DIR/{off,on}_NAME.png (the whole window on that image) and OUT_DIR/side_NAME.png (off | on, canvas only).
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
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busi_refit_gui import DATA, PAINTED, SEGMENTED, pump  # noqa: E402


def segment(folder: Path, on: bool, out: Path, show: list[str]) -> tuple[dict, np.ndarray, float]:
    import napari

    from napari_fewshot.core import dice, sam_service
    from napari_fewshot.io import read_busi_mask
    from napari_fewshot.plugin import IMAGE_SET_KEY

    from gui_driver import wait_idle

    sam_service.LOW_RES_INSIDE = on
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open(str(folder), plugin="napari-fewshot")
    info = viewer.layers[folder.name].metadata[IMAGE_SET_KEY]
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    pump(0.5)
    widget.ui.new_support_button.click()
    support = widget.support_layer
    data = np.array(support.data)
    masks = [read_busi_mask(folder / name) for name in info.names]
    for i, name in enumerate(info.names):
        if Path(name).stem in PAINTED:
            data[i, : masks[i].shape[0], : masks[i].shape[1]][masks[i]] = 1
    support.data = data
    start = time.perf_counter()
    widget.ui.segment_button.click()
    wait_idle(widget, settle_s=0)
    seconds = time.perf_counter() - start
    pump(0.5)
    prediction = np.asarray(widget.prediction_layer.data).copy()
    scores = {}
    tag = "on" if on else "off"
    for i, name in enumerate(info.names):
        stem = Path(name).stem
        if stem in PAINTED:
            continue
        h, w = masks[i].shape
        scores[stem] = dice(prediction[i, :h, :w] != 0, masks[i])
        if stem in show:
            viewer.dims.set_current_step(0, i)
            viewer.reset_view()
            pump(0.5)
            viewer.screenshot(str(out / f"{tag}_{stem}.png"), canvas_only=False)
            viewer.screenshot(str(out / f"canvas_{tag}_{stem}.png"), canvas_only=True)
    viewer.close()
    return scores, prediction, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--show", nargs="*", default=["benign (11)", "benign (34)"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_FEWSHOT_AUTOSAVE_DIR"] = os.path.join(tmp, "autosave")
        folder = Path(tmp) / "busi_window"
        folder.mkdir()
        for stem in PAINTED + SEGMENTED:
            for f in DATA.glob(f"{stem}*.png"):
                if f.stem == stem or f.stem.startswith(f"{stem}_mask"):
                    shutil.copy(f, folder / f.name)
        off, p_off, s_off = segment(folder, False, args.out, args.show)
        on, p_on, s_on = segment(folder, True, args.out, args.show)
    from PIL import Image

    for stem in args.show:
        a, b = (Image.open(args.out / f"canvas_{t}_{stem}.png").convert("RGB") for t in ("off", "on"))
        side = Image.new("RGB", (a.width + b.width + 8, max(a.height, b.height)), (255, 255, 255))
        side.paste(a, (0, 0))
        side.paste(b, (a.width + 8, 0))
        side.save(args.out / f"side_{stem}.png")
    for stem in off:
        print(f"{stem:14s} Dice off {off[stem]:.3f}  on {on[stem]:.3f}")
    print(f"prediction layers equal: {np.array_equal(p_off, p_on)}; Segment wall s: off {s_off:.1f}  on {s_on:.1f}"
          " (the first includes loading the models)")


if __name__ == "__main__":
    main()
