"""BUSI: ways to redraw the lesion propose and select found, tried offline on busi_hits_dump.py's episodes.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/busi_hits_levers.py /tmp/hits/s2 /tmp/hits/s3 [--json OUT]

Each episode's winner (its box, its low-resolution decode, the LiteMedSAM embedding it was drawn on, all dumped
by the real `evaluate busi` run) is drawn again by each lever with the same service LiteMedSAM decodes with
(OpenVINO f32 here), at the decoder's own resolution and resized as core/select_objects.full_size does; Dice
against the reference. The selection itself is not changed: only the outline of the object it chose.
Levers: "rebox m" (the winner's mask's own box, grown by m, decoded again), "mask" (the winner's box with its
own decode as the dense prompt, SAM's second pass), "core p" (the box of the winner's cells above probability p,
+5 %), "points" (the winner's box plus a positive point at the
strongest class-margin cell inside the winner's mask and a negative point at the weakest inside the box),
combinations. CPU seconds per episode (process time) of each lever's extra decodes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_fewshot.core.metrics import dice
from napari_fewshot.core.proposals import decoded_masks
from napari_fewshot.core.sam_prompt import PlaneEmbedding, box_of, box_region
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.select_objects import full_size


def decode(service, embedding, boxes, masks=None, points=None):
    """(N, 4) boxes [, (N, H, W) mask prompts][, ((N, P, 2) xy, (N, P) labels)] -> (N, h, w) low-res probabilities
    and (N,) IoU estimates; the service's runtime, one prompt per row of its own image (as the prompter does)."""
    prompter = service.prompter
    model, runtime = prompter.model, service.decoder_runtime()
    out, quality = [], []
    with torch.no_grad():
        for n, box in enumerate(np.asarray(boxes, np.float32)):
            b = torch.from_numpy(box[None] * embedding.scale)[:, None, :]
            m = None if masks is None else prompter._mask_prompt(np.asarray(masks[n:n + 1], np.float32), embedding)
            pts = None
            if points is not None:
                xy = torch.from_numpy(np.asarray(points[0][n:n + 1], np.float32) * embedding.scale)
                pts = (xy, torch.from_numpy(np.asarray(points[1][n:n + 1], np.int64)))
            s, d = model.prompt_encoder(points=pts, boxes=b, masks=m)
            logits, iou = runtime(embedding.features.float(), s, d, torch.zeros(1, dtype=torch.int64))
            h, w = embedding.resized
            out.append(torch.sigmoid(logits[0, 0, :h, :w]).float().numpy())
            quality.append(float(iou.reshape(-1)[0]))
    return np.stack(out), np.asarray(quality)


@dataclass
class Dumped:
    """One dumped episode's winner, redrawn as main's refit does (the starting point of grow_levers, box_bank and
    busi_grow_pictures.py). Masks are (H, W) bool at the image's size; `prob` (1, h, w) low-res probabilities."""
    shape: tuple
    embedding: PlaneEmbedding
    profile: object  # candidate_score.SupportProfile
    low: object  # (N, 4) boxes -> (N, h, w) low-res probabilities: the service's decoder
    box: np.ndarray  # (1, 4) after refit
    prob: np.ndarray
    score: float
    refit_s: float  # CPU seconds of refit
    base: np.ndarray  # the mask refit draws


