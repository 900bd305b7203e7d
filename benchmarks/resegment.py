"""The correction loop's speed: re-segmenting after a corrected slice, the visible slice after a stroke,
Reset weights; this checkout against another (e.g. the last release) side by side, in one run.

    python benchmarks/resegment.py [--baseline GIT_REV] [--slices 100] [--float32] [--json OUT]

The volume is the real 20-slice 512 x 512 DICOM CT of ../shared/data tiled to N slices; the liver is
painted on 3 slices. Each version runs in its own process on the same persistent feature cache (its
signature names the scan, encoder and input size, so the second process reuses what the first
computed and neither times the encoder), and measures:
- segment all (features cached), then 3 corrections: each replaces one more predicted liver slice by
  the reference and segments the whole volume again (3D clean-up included); the median is reported;
- the visible slice after a stroke: 20 strokes on a support slice, each followed by segmenting the
  visible slice alone (as Live does); p50 and p95;
- Reset weights: 2 fine-tuning steps, Reset, then how many slices still have features and the
  seconds to segment all again.
--float32 makes the matching's products float32, as on CPUs without AVX512-BF16 or AMX (most laptops),
in both versions alike. Each time is also given in CPU seconds (both threads), which a busy machine
inflates far less than wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct_totalseg"
LIVER = 5


def measure(slices: int, cache_dir: str, float32: bool = False) -> dict:
    import numpy as np
    import torch

    import napari_fewshot.core.matching as matching

    if float32:
        from resegment_gui import force_float32

        force_float32(matching)

    from napari_fewshot.core import FewShotSegmenter, FineTuneParams, SegmentationParams, dice, run
    from napari_fewshot.io import read_labels, read_volume

    ct = read_volume(DATA / "example_ct_dicom")
    reference = read_labels(DATA / "example_seg_dicom.nii.gz", like=ct)
    reps = -(-slices // len(ct.data))
    volume = np.concatenate([ct.data] * reps)[:slices]
    truth = (np.concatenate([reference] * reps)[:slices] == LIVER).astype(np.uint8)
    support = np.zeros(volume.shape, np.uint8)
    painted = [slices // 6, slices // 2, 5 * slices // 6]
    support[painted] = truth[painted]
    segmenter = FewShotSegmenter(SegmentationParams(cache_dir=cache_dir))
    segmenter.set_image(volume)
    started = time.perf_counter()
    run(segmenter.compute_features())
    features_s = time.perf_counter() - started
    # From here on as in napari, where features live in memory only (no persistent cache to reload them).
    for i in range(slices):
        segmenter.cache.get(i)
    segmenter.params.cache_dir = None
    segmenter.cache.set_persistence(None, None)
    segmenter.cache._on_disk.clear()  # they are all in memory now; the persistent files are not ours to use

    cpu_seconds = []

    def timed(job):
        start, cpu = time.perf_counter(), time.process_time()
        out = run(job)
        cpu_seconds.append(time.process_time() - cpu)
        return time.perf_counter() - start, out

    first_s, result = timed(segmenter.segment(support))
    again_s, _ = timed(segmenter.segment(support))
    corrections, dices = [], [dice(result.labels == 1, truth == 1)]
    candidates = [z for z in range(slices) if truth[z].any() and z not in painted]
    correction_cpu = []
    for z in candidates[:: max(1, len(candidates) // 3)][:3]:
        support[z] = truth[z]
        seconds, result = timed(segmenter.segment(support))
        corrections.append(seconds)
        correction_cpu.append(cpu_seconds[-1])
        dices.append(dice(result.labels == 1, truth == 1))

    visible = slices // 3
    stroke_plane = painted[1]
    strokes = []
    rng = np.random.default_rng(0)
    for _ in range(20):
        r, c = rng.integers(100, 400, size=2)
        support[stroke_plane, r:r + 8, c:c + 8] = 1
        seconds, _ = timed(segmenter.segment(support, indices=[visible]))
        strokes.append(seconds)

    calls = []
    segmenter.encoder.register_forward_hook(lambda *_: calls.append(1))
    run(segmenter.fine_tune(support, FineTuneParams(method="encoder", steps=2)))
    segmenter.reset_weights()
    kept = len(segmenter.cache)
    calls.clear()
    reset_segment_s, _ = timed(segmenter.segment(support))
    strokes.sort()
    return {
        "shape": list(volume.shape), "threads": torch.get_num_threads(), "features_s": round(features_s, 2),
        "segment_all_s": round(first_s, 3), "segment_again_unchanged_s": round(again_s, 3),
        "resegment_after_correction_s": [round(s, 3) for s in corrections],
        "resegment_after_correction_median_s": round(float(np.median(corrections)), 3),
        "resegment_after_correction_median_cpu_s": round(float(np.median(correction_cpu)), 3),
        "matmul": str(matching.matmul_dtype("cpu")).replace("torch.", ""),
        "load_average_1min": round(__import__("os").getloadavg()[0], 1),
        "dice_per_correction": [round(d, 4) for d in dices],
        "visible_slice_after_stroke_p50_ms": round(1000 * strokes[len(strokes) // 2], 1),
        "visible_slice_after_stroke_p95_ms": round(1000 * strokes[int(0.95 * (len(strokes) - 1))], 1),
        "after_reset_slices_with_features": kept, "after_reset_encoder_batches": len(calls),
        "after_reset_segment_all_s": round(reset_segment_s, 2),
    }


def checkout(rev: str) -> Path:
    """A detached worktree of `rev` in a temporary folder (its package is imported from there)."""
    folder = Path(tempfile.mkdtemp(prefix="fewshot-baseline-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev], check=True,
                   capture_output=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="git revision to compare with (e.g. 7ee6270)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--float32", action="store_true", help="float32 products, as on most laptops")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        sys.path.insert(0, args.one)
        print(json.dumps(measure(args.slices, args.cache_dir, args.float32)))
        return
    cache_dir = tempfile.mkdtemp(prefix="fewshot-resegment-cache-")
    trees = {"this checkout": ROOT}
    if args.baseline:
        trees[f"baseline {args.baseline}"] = checkout(args.baseline)
    rows = {}
    try:
        for name, tree in trees.items():
            env_code = f"import sys; sys.path.insert(0, {str(tree)!r}); import napari_fewshot; print(napari_fewshot.__file__)"
            where = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, check=True)
            out = subprocess.run([sys.executable, __file__, "--one", str(tree), "--slices", str(args.slices),
                                  "--cache-dir", cache_dir] + ["--float32"] * args.float32,
                                 capture_output=True, text=True, cwd=tree)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            rows[name] = {"package": where.stdout.strip(), **json.loads(out.stdout.strip().splitlines()[-1])}
            print(name, json.dumps(rows[name], indent=1), flush=True)
    finally:
        for name, tree in trees.items():
            if tree != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
