"""Figures of BENCHMARKS.md: Dice against support slices / fine-tune steps, and overlays per dataset.

    python benchmarks/plots.py [--results benchmarks/results] [--data ../shared/data] [--out docs]

Needs matplotlib (`pip install -e .[benchmarks]`); the package itself never imports it.
- docs/dice_vs_support_slices.png: CHAOS-T2 within, from results/chaos_within{1,3,5}.json, and BUSI
  from results/busi_{1,5,10,20}shot.json.
- docs/dice_vs_fine_tune_steps.png: every FAMILY.json with a FAMILY_ftN.json beside it
  (e.g. chaos_within3 and chaos_within3_ft20, busi_20shot and busi_20shot_ft20).
- docs/dice_per_round.png: the interactive protocol, mean Dice against corrections per pick, from
  results/{chaos,busi}_interactive_{suggested,uniform,worst}.json (benchmarks/interactive.py).
- docs/overlays.png: one row per dataset (CHAOS-T2 MR, TotalSegmentator CT, BUSI): a support slice
  with its paint, then an unpainted slice with the prediction and with the reference. Segmented here
  with the default settings (about a minute on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAOS_NAMES = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}
CT_LABELS = {5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left"}
COLOURS = {1: (1.0, 0.3, 0.3), 2: (0.3, 0.9, 0.3), 3: (0.3, 0.5, 1.0), 4: (1.0, 0.85, 0.2)}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def dice_vs_support_slices(results: Path, out: Path) -> Path | None:
    """Two panels: CHAOS-T2 within (painted slices per organ 1/3/5) and BUSI (shots 1/5/10/20)."""
    chaos = {k: r for k in (1, 3, 5) if (r := _load(results / f"chaos_within{k}.json")) is not None}
    busi = {k: r for k in (1, 5, 10, 20) if (r := _load(results / f"busi_{k}shot.json")) is not None}
    if len(chaos) < 2 and len(busi) < 2:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    if chaos:
        ks = sorted(chaos)
        for name in next(iter(chaos.values()))["dice_per_class"]:
            left.plot(ks, [chaos[k]["dice_per_class"][name] for k in ks], "o-", lw=1, alpha=0.7, label=name)
        left.plot(ks, [chaos[k]["dice_mean"] for k in ks], "ko-", lw=2.5, label="mean")
        left.plot([3], [0.88], "r*", ms=10, label="issue target (3 slices)")
        left.set(xlabel="painted slices per organ", ylabel="Dice", xticks=ks, ylim=(0.4, 1.0),
                 title="CHAOS-T2 MR, within-scan")
        left.legend(fontsize=7, loc="lower right")
    if busi:
        ks = sorted(busi)
        right.plot(ks, [busi[k]["dice_mean"] for k in ks], "ko-", lw=2.5, label="lesion Dice")
        right.plot([5, 20], [0.60, 0.70], "r*", ms=10, label="issue targets (20: with fine-tuning)")
        right.set(xlabel="painted images (shots)", ylabel="Dice", xticks=ks, ylim=(0.0, 1.0),
                  title="BUSI breast ultrasound (seed 0)")
        right.legend(fontsize=7, loc="lower right")
    fig.suptitle("ImageNet EfficientNet-Lite0 features, no training on the data", fontsize=9)
    return _save(fig, out / "dice_vs_support_slices.png")


def dice_vs_fine_tune_steps(results: Path, out: Path) -> Path | None:
    families: dict[str, dict[int, float]] = {}
    for path in sorted(results.glob("*_ft*.json")):
        match = re.fullmatch(r"(.+)_ft(\d+)", path.stem)
        base = _load(results / f"{match.group(1)}.json") if match else None
        if base is None:
            continue
        family = families.setdefault(match.group(1), {0: base["dice_mean"]})
        family[int(match.group(2))] = _load(path)["dice_mean"]
    if not families:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, curve in families.items():
        steps = sorted(curve)
        ax.plot(steps, [curve[s] for s in steps], "o-", label=name)
    ax.set(xlabel="fine-tune steps on the support", ylabel="mean Dice", ylim=(0, 1),
           title="Test-time fine-tuning (CPU)")
    ax.legend(fontsize=8)
    return _save(fig, out / "dice_vs_fine_tune_steps.png")


PICK_STYLES = {"suggested": ("tab:blue", "o"), "uniform": ("tab:grey", "s"), "worst": ("tab:red", "^")}


def _seed_mean(results: Path, name: str) -> dict | None:
    """NAME.json's Dice curves, averaged with NAME_seedS.json's where those exist (BUSI's other draws)."""
    reports = [r for path in [results / f"{name}.json", *sorted(results.glob(f"{name}_seed*.json"))]
               if (r := _load(path)) is not None]
    if not reports:
        return None
    return {"seeds": len(reports), **{key: list(np.mean([r[key] for r in reports], axis=0))
                                      for key in ("dice_per_round", "dice_per_round_uncorrected")}}


def dice_per_round(results: Path, out: Path) -> Path | None:
    """Mean Dice against corrections, one line per pick (suggested / uniform / worst), CHAOS-T2 and BUSI panels,
    from results/{chaos,busi}_interactive_{pick}.json (BUSI: averaged with _seedS.json draws when present).
    Solid: the whole signed mask (corrected slices or images included); dashed: only what is not corrected yet
    (the model's own lift). NoC@0.90 in the legend is read off the plotted (mean) curve."""
    panels = {data: {pick: _seed_mean(results, f"{data}_interactive_{pick}") for pick in PICK_STYLES}
              for data in ("chaos", "busi")}
    panels = {data: {pick: r for pick, r in picks.items() if r is not None} for data, picks in panels.items()}
    if not any(panels.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    seeds = max((r["seeds"] for r in panels["busi"].values()), default=1)
    titles = {"chaos": ("CHAOS-T2 MR (10 scans x 4 organs), 1 slice painted per organ", "corrected slices per organ"),
              "busi": (f"BUSI: 25 images, 5 painted{f' (mean of {seeds} draws)' if seeds > 1 else ''}",
                       "corrected images (of the other 20)")}
    for ax, (data, reports) in zip(axes, panels.items()):
        for pick, report in reports.items():
            colour, marker = PICK_STYLES[pick]
            curve, lift = report["dice_per_round"], report["dice_per_round_uncorrected"]
            rounds = range(len(curve))
            first = next((k for k, v in enumerate(curve) if v >= 0.90), None)
            reached = first if first is not None else f">{len(curve) - 1}"
            ax.plot(rounds, curve, marker=marker, color=colour, lw=2, label=f"{pick} (NoC@0.90 {reached})")
            ax.plot(rounds, lift, ls="--", marker=marker, ms=3, color=colour, lw=1, alpha=0.8)
        ax.axhline(0.90, color="k", lw=0.8, ls=":")
        if data == "chaos":
            ax.axvline(5, color="r", lw=0.8, ls=":", label="goal: NoC@0.90 <= 5")
        else:
            ax.plot([5], [0.60], "r*", ms=10, label="goal: 0.60 after 5")
        title, xlabel = titles[data]
        ax.set(xlabel=xlabel, ylabel="mean Dice", ylim=(0.3 if data == "busi" else 0.6, 1.0))
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Interactive correction: solid = whole signed mask, dashed = not yet corrected", fontsize=9)
    return _save(fig, out / "dice_per_round.png")


def _overlay(ax, image: np.ndarray, labels: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray")
    rgba = np.zeros(labels.shape + (4,))
    for value in np.unique(labels[labels > 0]):
        rgba[labels == value] = (*COLOURS[(int(value) - 1) % len(COLOURS) + 1], 0.45)
    ax.imshow(rgba)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _volume_row(image, reference, class_map, support_per_class=3):
    """(support slice, its paint, query slice, prediction, reference) of a multi-organ within-scan run:
    `support_per_class` slices spread over each organ are painted with every organ on them."""
    from napari_fewshot.core import FewShotSegmenter, run
    from napari_fewshot.evaluation.datasets import slice_range, spread_slices

    remapped = np.zeros(reference.shape, np.uint8)
    for new, old in enumerate(class_map, start=1):
        remapped[reference == old] = new
    # A clinician painting a slice paints every organ on it (dense mode: unpainted pixels are background).
    support = np.zeros_like(remapped)
    for c in range(1, len(class_map) + 1):
        for z in spread_slices(*slice_range(remapped, c), support_per_class):
            support[z] = remapped[z]
    painted = np.flatnonzero(support.any(axis=(1, 2)))
    segmenter = FewShotSegmenter()
    segmenter.set_image(image)
    labels = run(segmenter.segment(support)).labels
    # Not the easy neighbour of a painted slice: among unpainted slices with at least half the largest
    # organ area, the one farthest from any painted slice.
    organ = remapped.reshape(len(remapped), -1).astype(bool).sum(1)
    distance = np.min(abs(np.arange(len(organ))[:, None] - painted[None]), axis=1)
    candidates = np.flatnonzero((organ >= organ.max() / 2) & (distance > 0))
    query = int(candidates[np.argmax(distance[candidates])])
    z = int(painted[np.argmin(abs(painted - query))])
    return image[z], support[z], image[query], labels[query], remapped[query], z, query


def overlays(data: Path, out: Path) -> Path:
    from napari_fewshot.core import FewShotSegmenter, dice, run
    from napari_fewshot.evaluation.datasets import load_busi
    from napari_fewshot.io import read_labels, read_volume

    rows = []
    chaos = read_volume(data / "chaos_t2" / "image_2.nii.gz")
    rows.append(("CHAOS-T2 MR case 2", *_volume_row(chaos.data, read_labels(data / "chaos_t2" / "label_2.nii.gz",
                                                                              like=chaos), list(CHAOS_NAMES))))
    ct = read_volume(data / "ct_totalseg" / "example_ct.nii.gz")
    ct_ref = read_labels(data / "ct_totalseg" / "example_seg_fast_force_split.nii.gz", like=ct)
    rows.append(("CT (TotalSegmentator example)", *_volume_row(np.clip(ct.data, -200, 300), ct_ref, list(CT_LABELS))))
    names, images, masks = load_busi(data / "busi")
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.choice(len(images), 6, replace=False)]
    supports, query = picks[:5], picks[5]
    support = [np.zeros(m.shape, np.uint8) for m in masks]
    for i in supports:
        support[i] = masks[i].astype(np.uint8)
    segmenter = FewShotSegmenter()
    segmenter.set_image(images)
    labels = run(segmenter.segment(support, indices=[query])).labels[query]
    rows.append((f"BUSI 5-shot: {names[query].split('/')[-1]}, Dice {dice(labels == 1, masks[query]):.2f}",
                 images[supports[0]], support[supports[0]], images[query], labels, masks[query].astype(np.uint8),
                 0, 0))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows)))
    for r, (title, s_img, s_lab, q_img, pred, ref, z, q) in enumerate(rows):
        _overlay(axes[r, 0], s_img, s_lab, f"{title}\nsupport (painted){f' slice {z}' if z or q else ''}")
        _overlay(axes[r, 1], q_img, pred, f"prediction{f' slice {q}' if z or q else ''}")
        _overlay(axes[r, 2], q_img, ref, "reference")
    return _save(fig, out / "overlays.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--no-overlays", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dice_vs_support_slices(Path(args.results), out)
    dice_vs_fine_tune_steps(Path(args.results), out)
    dice_per_round(Path(args.results), out)
    if not args.no_overlays:
        overlays(Path(args.data), out)


if __name__ == "__main__":
    main()