def refit_dumped(service, z) -> Dumped:
    """Load a dumped episode `z` (busi_hits_dump.py's npz) and redraw its winner through core/select_objects.refit."""
    from napari_fewshot.core.candidate_score import SupportProfile
    from napari_fewshot.core.select_objects import refit, selection_score

    shape = tuple(int(v) for v in z["shape"])
    embedding = PlaneEmbedding(torch.from_numpy(z["embedding"].astype(np.float32)), shape, float(z["scale"]))
    profile = SupportProfile(z["log_area"], z["box_shape"], z["appearance"] if z["appearance"].size else None)
    box, prob = z["winner"].astype(np.float32)[None], z["winner_prob"].astype(np.float32)[None]
    size = embedding.resized
    shrink = np.array([size[1] / shape[1], size[0] / shape[0]] * 2, np.float32)
    low = lambda boxes, _low=True: decode(service, embedding, boxes)[0]  # noqa: E731
    score = selection_score(embedding, decoded_masks(box * shrink, prob)[0], profile)
    first = decoded_masks(box, full_size(prob, shape))[0]
    start = time.process_time()
    box, prob, score = refit(first, box, prob, score, low, embedding, profile)
    refit_s = time.process_time() - start
    base = decoded_masks(box, full_size(prob, shape))[0]
    return Dumped(shape, embedding, profile, low, box, prob, score, refit_s, base)


def drawn(box, probabilities, shape):
    """The full-size mask select_plane draws from one low-res decode of `box`."""
    return decoded_masks(np.asarray(box, np.float32)[None], full_size(probabilities[None], shape))[0]


def levers(service, z) -> dict:
    """name -> (Dice, CPU-s of its extra decodes, the decoder's IoU estimate, selection_score of its mask)."""
    from napari_fewshot.core.candidate_score import SupportProfile
    from napari_fewshot.core.select_objects import selection_score

    shape = tuple(int(v) for v in z["shape"])
    embedding = PlaneEmbedding(torch.from_numpy(z["embedding"].astype(np.float32)), shape, float(z["scale"]))
    profile = SupportProfile(z["log_area"], z["box_shape"], z["appearance"] if z["appearance"].size else None)
    box, prob = z["winner"].astype(np.float32), z["winner_prob"].astype(np.float32)
    truth = z["truth"]
    first = drawn(box, prob, shape)
    q0 = decode(service, embedding, box[None])[1][0]
    out = {"today": (first, 0.0, q0)}

    def timed(name, fn):
        start = time.process_time()
        mask, q = fn()
        out[name] = (mask, time.process_time() - start, q)

    def rebox(margin, mask=first, dense=False):
        b = box_of(mask, margin) if mask.any() else box
        masks = full_size(prob[None], shape) if dense else None
        p, q = decode(service, embedding, b[None], masks)
        return drawn(b, p[0], shape), q[0]

    for m in (0.05, 0.1, 0.2):
        timed(f"rebox {m}", lambda m=m: rebox(m))
    timed("rebox 0.1 x2", lambda: rebox(0.1, rebox(0.1)[0]))
    timed("rebox 0.05 x2", lambda: rebox(0.05, rebox(0.05)[0]))

    def core(level, margin=0.05):  # the box of the winner's most confident part (the decoder's p > level)
        p_full = full_size(prob[None], shape)[0]
        part = (p_full > level) & first
        return rebox(margin, part if part.sum() >= 16 else first)

    timed("core 0.9", lambda: core(0.9))
    timed("core 0.97", lambda: core(0.97))

    def masked():
        p, q = decode(service, embedding, box[None], full_size(prob[None], shape))
        return drawn(box, p[0], shape), q[0]

    timed("mask", masked)
    timed("rebox 0.1 + mask", lambda: rebox(0.1, dense=True))
    margin = z["margin"].astype(np.float32)
    inside_box = box_region(box, shape)

    def pointed(negative=True):
        where = first if first.any() else inside_box
        pos = np.unravel_index(np.argmax(np.where(where, margin, -np.inf)), shape)
        neg = np.unravel_index(np.argmin(np.where(inside_box & ~first, margin, np.inf)), shape)
        xy = np.array([[[pos[1], pos[0]], [neg[1], neg[0]]]], np.float32)[:, :2 if negative else 1]
        p, q = decode(service, embedding, box[None], None, (xy, np.array([[1, 0]])[:, :2 if negative else 1]))
        return drawn(box, p[0], shape), q[0]

    timed("points +1 -1", pointed)
    timed("points +1", lambda: pointed(False))
    return {name: (dice(mask, truth), seconds, float(q), selection_score(embedding, mask, profile))
            for name, (mask, seconds, q) in out.items()}


