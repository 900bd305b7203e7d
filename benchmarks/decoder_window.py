"""LiteMedSAM's decoder with and without `inside` (graph 3 upscaling only the cells a box reads; session 18 "redec"):
the probabilities inside every box, and CPU seconds per box, on real CT-sample slices (each organ boxed, and a
copy of each box jittered by up to 2 px).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/decoder_window.py
"""
import tempfile
import time

import numpy as np
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.sam_prompt import box_of, box_region
from napari_fewshot.io import read_volume, read_labels
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS
ct = read_volume(CT_IMAGE); ref = read_labels(CT_LABELS, like=ct)
svc = LiteMedSAMService(model_dir=tempfile.mkdtemp())
reqs = []
rng = np.random.default_rng(0)
for z in [z for z in range(0, 112, 9) if ref[z].any()]:
    plane = ct.data[z].astype(np.float32); plane = (plane-plane.min())/(plane.max()-plane.min())
    emb = svc.embedding(plane)
    boxes = []
    for c in np.unique(ref[z])[1:]:
        b = box_of(ref[z] == c, 0.1)
        boxes += [b, b + rng.uniform(-2, 2, 4).astype(np.float32)]
    boxes = np.clip(np.array(boxes, np.float32), 0, [plane.shape[1]-1, plane.shape[0]-1]*2)
    reqs.append((emb, boxes, None))
print(svc.decoder_runtime().status)
full = svc.decode(reqs); ins = svc.decode(reqs, inside=True)
worst, dmin, n = 0, 1, 0
for (e, boxes, _), f, i in zip(reqs, full, ins):
    for b, pf, pi in zip(boxes, f, i):
        reg = box_region(b, pf.shape)
        worst = max(worst, float(np.abs(pf[reg]-pi[reg]).max())); n += 1
        assert (pi[~reg] == 0).all()
        a, c = pf[reg] > .5, pi[reg] > .5
        dmin = min(dmin, 2*(a&c).sum()/max(a.sum()+c.sum(),1))
print("boxes", n, "max |dp| inside", worst, "min Dice", dmin)
for _ in range(2):
    t = time.process_time(); svc.decode(reqs); a = time.process_time()-t
    t = time.process_time(); svc.decode(reqs, inside=True); b = time.process_time()-t
    print(f"full {a:.3f} CPU-s, inside {b:.3f} CPU-s for {n} boxes: {a/n:.4f} -> {b/n:.4f} per box")
