"""Which painted slice explains each predicted slice of the CT sample (core/provenance.py).

    python benchmarks/explain_share.py [--painted 79 90 100] [--classes 1] [--json OUT]

Paints the reference of `--classes` (1 liver, 2 spleen, 3 right kidney, 4 left kidney) on the `--painted`
slices of the CT sample (dense mode, the defaults otherwise), segments every slice, and for each predicted
slice reports the share of its predicted pixels whose best-matching local prototype comes from the painted
slice nearest to it, then the mean over slices by distance to the nearest painted slice. Also times one
pixel's explanation and one slice's provenance map (features cached, as in napari).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--painted", type=int, nargs="+", default=[79, 90, 100])
    parser.add_argument("--classes", type=int, nargs="+", default=[1])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import numpy as np

    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
    from napari_fewshot.core.provenance import explained_share
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    reference = read_labels(CT_LABELS, like=volume)
    support = np.zeros(reference.shape, np.uint8)
    for z in args.painted:
        for c in args.classes:
            support[z][reference[z] == c] = c
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(volume.data)
    run(segmenter.compute_features())
    started = time.perf_counter()
    result = run(segmenter.segment(support))
    segment_s = time.perf_counter() - started
    predicted = [z for z in result.segmented_slices if z not in result.support_slices and result.labels[z].any()]

    started = time.perf_counter()
    maps = run(result.explainer.volume_maps(result.labels, predicted))
    maps_s = time.perf_counter() - started
    pixels = [(z, *np.argwhere(result.labels[z] > 0)[0]) for z in predicted]
    started = time.perf_counter()
    for z, y, x in pixels:
        result.explain(z, int(y), int(x))
    pixel_ms = 1000 * (time.perf_counter() - started) / max(1, len(pixels))

    rows = []
    for z in predicted:
        support_map = maps[z][0]
        nearest = min(args.painted, key=lambda s: (abs(s - z), s))
        rows.append({"slice": z, "nearest_painted": nearest, "distance": abs(nearest - z),
                     "predicted_pixels": int((support_map >= 0).sum()),
                     "share_nearest": explained_share(support_map, args.painted, z)})
    by_distance: dict[int, list[float]] = {}
    for row in rows:
        if row["share_nearest"] is not None:
            by_distance.setdefault(row["distance"], []).append(row["share_nearest"])
    shares = [r["share_nearest"] for r in rows if r["share_nearest"] is not None]
    pixels_total = sum(r["predicted_pixels"] for r in rows)
    weighted = sum(r["share_nearest"] * r["predicted_pixels"] for r in rows if r["share_nearest"] is not None)
    summary = {"painted": args.painted, "classes": args.classes, "predicted_slices": len(rows),
               "mean_share_nearest": float(np.mean(shares)), "median_share_nearest": float(np.median(shares)),
               "pixel_weighted_share_nearest": weighted / max(1, pixels_total),
               "by_distance": {d: float(np.mean(v)) for d, v in sorted(by_distance.items())},
               "segment_all_s": segment_s, "provenance_maps_s": maps_s,
               "provenance_map_per_slice_ms": 1000 * maps_s / max(1, len(predicted)), "explain_pixel_ms": pixel_ms}
    print("| slice | nearest painted | predicted px | share by nearest |")
    print("|---|---|---|---|")
    for row in rows:
        share = "-" if row["share_nearest"] is None else f"{row['share_nearest']:.2f}"
        print(f"| {row['slice']} | {row['nearest_painted']} | {row['predicted_pixels']} | {share} |")
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "slices": rows}, indent=1))


if __name__ == "__main__":
    main()