GROWS = {  # name -> keyword arguments of core/select_objects.grow (session 19 "grow"), margin map passed
    "built (defaults)": dict(),
    "grow 0.3 r1": dict(margins=(0.3,), sides=(), rounds=1),
    "grow 0.3 r2": dict(margins=(0.3,), sides=(), rounds=2),
    "grow 0.5 r2": dict(margins=(0.5,), sides=(), rounds=2),
    "grow 0.3+0.5 r2": dict(margins=(0.3, 0.5), sides=(), rounds=2),
    "grow 0.2 r2": dict(margins=(0.2,), sides=(), rounds=2),
    "refit again r1": dict(margins=(0.05, 0.2), sides=(), rounds=1),
    "sides 0.5 r1": dict(margins=(), sides=(0.5,), rounds=1),
    "sides 0.5 r2": dict(margins=(), sides=(0.5,), rounds=2),
    "grow 0.3 + sides 0.5 r2": dict(margins=(0.3,), sides=(0.5,), rounds=2),
    "core 0.97 r1": dict(margins=(), sides=(), rounds=1, core=0.97),
    "grow 0.3 + core r2": dict(margins=(0.3,), sides=(), rounds=2, core=0.97),
    "grow 0.3+0.5 + core r2": dict(margins=(0.3, 0.5), sides=(), rounds=2, core=0.97),
    "grow 0.5 r1": dict(margins=(0.5,), sides=(), rounds=1),
    "grow 0.3+0.5 r1": dict(margins=(0.3, 0.5), sides=(), rounds=1),
    "grow 0.3+0.5 r3": dict(margins=(0.3, 0.5), sides=(), rounds=3),
    "grow 0.4 r2": dict(margins=(0.4,), sides=(), rounds=2),
    "grow 0.3+0.6 r2": dict(margins=(0.3, 0.6), sides=(), rounds=2),
    "grow 0.5 + core r2": dict(margins=(0.5,), sides=(), rounds=2, core=0.97),
    "grow 0.2+0.5 r2": dict(margins=(0.2, 0.5), sides=(), rounds=2),
}


def grow_levers(service, z, grows=None) -> dict:
    """name -> (Dice, CPU-s, score) of the growing round after main's refit, each configuration of GROWS run
    from the same refit result through core/select_objects.grow with the service's decoder ("today": refit)."""
    from napari_fewshot.core.select_objects import grow

    e = refit_dumped(service, z)
    out = {"today": (dice(e.base, z["truth"]), e.refit_s, e.score)}
    for name, kwargs in (grows or GROWS).items():
        start = time.process_time()
        kwargs = {"margins": (), "sides": (), "core": 0.0, "top_sides": 0, **kwargs} if kwargs else kwargs
        b, p, s = grow(e.base, e.box, e.prob, e.score, e.low, e.embedding, e.profile, z["margin"].astype(np.float32),
                       **kwargs)
        seconds = time.process_time() - start
        out[name] = (dice(decoded_masks(b, full_size(p, e.shape))[0], z["truth"]), seconds, s)
    return out


