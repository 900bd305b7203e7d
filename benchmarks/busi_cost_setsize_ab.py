"""CPU-s per image in a 12-image set vs a 100-image set holding the same images, alternating; cProfile of the
large set. OMP_NUM_THREADS=1 python benchmarks/busi_cost_setsize_ab.py (run from the repository root).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI."""
import cProfile, os, pstats, sys, time
import numpy as np
sys.path.insert(0, os.getcwd())
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.evaluation.datasets import load_busi
names, images, masks = load_busi("../shared/data/busi")
big = np.linspace(0, len(images) - 1, 100).round().astype(int).tolist()
small = big[:3] + big[3::9][:9]
def make(picked):
    s = FewShotSegmenter(SegmentationParams(device="cpu")); s.set_image([images[i] for i in picked])
    sup = [masks[i].astype(np.uint8) if n < 3 else np.zeros(masks[i].shape, np.uint8) for n, i in enumerate(picked)]
    return s, sup
segs = {"small": make(small), "big": make(big)}
prof = cProfile.Profile(); out = {"small": [], "big": []}
for k, i in enumerate(small[3:]):
    for name, (s, sup) in segs.items():
        n = (small if name == "small" else big).index(i)
        if name == "big" and k > 0: prof.enable()
        t = time.process_time(); run(s.segment(sup, indices=[n])); out[name].append(time.process_time() - t)
        prof.disable()
    print(k, names[i], {a: round(b[-1], 2) for a, b in out.items()}, os.getloadavg()[0], flush=True)
for a, b in out.items(): print(a, "mean after first", round(float(np.mean(b[1:])), 2))
pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
