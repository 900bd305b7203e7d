"""Propose-and-select variants on BUSI episodes, offline: the coarse maps of each episode and its query's
LiteMedSAM embedding are computed once (as evaluate_busi draws the episodes: same seed, same order), then every
variant decodes its own boxes on them. Prints Dice, hit rate, Dice on hits and false positives on misses per
variant, and the best candidate per episode (what a perfect score would pick).

    python benchmarks/busi_select.py --seed 0 --episodes 20 [--shots 5]

Variants: refine (the default: each coarse component's box, then the largest component), coarse (no refine),
select_pN (components + boxes of the support's typical size around N peaks, the candidate with the best
candidate_score.prototype_contrast), select_p3_nosize, second_box / second_mask (a second decoder pass on the
first mask's box, with or without the first mask as a dense prompt), quality_components / quality_peaks /
quality_margins (the candidate with the best decoder IoU estimate among the components' boxes, plus peak boxes,
or each component's box at margins 0, 0.1, 0.25).
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run  # noqa: E402
from napari_fewshot.core.candidate_score import SupportProfile  # noqa: E402
from napari_fewshot.core.config import RefineParams  # noqa: E402
from napari_fewshot.core.postprocess import keep_largest_per_image  # noqa: E402
from napari_fewshot.core.predict import upsample  # noqa: E402
from napari_fewshot.core.proposals import component_masks, decoded_masks, propose_boxes, select_object  # noqa: E402
from napari_fewshot.core.refine import refine_plane  # noqa: E402
from napari_fewshot.core.sam_prompt import PlaneEmbedding, box_of, box_region  # noqa: E402
from napari_fewshot.evaluation.busi import localisation, localisation_summary  # noqa: E402
from napari_fewshot.evaluation.datasets import load_busi  # noqa: E402


def episodes(data, seed, shots, count, cache_dir):
    """Yield (query, supports, (K + 1, h, w) coarse map, decode, truth) per episode, as evaluate_busi draws them."""
    params = SegmentationParams(seed=seed, refine=RefineParams(enabled=False), cache_dir=cache_dir)
    names, images, masks = load_busi(data)
    rng = random.Random(seed)
    queries = rng.sample(range(len(images)), min(count, len(images)))
    segmenter = FewShotSegmenter(params)
    segmenter.set_image(images)
    refiner = segmenter.refiner
    for query in queries:
        supports = rng.sample([i for i in range(len(images)) if i != query], shots)
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in supports:
            support[i] = masks[i].astype(np.uint8)
        support_set = segmenter.parse_support(support)
        run(segmenter.cache.compute(support_set.slice_indices + [query]))
        coarse = run(segmenter._coarse_similarity(segmenter._groups(support_set), [query]))[query]
        cached = refiner.service.embedding_of(segmenter.stack, query)
        embedding = PlaneEmbedding(cached.features.float(), cached.shape, cached.scale)
        yield names[query], [masks[i] for i in supports], coarse, embedding, refiner.service.prompter, masks[query]


def largest(mask):
    labels = [mask.astype(np.uint8)]
    keep_largest_per_image(labels, [1], [0])
    return labels[0] == 1


def second_pass(decode, with_mask):
    def again(boxes, masks):
        first = decode(boxes, masks)
        tight = [box_of((p > 0.5) & box_region(b, p.shape), 0.1) if ((p > 0.5) & box_region(b, p.shape)).any()
                 else b for b, p in zip(boxes, first)]
        return decode(np.stack(tight), first if with_mask else None)
    return again


def variants(margin, coarse, decode, prompter, embedding, profile):
    """Variant name -> (H, W) bool mask for one episode."""
    out = {"coarse": largest(coarse)}
    for name, wrap in {"refine": decode, "second_box": second_pass(decode, False),
                       "second_mask": second_pass(decode, True)}.items():
        out[name] = largest(refine_plane(coarse.astype(np.uint8), [1], wrap, RefineParams()) == 1)
    empty = np.zeros(coarse.shape, bool)
    for name, kwargs in {"select_p0": {"peaks": 0}, "select_p3": {"peaks": 3}, "select_p5": {"peaks": 5},
                         "select_p3_nosize": {"peaks": 3, "size_weight": 0.0}}.items():
        chosen = select_object(margin, coarse, decode, profile, **kwargs)
        out[name] = empty if chosen is None else chosen
    components = component_masks(coarse, 64, 3)
    boxes = propose_boxes(margin, coarse, profile, peaks=3)
    if len(boxes):
        probabilities, quality = prompter.decode_with_quality(embedding, boxes)
        masks = decoded_masks(boxes, probabilities)
        out["quality_components"] = masks[int(np.argmax(quality[:len(components)] if components else quality))]
        out["quality_peaks"] = masks[int(np.argmax(quality))]
        out["oracle"] = masks  # every candidate, scored afterwards
    if components:
        boxes = np.stack([box_of(c, m) for c in components for m in (0.0, 0.1, 0.25)])
        probabilities, quality = prompter.decode_with_quality(embedding, boxes)
        out["quality_margins"] = decoded_masks(boxes, probabilities)[int(np.argmax(quality))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/busi")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--cache-dir", default="/tmp/busi_cache")
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {}
    for name, supports, coarse_map, embedding, prompter, truth in episodes(
            args.data, args.seed, args.shots, args.episodes, args.cache_dir):
        scores = upsample(torch.from_numpy(coarse_map)[None], truth.shape)[0].numpy()
        margin = scores[1] - np.delete(scores, 1, 0).max(0)
        coarse = scores.argmax(0) == 1
        decode = lambda boxes, masks: prompter.decode(embedding, boxes, masks)  # noqa: E731
        found = variants(margin, coarse, decode, prompter, embedding, SupportProfile.from_masks(supports))
        candidates = found.pop("oracle", [])
        found["oracle"] = max(candidates, key=lambda m: localisation(m, truth)["dice"]) if candidates \
            else np.zeros(truth.shape, bool)
        for key in set(rows) | set(found):
            rows.setdefault(key, []).append(localisation(found.get(key, np.zeros(truth.shape, bool)), truth))
        print(name, {k: round(v[-1]["dice"], 2) for k, v in sorted(rows.items())}, flush=True)
    for key, found in sorted(rows.items()):
        s = localisation_summary(found)
        print(f"{key:20s} Dice {np.mean([r['dice'] for r in found]):.3f}  hit {s['hit_rate']:.2f}  on hits "
              f"{s['dice_on_hits'] or 0:.3f}  false positives on misses {s['false_positive_px']:.0f} px")


if __name__ == "__main__":
    main()
