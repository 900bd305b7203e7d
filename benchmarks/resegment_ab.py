"""Re-segmenting after a correction, this checkout's matching (B) against another revision's (A), interleaved
in one process so that both share the machine's load, correction after correction.

    python benchmarks/resegment_ab.py [--baseline GIT_REV] [--scan ct|N] [--float32] [--cache-dir DIR]

--scan ct: the CT sample (112 x 101 x 122; liver and spleen painted on 2 slices from its reference);
--scan N: the 20-slice 512 x 512 DICOM CT of ../shared/data tiled to N slices (liver painted on 3 slices).
Two segmenters of this checkout on the same cached features; A's match cache is the baseline revision's
core/matching.py (loaded from git; a revision from before batched matching is asked one slice at a time, as
its segmenter asked it), A matches every cell (no core/bounded.py) and ranks with the baseline's
core/uncertainty.py (Check next) and keeps 3D components with the baseline's postprocess.keep_connected, so the
difference between A and B is the matching, the ranking and that choice; the rest (pooling, the rest of the clean-up)
is this checkout's in both. The labels are compared after every correction. Both time the coarse result
(``segment(..., refine_later=True)``, as the window does; LiteMedSAM's refinement streams in after it). Segment all, then 4 corrections (the reference of one
more organ slice into the support, the whole volume segmented again by A and by B, alternating which goes
first); prints wall and CPU seconds (both threads) of each, and whether the labels are identical.
--float32 makes both versions' products float32, as on CPUs without AVX512-BF16/AMX (most laptops).
--refine: each segmentation is also refined to the end (``refine_result(coarse, first=[corrected slice])``, as
the widget streams it), timed separately: LiteMedSAM's re-decode of the slices whose coarse labels changed
(each segmenter has its own LiteMedSAM service, embeddings computed by Segment all, not shared between A and
B). Prints the slices decoded and the embeddings computed per correction; --a-decoder-graph 1|2: A's LiteMedSAM decoder is the converted graph 1 (a copy of the image per box, before session 17) or 2 (before session 18),
B's this checkout's (with --a-as-shipped A and B then differ only there). --check-fresh also refines B's coarse
result with a fresh refiner (no reuse at all, every box decoded, same embeddings; not timed) and says whether the
labels are identical. After each correction: mean Dice over the classes of A's and B's refined labels against the
reference, of B's against A's, and with --check-fresh of B's against the fresh refinement and whether A's (the
baseline's core/refine.py, exact reuse) are bit-identical to the fresh one (this checkout's code) and to this
checkout's code refining A's own coarse result from scratch (exact reuse); whether A's and B's coarse labels are
identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def baseline_matching(rev: str, module: str = "matching"):
    """The module core/<module>.py of git revision `rev`."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:napari_fewshot/core/{module}.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="fewshot-ab-")) / f"baseline_{module}.py"
    path.write_text(source)
    name = f"napari_fewshot.core._baseline_{module}"  # its relative imports resolve in this checkout's core
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "napari_fewshot.core"
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def dice_mean(a, b, classes) -> float:
    """Mean over `classes` of the Dice of label volumes a and b (1 where both lack the class)."""
    import numpy as np

    out = []
    for c in classes:
        x, y = np.asarray(a) == c, np.asarray(b) == c
        total = int(x.sum() + y.sum())
        out.append(1.0 if total == 0 else 2 * int((x & y).sum()) / total)
    return round(float(np.mean(out)), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--scan", default="ct")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--cache-dir", default=None, help="persistent feature cache (default: a new folder)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--refine", action="store_true", help="time LiteMedSAM's re-decode too (refine_result)")
    parser.add_argument("--check-fresh", action="store_true", help="with --refine: compare to a fresh refiner")
    parser.add_argument("--corrections", type=int, default=4)
    parser.add_argument("--a-decoder-graph", type=int, default=None,
                        help="A's converted LiteMedSAM decoder graph (core/sam_decoder.py GRAPH; 1: before session 17)")
    parser.add_argument("--a-as-shipped", action="store_true",
                        help="A as the baseline ships: its bounded matching and its own Check next (only its "
                             "keep_connected and core/refine.py are swapped in); for a baseline with core/bounded.py")
    parser.add_argument("--ahead", action="store_true",
                        help="with --refine: B embeds ahead of need (core/ahead.py) after each refinement, in idle "
                             "time: timed apart, not in the correction's figures")
    parser.add_argument("--b-refine", default="", help="RefineParams fields for B, e.g. 'reuse_changed=0' (exact)")
    args = parser.parse_args()
    import numpy as np

    import napari_fewshot.core.matching as matching
    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
    from resegment_gui import scan

    old = baseline_matching(args.baseline)
    if args.float32:
        from resegment_gui import force_float32

        for module in (matching, old):
            force_float32(module)
    volume, truth, painted, organ = scan("ct" if args.scan == "ct" else "tiled", 0 if args.scan == "ct" else int(args.scan))
    support = np.zeros(volume.shape, np.uint8)
    support[painted] = truth[painted]
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="fewshot-ab-cache-")
    segs = {}
    for name in (f"A {args.baseline}", "B this checkout"):
        seg = FewShotSegmenter(SegmentationParams(cache_dir=cache_dir, device="cpu"))
        seg.set_image(volume)
        run(seg.compute_features())
        for i in range(len(volume)):
            seg.cache.get(i)
        seg.params.cache_dir = None  # from here on as in napari: features in memory only
        seg.cache.set_persistence(None, None)
        seg.cache._on_disk.clear()
        if name.startswith("A"):
            cache = old.MatchCache(seg._matches.budget, seg._matches.query_budget)
            if not hasattr(old.MatchCache, "group"):  # a revision that made every group at every segmentation
                cache.group = lambda key, make: make()
            if not hasattr(old.MatchCache, "class_similarities"):  # a revision before batching: slice by slice
                cache.class_similarities = lambda keys, loads, groups, cache=cache: (
                    cache.class_similarity(k, load, groups) for k, load in zip(keys, loads))
            seg._matches = cache
            seg.bounded = args.a_as_shipped  # else the baseline matches every cell (core/bounded.py is this checkout's)
        segs[name] = seg
    counts = {"decoded": 0, "embedded": 0, "prompts": 0}
    if args.refine:
        import dataclasses

        import napari_fewshot.core.refine as refine_module
        from napari_fewshot.core import RefineParams

        real_apply = refine_module.apply_decoded

        def counting_apply(*a, **k):
            counts["decoded"] += 1
            return real_apply(*a, **k)

        refine_module.apply_decoded = counting_apply
        old_refine = baseline_matching(args.baseline, "refine")  # A refines with the baseline's core/refine.py
        old_apply = old_refine.apply_decoded

        def counting_old_apply(*a, **k):
            counts["decoded"] += 1
            return old_apply(*a, **k)

        old_refine.apply_decoded = counting_old_apply
        for name, seg in segs.items():
            extra = {} if name.startswith("A") or not args.b_refine else {
                k: float(v) for k, v in (f.split("=") for f in args.b_refine.split(";"))}
            seg.params = dataclasses.replace(seg.params, refine=RefineParams(enabled=True, **extra))
            real_compute = seg.sam._compute

            def counting_compute(*a, real=real_compute, **k):
                counts["embedded"] += 1
                return real(*a, **k)

            seg.sam._compute = counting_compute
            real_decode = seg.sam.decode

            def counting_decode(requests, *a, real=real_decode, **k):
                counts["prompts"] += sum(len(boxes) for _, boxes, _ in requests)
                return real(requests, *a, **k)

            seg.sam.decode = counting_decode
            if name.startswith("A"):
                seg._refiner = old_refine.Refiner(seg.params, seg.sam)
            if name.startswith("A") and args.a_decoder_graph is not None:
                from napari_fewshot.core import sam_decoder

                os.environ[sam_decoder.SPLIT_ENV] = {1: "0", 2: "2"}.get(args.a_decoder_graph, "1")
                print(name, getattr(seg.sam.decoder_runtime(), "graph", None), seg.sam.runtime_status, flush=True)
                os.environ.pop(sam_decoder.SPLIT_ENV)

    import napari_fewshot.core.postprocess as postprocess
    import napari_fewshot.core.uncertainty as uncertainty

    ours, theirs = uncertainty.rank_slices, baseline_matching(args.baseline, "uncertainty").rank_slices
    our_keep, their_keep = postprocess.keep_connected, baseline_matching(args.baseline, "postprocess").keep_connected

    def timed(job, name=""):
        # A ranks with the baseline's Check next (its coarse scores are every cell's; it takes no `settle`) and
        # chooses 3D components with the baseline's keep_connected
        if name.startswith("A"):
            if not args.a_as_shipped:
                uncertainty.rank_slices = lambda *a, settle=None, **k: theirs(*a, **k)
            postprocess.keep_connected = their_keep
        start, cpu = time.perf_counter(), time.process_time()
        try:
            out = run(job)
        finally:
            uncertainty.rank_slices, postprocess.keep_connected = ours, our_keep
        return round(time.perf_counter() - start, 2), round(time.process_time() - cpu, 2), out

    def refined(name, coarse, first):
        """(wall, cpu, result, slices decoded, embeddings computed, prompts decoded) of refining `coarse` to the end."""
        before = dict(counts)
        wall, cpu, final = timed(segs[name].refine_result(coarse, first=first), name)
        return (wall, cpu, final) + tuple(counts[k] - before[k] for k in ("decoded", "embedded", "prompts"))

    def ahead(name, final):
        """(wall, cpu, embeddings) of B's embedding ahead after `final` (idle time in the window)."""
        from napari_fewshot.core.ahead import embed_ahead

        before = counts["embedded"]
        wall, cpu, _ = timed(embed_ahead(segs[name], final), name)
        return wall, cpu, counts["embedded"] - before

    rows = {}
    for name, seg in segs.items():
        wall, cpu, coarse = timed(seg.segment(support, refine_later=True), name)
        rows[name] = {"segment_all": (wall, cpu), "wall": [], "cpu": []}
        if args.refine:
            rows[name].update(refine_wall=[], refine_cpu=[], total_wall=[], total_cpu=[], decoded=[], embedded=[],
                              prompts=[])
            rwall, rcpu, final, decoded, embedded, prompts = refined(name, coarse, [])
            rows[name]["segment_all_refine"] = (rwall, rcpu, decoded, embedded, prompts)
            if args.ahead and name.startswith("B"):
                rows[name]["ahead"] = [ahead(name, final)]
    fresh_identical = []
    candidates = [z for z in organ if z not in painted]
    identical, ranking, quality = [], [], []
    for n, z in enumerate(candidates[:: max(1, len(candidates) // args.corrections)][:args.corrections]):
        support[z] = truth[z]
        labels, ranks, coarses = {}, {}, {}
        for name in (list(segs) if n % 2 == 0 else list(segs)[::-1]):
            wall, cpu, result = timed(segs[name].segment(support, refine_later=True), name)
            rows[name]["wall"].append(wall)
            rows[name]["cpu"].append(cpu)
            if args.refine:
                coarse = result
                coarses[name] = np.asarray(coarse.labels)
                rwall, rcpu, result, decoded, embedded, prompts = refined(name, coarse, [z])
                if args.ahead and name.startswith("B"):
                    rows[name]["ahead"].append(ahead(name, result))
                for key, value in (("refine_wall", rwall), ("refine_cpu", rcpu), ("total_wall", round(wall + rwall, 2)),
                                   ("total_cpu", round(cpu + rcpu, 2)), ("decoded", decoded), ("embedded", embedded),
                                   ("prompts", prompts)):
                    rows[name][key].append(value)
                if args.check_fresh and name.startswith("A"):
                    # this checkout's core/refine.py, exact reuse, from scratch on A's own coarse result and service:
                    # must give A's labels bit for bit (A refines with the baseline's core/refine.py)
                    seg = segs[name]
                    refiner, params = seg._refiner, seg.params
                    seg.params = dataclasses.replace(params, refine=dataclasses.replace(
                        params.refine, reuse_shift=0.0, reuse_changed=0.0))
                    seg._refiner = refine_module.Refiner(seg.params, seg.sam)
                    a_fresh_labels = np.asarray(run(seg.refine_result(coarse, first=[z])).labels)
                    seg._refiner, seg.params = refiner, params
                if args.check_fresh and name.startswith("B"):
                    seg = segs[name]
                    refiner, params = seg._refiner, seg.params
                    # refines everything from scratch, every box decoded (no approximate reuse)
                    seg.params = dataclasses.replace(params, refine=dataclasses.replace(
                        params.refine, reuse_shift=0.0, reuse_changed=0.0))
                    seg._refiner = type(refiner)(seg.params, seg.sam)
                    fresh = run(seg.refine_result(coarse, first=[z]))
                    seg._refiner, seg.params = refiner, params
                    fresh_identical.append(bool(np.array_equal(fresh.labels, result.labels)))
                    fresh_labels = np.asarray(fresh.labels)
            labels[name] = result.labels
            ranks[name] = result.uncertainty
        a, b = (labels[name] for name in segs)  # A's, B's (whichever ran first)
        identical.append(bool(np.array_equal(a, b)))
        classes = [int(c) for c in np.unique(truth) if c]
        quality.append({"dice_ref": {k: dice_mean(v, truth, classes) for k, v in labels.items()},
                        "dice_b_vs_a": dice_mean(b, a, classes)})
        if args.refine and args.check_fresh:
            quality[-1].update(dice_b_vs_fresh=dice_mean(b, fresh_labels, classes),
                               a_identical_to_fresh=bool(np.array_equal(a, fresh_labels)),
                               a_identical_to_this_code_on_a=bool(np.array_equal(a, a_fresh_labels)))
        if args.refine:
            quality[-1]["coarse_identical"] = bool(np.array_equal(*coarses.values()))
        ua, ub = (ranks[name] for name in segs)
        ranking.append({"max_abs_diff": max(abs(ua[i] - ub[i]) for i in ua), "max_pixels": max(ua.values()),
                        "same_order": sorted(ua, key=lambda i: (-ua[i], i)) == sorted(ub, key=lambda i: (-ub[i], i))})
        print(f"correction on slice {z}:", "ahead (wall, cpu, n):", rows[list(segs)[1]].get("ahead", [None])[-1], {k: (v["wall"][-1], v["cpu"][-1]) for k, v in rows.items()},
              "identical labels:", identical[-1], "(total wall, cpu, slices decoded, embedded, prompts):",
              {k: (v.get("total_wall", [None])[-1], v.get("total_cpu", [None])[-1], v.get("decoded", [None])[-1],
                   v.get("embedded", [None])[-1], v.get("prompts", [None])[-1]) for k, v in rows.items()} if args.refine else "",
              "fresh identical:", fresh_identical[-1:], "quality:", quality[-1], "Check next:", ranking[-1], "load:", round(os.getloadavg()[0], 1), flush=True)
    for row in rows.values():
        row["median_wall_s"] = float(np.median(row["wall"]))
        row["median_cpu_s"] = float(np.median(row["cpu"]))
        for key in ("refine_wall", "refine_cpu", "total_wall", "total_cpu"):
            if key in row:
                row[f"median_{key}_s"] = float(np.median(row[key]))
    out = {"scan": list(volume.shape), "matmul": str(matching.matmul_dtype("cpu")).replace("torch.", ""),
           "rows": rows, "identical_labels": identical, "fresh_identical": fresh_identical, "quality": quality,
           "refine": args.refine, "omp": os.environ.get("OMP_NUM_THREADS"), "ranking": ranking, "load_average": [round(x, 1) for x in os.getloadavg()]}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
