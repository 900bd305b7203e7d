"""BUSI: what propose and select drew on each query of `evaluate busi`, and pictures of the weak outlines.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/busi_hits_dump.py run SEED OUT_DIR [--shots 5] [--episodes 50]
    PYTHONPATH=$PWD python benchmarks/busi_hits_dump.py pictures OUT_DIR [--below 0.7]

`run` calls the CLI's own `evaluate busi ../shared/data/busi --shots K --episodes E --seed S` (the evaluation's
code path, nothing copied) with two wrappers installed: around core/select_objects.py's `select_plane` (each
query's coarse labels, every candidate's box and score, the winner's box and low-resolution probabilities, the
selection's output and the LiteMedSAM embedding it drew on) and around evaluation/busi.py's `localisation` (the
final prediction and the reference). One `epNN.npz` per episode under OUT_DIR, plus the CLI's JSON (`eval.json`).

`pictures` draws, for every hit (the prediction's largest component overlaps the lesion) with Dice below
`--below`: the image, the reference outline (green), the coarse prototype mask (blue), the selected candidate's
box (yellow: what LiteMedSAM was given) and the final mask (red), side by side with the image alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BUSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "busi"


def run(seed: int, out: Path, shots: int, episodes: int, folder: Path = BUSI) -> None:
    from napari_fewshot import cli
    from napari_fewshot.core import select_objects
    from napari_fewshot.evaluation import busi

    out.mkdir(parents=True, exist_ok=True)
    record: dict = {}
    episode = [0]
    original_select, original_candidates = select_objects.select_plane, select_objects.candidates
    original_score, original_localisation = select_objects.selection_score, busi.localisation

    def candidates(*args, **kwargs):
        result = original_candidates(*args, **kwargs)
        record["boxes"], record["probabilities"] = np.asarray(result[0]), np.asarray(result[2])
        record["fits"] = []
        return result

    def selection_score(*args, **kwargs):
        value = original_score(*args, **kwargs)
        record.setdefault("fits", []).append(value)
        return value

    def select_plane(labels, scores, class_ids, decode, embedding, profiles, *args, **kwargs):
        record.clear()
        drawn = original_select(labels, scores, class_ids, decode, embedding, profiles, *args, **kwargs)
        fits = np.asarray(record.get("fits", []), np.float32)
        n = len(record.get("boxes", ()))
        best = int(np.argmax(fits[:n])) if n else -1
        profile = profiles.get(1)
        record.update(coarse=(labels == class_ids[0]).astype(np.uint8), selected=(drawn == class_ids[0]),
                      best=best, winner=record["boxes"][best] if n else np.zeros(4, np.float32),
                      winner_prob=record["probabilities"][best].astype(np.float16) if n else np.zeros((1, 1)),
                      embedding=embedding.features.cpu().numpy().astype(np.float16),
                      shape=np.asarray(embedding.shape), scale=float(embedding.scale),
                      margin=(scores[1] - np.delete(scores, 1, 0).max(0)).astype(np.float16),
                      log_area=np.zeros(0) if profile is None else profile.log_area,
                      box_shape=np.zeros(0) if profile is None else profile.box_shape,
                      appearance=np.zeros(0) if profile is None or profile.appearance is None
                      else profile.appearance)
        record["fits"] = fits
        return drawn

    def localisation(prediction, truth):
        found = original_localisation(prediction, truth)
        np.savez_compressed(out / f"ep{episode[0]:02d}.npz", prediction=np.asarray(prediction, bool),
                            truth=np.asarray(truth, bool), dice=found["dice"], hit=found["hit"],
                            **{k: v for k, v in record.items() if k != "probabilities"})
        episode[0] += 1
        record.clear()
        return found

    select_objects.select_plane, select_objects.candidates = select_plane, candidates
    select_objects.selection_score, busi.localisation = selection_score, localisation
    try:
        cli.main(["evaluate", "busi", str(folder), "--shots", str(shots), "--episodes", str(episodes),
                  "--seed", str(seed), "--json", str(out / "eval.json")])
    finally:
        select_objects.select_plane, select_objects.candidates = original_select, original_candidates
        select_objects.selection_score, busi.localisation = original_score, original_localisation
    cases = json.loads((out / "eval.json").read_text())["cases"]
    for n, case in enumerate(cases):  # the episode files in the JSON's order, named
        with np.load(out / f"ep{n:02d}.npz") as z:
            assert abs(float(z["dice"]) - case["dice"]) < 1e-9
    (out / "queries.json").write_text(json.dumps([c["query"] for c in cases]))


def image_of(name: str, folder: Path = BUSI) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(folder / f"{name}.png").convert("L"))  # name: "benign/benign (N)"


def outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=2)


def picture(image: np.ndarray, layers: list[tuple[np.ndarray, tuple]], box, title: str):
    """(H, W) grey image, [(mask, rgb)] outlines, (4,) box -> a PIL image: the image alone | with the outlines."""
    from PIL import Image, ImageDraw

    rgb = np.repeat(image[..., None], 3, 2).astype(np.uint8)
    over = rgb.copy()
    for mask, colour in layers:
        over[outline(mask)] = colour
    both = Image.fromarray(np.concatenate([rgb, np.full((rgb.shape[0], 6, 3), 255, np.uint8), over], 1))
    draw = ImageDraw.Draw(both)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        shift = rgb.shape[1] + 6
        draw.rectangle([x0 + shift, y0, x1 + shift, y1], outline=(255, 255, 0), width=2)
    draw.text((4, 4), title, fill=(255, 255, 0))
    return both


def pictures(out: Path, below: float) -> None:
    names = json.loads((out / "queries.json").read_text())
    folder = out / "pictures"
    folder.mkdir(exist_ok=True)
    rows = []
    for n, name in enumerate(names):
        with np.load(out / f"ep{n:02d}.npz") as z:
            if not bool(z["hit"]) or float(z["dice"]) >= below:
                continue
            image = image_of(name)
            selected = z["selected"]
            from napari_fewshot.core.metrics import dice

            title = (f"ep{n:02d} {name}: Dice {float(z['dice']):.2f} (selection {dice(selected, z['truth']):.2f}) "
                     "green ref, blue coarse, yellow box, red final")
            picture(image, [(z["coarse"], (0, 120, 255)), (z["truth"], (0, 255, 0)), (z["prediction"], (255, 0, 0))],
                    z["winner"], title).save(folder / f"ep{n:02d}.png")
            rows.append((n, name, float(z["dice"])))
    for row in rows:
        print("ep%02d %-16s Dice %.3f" % row)
    print(f"{len(rows)} hits below {below} -> {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("seed", type=int)
    r.add_argument("out", type=Path)
    r.add_argument("--shots", type=int, default=5)
    r.add_argument("--episodes", type=int, default=50)
    p = sub.add_parser("pictures")
    p.add_argument("out", type=Path)
    p.add_argument("--below", type=float, default=0.7)
    args = parser.parse_args(argv)
    if args.what == "run":
        run(args.seed, args.out, args.shots, args.episodes)
    else:
        pictures(args.out, args.below)


if __name__ == "__main__":
    sys.exit(main())