def box_bank(service, z) -> dict:
    """One round's boxes from main's refit result, each decoded alone: name -> (Dice, selection_score), plus
    "today" and, per side box, "strip NAME": the mean class margin in the part it adds (for offline subsets)."""
    from napari_fewshot.core.select_objects import grown_boxes, selection_score

    e = refit_dumped(service, z)
    shape, embedding, profile, low, prob, score, base = e.shape, e.embedding, e.profile, e.low, e.prob, e.score, e.base
    shrink = np.array([embedding.resized[1] / shape[1], embedding.resized[0] / shape[0]] * 2, np.float32)
    out = {"today": (dice(base, z["truth"]), score)}
    if not base.any():
        return out
    names, boxes = ["m0.3", "m0.5", "r0.05", "r0.2"], list(grown_boxes(base, (0.3, 0.5, 0.05, 0.2)))
    for s in (0.3, 0.5):
        names += [f"{side}{s}" for side in ("L", "T", "R", "B")]
        boxes += list(grown_boxes(base, (), (s,)))
    p_full = full_size(prob, shape)[0]
    for level in (0.9, 0.97):
        part = base & (p_full > level)
        if part.sum() >= 16:
            names.append(f"core{level}")
            boxes.append(box_of(part, 0.05))
    boxes = np.asarray(boxes, np.float32)
    decoded = low(boxes)
    margin = z["margin"].astype(np.float32)
    inner = box_region(box_of(base, 0.0), shape)
    for name, b, p, m in zip(names, boxes, decoded, decoded_masks(boxes * shrink, decoded)):
        value = selection_score(embedding, m, profile) if m.any() else float("-inf")
        out[name] = (dice(decoded_masks(b[None], full_size(p[None], shape))[0], z["truth"]), value)
        if name[0] in "LTRB":
            strip = box_region(b, shape) & ~inner
            out[f"strip {name}"] = (float(margin[strip].mean()) if strip.any() else -99.0, 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grow", action="store_true", help="the growing rounds after refit (session 19)")
    parser.add_argument("--only", nargs="*", help="with --grow: only these GROWS configurations")
    parser.add_argument("--bank", action="store_true", help="one round's boxes each scored (session 19)")
    args = parser.parse_args()
    service = LiteMedSAMService()
    report = {}
    only = {name: GROWS[name] for name in args.only} if args.only else None
    for folder in args.dirs:
        rows = []
        for path in sorted(folder.glob("ep*.npz")):
            with np.load(path) as z:
                if int(z["best"]) < 0:
                    continue
                row = {"episode": path.stem, "hit": bool(z["hit"]), "final": float(z["dice"]),
                       "selected": dice(z["selected"], z["truth"]),
                       **(box_bank(service, z) if args.bank else grow_levers(service, z, only) if args.grow
                          else levers(service, z))}
                rows.append(row)
        report[str(folder)] = rows
        if args.bank:
            continue
        names = [k for k in rows[0] if isinstance(rows[0][k], tuple)]
        print(f"\n{folder}: {len(rows)} episodes with a winner; final (CLI) {np.mean([r['final'] for r in rows]):.4f}, "
              f"selection's output {np.mean([r['selected'] for r in rows]):.4f}")
        hits = [r for r in rows if r["hit"]]
        for name in names:
            d = np.array([r[name][0] for r in rows])
            base = np.array([r["today"][0] for r in rows])
            dh = np.mean([r[name][0] for r in hits])
            print(f"  {name:18s} mean {d.mean():.4f} (hits {dh:.4f})  vs today {d.mean() - base.mean():+.4f}  "
                  f"better/worse >0.01: {(d > base + 0.01).sum()}/{(d < base - 0.01).sum()}  "
                  f"CPU-s {np.mean([r[name][1] for r in rows]):.3f}")
        for name in [] if args.grow else [n for n in names if n != "today"]:  # only where it scores higher
            for key, label in ((3, "score"), (2, "IoU est.")):
                d = np.array([r[name][0] if r[name][key] > r["today"][key] else r["today"][0] for r in rows])
                used = sum(r[name][key] > r["today"][key] for r in rows)
                base = np.array([r["today"][0] for r in rows])
                print(f"  {name:18s} if {label:8s} higher: mean {d.mean():.4f} vs today {d.mean() - base.mean():+.4f}"
                      f" (used {used}) better/worse: {(d > base + 0.01).sum()}/{(d < base - 0.01).sum()}")
        report[str(folder)] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
