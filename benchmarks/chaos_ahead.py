"""Held-out check of the 20-slice reach: CHAOS-T2 cases, 4 organs painted on 1 slice each (the middle of each organ's
extent), Segment all refined, embed_ahead, then 3 corrections on Check next's top slice (reference of all organs
there); per correction: embeddings the refinement still had to compute (misses) and slices it refined whose embedding
came from embed_ahead (hits)."""
import sys, time, dataclasses  # python benchmarks/chaos_ahead.py 3,5 (case numbers of ../shared/data/chaos_t2)
from pathlib import Path
import numpy as np
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run, RefineParams
from napari_fewshot.core.ahead import embed_ahead
from napari_fewshot.io import read_volume, read_labels
root = Path("/work/wt/shared/data/chaos_t2")
for case in sys.argv[1].split(","):
    vol = read_volume(root / f"image_{case}.nii.gz"); ref = read_labels(root / f"label_{case}.nii.gz", like=vol)
    ref = np.where(np.isin(ref, [1, 2, 3, 4]), ref, 0).astype(np.uint8)
    support = np.zeros(ref.shape, np.uint8)
    for c in (1, 2, 3, 4):
        z = np.flatnonzero((ref == c).any((1, 2)))
        if len(z):
            m = int(z[len(z) // 2]); support[m][ref[m] == c] = c
    seg = FewShotSegmenter(dataclasses.replace(SegmentationParams(device="cpu"), refine=RefineParams(enabled=True)))
    seg.set_image(vol.data)
    t = time.process_time()
    final = run(seg.refine_result(run(seg.segment(support, refine_later=True)), []))
    svc = seg.sam
    digests = lambda: {i for (s, i) in svc._digests if svc._digests[(s, i)] in svc._planes}
    before = svc.computed
    ahead_set = set(); c0 = time.process_time()
    run(embed_ahead(seg, final)); n_ahead = svc.computed - before
    ahead_set = digests()
    print(f"case {case}: {len(vol.data)} slices, Segment all {time.process_time()-t:.0f} CPU-s, ahead {n_ahead} embeddings {time.process_time()-c0:.0f} CPU-s", flush=True)
    for k in range(3):
        ranks = final.uncertainty
        z = max((i for i in ranks if not support[i].any()), key=lambda i: ranks[i], default=None)
        if z is None: break
        support[z] = ref[z]
        c = svc.computed
        refined_before = set(seg.refiner._refined)
        final = run(seg.refine_result(run(seg.segment(support, refine_later=True)), [z]))
        misses = svc.computed - c
        new_slices = set(seg.refiner._refined) - refined_before
        hits = len([i for i in new_slices if i in ahead_set])
        before = svc.computed; run(embed_ahead(seg, final)); ahead_set |= digests()
        print(f"  correction {k+1} on slice {z}: slices refined for the first time {len(new_slices)}, embeddings computed {misses} (misses), from ahead {hits}; ahead after it {svc.computed-before}", flush=True)
