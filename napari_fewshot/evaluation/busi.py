"""Few-shot evaluation on a breast-ultrasound image set laid out like BUSI.

The layout (DIR/benign/NAME.png, DIR/malignant/NAME.png, masks NAME_mask*.png) is read by
evaluation/datasets.py (`load_busi`). Each episode draws a query image and K support images of other
patients (seeded); the lesion is segmented in the query from the K painted supports. All images form one image set, so each image's features are computed
once and shared by every episode (unless fine-tuning changes the encoder). With `adapt`, the encoder is
first adapted to the whole set once (superpixel episodes, no labels; core/adapt.py).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from scipy import ndimage

from ..core import AdaptParams, FewShotSegmenter, FineTuneParams, SegmentationParams, dice, run
from ..errors import FewShotError
from .adaptation import adapted_state, restore_weights
from .datasets import load_busi
from .interactive import evaluate_busi_interactive


def evaluate_busi(
    folder: str | Path,
    shots: int = 5,
    episodes: int = 50,
    seed: int = 0,
    params: SegmentationParams | None = None,
    fine_tune: FineTuneParams | None = None,
    adapt: AdaptParams | None = None,
    log: Callable[[str], None] = lambda _: None,
    protocol: str = "episodes",
    rounds: int = 5,
    pick: str = "suggested",
    images: int = 25,
) -> dict:
    """Mean lesion Dice over seeded episodes; returns the JSON-able report. protocol "interactive" (a pool of
    `images`, `shots` painted, `rounds` corrections picked by `pick`) is evaluation/interactive.py."""
    if protocol == "interactive":
        return evaluate_busi_interactive(folder, rounds, pick, shots, images, seed, params, fine_tune, adapt, log)
    if protocol != "episodes":
        raise FewShotError(f"Unknown protocol {protocol!r}; use 'episodes' or 'interactive'.")
    params = params or SegmentationParams()
    started = time.perf_counter()
    names, images, masks = load_busi(folder)
    if shots < 1 or shots >= len(images):
        raise FewShotError(f"--shots must be between 1 and {len(images) - 1} for {len(images)} images.")
    rng = random.Random(seed)
    queries = rng.sample(range(len(images)), min(episodes, len(images)))
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(images)
    state = adapted_state(segmenter, adapt, log)
    rows = []
    for query in queries:
        supports = rng.sample([i for i in range(len(images)) if i != query], shots)
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in supports:
            support[i] = masks[i].astype(np.uint8)
        if fine_tune is not None and fine_tune.steps > 0:
            run(segmenter.fine_tune(support, fine_tune))
        result = run(segmenter.segment(support, indices=[query]))
        if fine_tune is not None and fine_tune.steps > 0:
            restore_weights(segmenter, state)
        found = localisation(result.labels[query] == 1, masks[query])
        rows.append({"query": names[query], "supports": [names[i] for i in supports], **found})
        log(f"{names[query]} <- {shots} supports: Dice {found['dice']:.3f}{'' if found['hit'] else ' (missed)'}")
    mean = float(np.mean([r["dice"] for r in rows]))
    return {
        "dice_mean": mean,
        "dice_per_class": {"lesion": mean},
        **localisation_summary(rows),
        "cases": rows,
        "seconds": round(time.perf_counter() - started, 2),
        "config": {"shots": shots, "episodes": len(rows), "seed": seed, "params": params.to_dict(),
                   "encoder": segmenter.encoder_name,  # what params.encoder "auto" stood for
                   "fine_tune": None if fine_tune is None else fine_tune.__dict__,
                   "adapt": None if adapt is None else adapt.__dict__, "folder": str(folder)},
    }


def localisation(prediction: np.ndarray, truth: np.ndarray) -> dict:
    """Where a 2D prediction failed: (H, W) bool prediction and reference -> {"dice", "hit", "false_positive_px"}.

    hit: the prediction's largest 8-connected component overlaps the reference (the lesion was found, whatever
    the outline); false_positive_px: predicted pixels outside the reference (what a miss drew instead)."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    parts, count = ndimage.label(prediction, structure=np.ones((3, 3), bool))
    hit = False
    if count:
        sizes = np.bincount(parts.ravel(), minlength=count + 1)
        sizes[0] = 0
        hit = bool(truth[parts == int(np.argmax(sizes))].any())
    return {"dice": dice(prediction, truth), "hit": hit, "false_positive_px": int((prediction & ~truth).sum())}


def localisation_summary(rows: list[dict]) -> dict:
    """Episode rows with `localisation`'s keys -> hit_rate (share of queries whose lesion was found),
    dice_on_hits (mean Dice over those; None without a hit) and false_positive_px (mean over the misses; 0 when
    there is none): finding the lesion and drawing it, told apart."""
    hits = [r for r in rows if r["hit"]]
    misses = [r for r in rows if not r["hit"]]
    return {"hit_rate": len(hits) / len(rows) if rows else 0.0,
            "dice_on_hits": float(np.mean([r["dice"] for r in hits])) if hits else None,
            "false_positive_px": float(np.mean([r["false_positive_px"] for r in misses])) if misses else 0.0}
