"""BUSI: pictures of lesions the growing round (core/select_objects.grow, session 19 "grow") changed.

    PYTHONPATH=$PWD python benchmarks/busi_grow_pictures.py DUMP_DIR OUT_DIR EP [EP ...]

DUMP_DIR: busi_hits_dump.py's episodes (queries.json + epNN.npz). For each episode: the image | the reference
(green) and the outline drawn today (main's refit, red) | the reference and the outline after growing (red, grow
with the code's defaults and the dumped class margin), with the box LiteMedSAM was given (yellow), Dice and score.
Same decoder and code path as busi_hits_levers.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from busi_hits_dump import image_of, picture
from busi_hits_levers import refit_dumped

from napari_fewshot.core.metrics import dice
from napari_fewshot.core.proposals import decoded_masks
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.select_objects import full_size, grow


def main() -> None:
    from PIL import Image

    parser = argparse.ArgumentParser()
    parser.add_argument("dump", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("episodes", nargs="+", type=int)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = json.loads((args.dump / "queries.json").read_text())
    service = LiteMedSAMService()
    for n in args.episodes:
        z = np.load(args.dump / f"ep{n:02d}.npz")
        e = refit_dumped(service, z)
        box, score, before = e.box, e.score, e.base
        gbox, gprob, gscore = grow(before, box, e.prob, score, e.low, e.embedding, e.profile,
                                   z["margin"].astype(np.float32))
        after = decoded_masks(gbox, full_size(gprob, e.shape))[0]
        image, truth = image_of(names[n]), z["truth"]
        left = picture(image, [(truth, (0, 255, 0)), (before, (255, 0, 0))], box[0],
                       f"ep{n:02d} {names[n]} today (refit): Dice {dice(before, truth):.2f} score {score:.3f}")
        right = picture(image, [(truth, (0, 255, 0)), (after, (255, 0, 0))], gbox[0],
                        f"grown: Dice {dice(after, truth):.2f} score {gscore:.3f}")
        right = right.crop((image.shape[1] + 6, 0, right.width, right.height))
        both = Image.new("RGB", (left.width + 6 + right.width, left.height), (255, 255, 255))
        both.paste(left, (0, 0))
        both.paste(right, (left.width + 6, 0))
        both.save(args.out / f"ep{n:02d}.png")
        print(f"ep{n:02d} {names[n]}: Dice {dice(before, truth):.3f} -> {dice(after, truth):.3f}, "
              f"score {score:.3f} -> {gscore:.3f}")


if __name__ == "__main__":
    main()
