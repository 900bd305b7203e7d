"""What LiteMedSAM refinement does on the CHAOS `across` protocol (issue 21 item 4), variant by variant.

Per query case and class, the protocol's coarse segmentation is computed once (the raw prototype labels
before the clean-up, and their scores); then, from the same raw labels, in one process:

- coarse:   the shipped coarse path (bank priors with the plane boost, plane filter, largest 3D component);
- refined:  the shipped refined path (raw labels refined, then the priors' plane filter, largest component);
- boosted:  the raw labels relabelled with the priors' plane boost first, then as `refined`;
- cleaned:  the coarse path's cleaned labels refined, then as `refined` (only what survives is redrawn).

Dice, precision and recall inside the query organ's slice range, as the protocol scores.

    OMP_NUM_THREADS=1 python benchmarks/across_refine.py ../shared/data/chaos_t2 [--cases 2,3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

NAMES = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}


def scores(predicted, truth):
    tp = float((predicted & truth).sum())
    p, t = float(predicted.sum()), float(truth.sum())
    shown = truth.any(axis=(1, 2))
    hit = float((predicted.any(axis=(1, 2)) & shown).sum()) / max(float(shown.sum()), 1)
    return {"dice": 2 * tp / max(p + t, 1), "precision": tp / max(p, 1), "recall": tp / max(t, 1),
            "slices_hit": hit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--cases", default="", help="query case ids (default all but the support)")
    parser.add_argument("--support-case", default="1")
    parser.add_argument("--variants", default="coarse,refined,boosted,cleaned")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
    from napari_fewshot.core import segmenter as segmenter_module
    from napari_fewshot.core.bank_priors import apply_priors, boosted_labels
    from napari_fewshot.core.config import RefineParams
    from napari_fewshot.core.postprocess import postprocess_volume
    from napari_fewshot.evaluation.datasets import find_cases, load_case, present_classes, slice_range
    from napari_fewshot.evaluation.volumes import _chunk_prototypes, _support_priors, chunk_bounds

    params = SegmentationParams(refine=RefineParams(enabled=False))
    cases = {c: (i, l) for c, i, l in find_cases(args.folder)}
    s_image, s_labels = load_case(*cases.pop(args.support_case))
    wanted = [c for c in args.cases.split(",") if c] or list(cases)
    variants = [v for v in args.variants.split(",") if v]
    source = FewShotSegmenter(params)
    source.set_image(s_image)
    names = present_classes(s_labels, NAMES)
    middles = {c: [(lo + hi) // 2 for lo, hi in chunk_bounds(*slice_range(s_labels, c))] for c in names}
    chunk_prototypes = _chunk_prototypes(source, s_labels, middles)
    priors = {c: _support_priors(source, s_labels, c, ms) for c, ms in middles.items()}
    segmenter = FewShotSegmenter(params, encoder=source.encoder)
    captured = {}
    real_finish = segmenter_module.finish_result

    def capture(seg, result, coarse, whole, support_set=None, priors=None):
        captured["raw"] = np.array(result.labels, copy=True)
        captured["coarse"] = dict(coarse)
        real_finish(seg, result, coarse, whole, support_set, priors)
        captured["cleaned"] = np.array(result.labels, copy=True)

    segmenter_module.finish_result = capture
    rows = []
    for case in wanted:
        image, labels = load_case(*cases[case])
        segmenter.set_image(image)
        stack = segmenter.cache.stack
        for class_id, name in names.items():
            span = slice_range(labels, class_id)
            if span is None:
                continue
            plan = [(p, range(lo, hi + 1)) for (lo, hi), p in zip(chunk_bounds(*span), chunk_prototypes[class_id])]
            result = run(segmenter.segment_with(plan, priors=priors[class_id]))
            raw, coarse, indices = captured["raw"], captured["coarse"], list(result.segmented_slices)
            inside, truth = slice(span[0], span[1] + 1), labels == class_id

            def finish_refined(start):
                started = time.perf_counter()
                planes = [p.copy() for p in start]
                run(segmenter.refiner.refine(stack, planes, indices, [1]))
                out = apply_priors(np.stack(planes), [1], priors[class_id], stack, indices, None)
                return postprocess_volume(out, [1]), time.perf_counter() - started

            outputs = {}
            for variant in variants:
                if variant == "coarse":
                    outputs[variant] = (captured["cleaned"], 0.0)
                elif variant == "refined":
                    outputs[variant] = finish_refined(raw)
                elif variant == "boosted":
                    outputs[variant] = finish_refined(boosted_labels(raw, [1], priors[class_id], stack, coarse))
                elif variant == "cleaned":
                    outputs[variant] = finish_refined(captured["cleaned"])
            row = {"case": case, "class": name}
            for variant, (out, seconds) in outputs.items():
                row[variant] = scores(out[inside] == 1, truth[inside]) | {"seconds": round(seconds, 1)}
            rows.append(row)
            print(case, name, "  ".join(f"{v} {row[v]['dice']:.3f} (p {row[v]['precision']:.2f} r {row[v]['recall']:.2f} "
                                        f"z {row[v]['slices_hit']:.2f})"
                                        for v in outputs), flush=True)
    summary = {v: float(np.mean([r[v]["dice"] for r in rows])) for v in variants}
    per_class = {v: {n: float(np.mean([r[v]["dice"] for r in rows if r["class"] == n])) for n in names.values()}
                 for v in variants}
    print("mean", json.dumps(summary), json.dumps(per_class))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "mean": summary, "per_class": per_class}, f, indent=1)


if __name__ == "__main__":
    main()
