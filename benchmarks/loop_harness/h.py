"""Experiment harness for issue 20 item 3 (helper loop). Not part of the package."""
import sys, os, json, time, random, pickle
import numpy as np
from scipy import ndimage
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, dice, run
from napari_fewshot.core.box_to_mask import BoxParams, BoxSegmenter, clip_box
from napari_fewshot.core.sam_prompt import box_of, PlaneEmbedding
from napari_fewshot.core.support import IGNORE
from napari_fewshot.evaluation.datasets import load_busi
from napari_fewshot.evaluation.interactive_images import dragged_box
import napari_fewshot.core.uncertainty as U

DATA = "../shared/data/busi"
_loaded = None
def data():
    global _loaded
    if _loaded is None:
        _loaded = load_busi(DATA)
    return _loaded

class Env:
    def __init__(self, seed, images=20):
        names, ims, ms = data()
        self.seed = seed
        self.drawn = random.Random(seed).sample(range(len(ims)), images)
        self.names = [names[i] for i in self.drawn]
        self.masks = [ms[i].astype(bool) for i in self.drawn]
        self.params = SegmentationParams(cache_dir="/tmp/loop-cache")
        self.seg = FewShotSegmenter(self.params)
        self.seg.set_image([ims[i] for i in self.drawn])
        self.stack = self.seg.stack
        self.n = images
        self._orig_parse = self.seg.parse_support
        self.rule = None
        self.gate = "none"
        self.gated = []
        self.boxed_set = set()
        self.seg.parse_support = self._parse
        self._orig_groups = self.seg._groups
        self.seg._groups = self._groups
        path = f"/tmp/loop/boxes_s{seed}.npz"
        if os.path.exists(path):
            z = np.load(path)
            self.boxmask = [z[f"m{j}"] for j in range(images)]
        else:
            bs = BoxSegmenter(BoxParams(cached_planes=images), device="cpu", service=self.seg.sam)
            self.boxmask = []
            for j in range(images):
                rng = random.Random(f"{seed}-jitter-{j}")
                box = dragged_box(self.masks[j], rng)
                self.boxmask.append(bs.mask(self.stack.slice(j), clip_box(box, self.stack.shape_of(j))))
            np.savez_compressed(path, **{f"m{j}": m for j, m in enumerate(self.boxmask)})
        self.boxdice = [dice(self.boxmask[j], self.masks[j]) for j in range(images)]

    def _parse(self, support, empty_slices=()):
        s = self._orig_parse(support, empty_slices)
        if self.rule is not None:
            for j in list(s.targets):
                if j in self.boxed_set:
                    s.targets[j] = self.rule(s.targets[j])
        return s

    def _groups(self, ss):
        if self.gate != "loo":
            return self._orig_groups(ss)
        from napari_fewshot.core.support_gate import gate_support, gated_groups
        gated, steps = gate_support(self.seg, ss)
        self.gated.append({"gated": sorted(gated), "steps": steps})
        print("   gate", steps, flush=True)
        return gated_groups(self.seg, ss, gated)

    def segment(self, boxed, use_ref=False):
        self.boxed_set = set(boxed)
        support = [(self.masks[j] if use_ref else self.boxmask[j]).astype(np.uint8) if j in boxed
                   else np.zeros(self.masks[j].shape, np.uint8) for j in range(self.n)]
        empty = [j for j in boxed if not support[j].any()]
        cap = {}
        orig = U.rank_slices
        def spy(coarse, labels, is_volume, scale, support=(), **kw):
            cap["coarse"] = {i: c.copy() for i, c in coarse.items()}
            decode = kw.get("decode")
            if decode is not None:  # Check next without LiteMedSAM's quality estimate, on the same labels
                def plain(i, b):
                    out = decode(i, b)
                    return out[0] if isinstance(out, tuple) else out
                cap["plain"] = orig(coarse, labels, is_volume, scale, support, decode=plain)
            return orig(coarse, labels, is_volume, scale, support, **kw)
        U.rank_slices = spy
        try:
            res = run(self.seg.segment(support, empty_slices=empty))
        finally:
            U.rank_slices = orig
        free = [j for j in range(self.n) if j not in boxed]
        labels = {j: np.asarray(res.labels[j]) == 1 for j in free}
        res.uncertainty_plain = cap.get("plain", {})
        return res, labels, cap["coarse"]

def ignore_band(r_in, r_out):
    def rule(t):
        m = t == 1
        if not m.any():
            return t
        t = t.copy()
        inner = ndimage.binary_erosion(m, iterations=r_in) if r_in else m
        outer = ndimage.binary_dilation(m, iterations=r_out) if r_out else m
        t[(m & ~inner) | (outer & ~m)] = IGNORE
        if not (t == 1).any():
            t[m] = 1  # too small to erode: keep
        return t
    return rule

RULES = {"none": None, "band8": ignore_band(8, 8), "core8": ignore_band(8, 0), "core16": ignore_band(16, 0),
         "out8": ignore_band(0, 8), "band16": ignore_band(16, 16)}

def loop(env, rule="none", pick="worst", shots=3, rounds=10, use_ref=False, ranker=None, record=None):
    env.rule = RULES[rule]
    boxed = list(range(shots))
    curve, unb = [], []
    for r in range(rounds + 1):
        t0 = time.time()
        if len(boxed) == env.n:  # every image boxed: nothing left to segment
            curve.append(float(np.mean(env.boxdice)))
            break
        res, labels, coarse = env.segment(boxed, use_ref)
        free = [j for j in range(env.n) if j not in boxed]
        sc = {j: (env.boxdice[j] if j in boxed else dice(labels[j], env.masks[j])) for j in range(env.n)}
        curve.append(float(np.mean(list(sc.values()))))
        unb.append(float(np.mean([sc[j] for j in free])))
        if record is not None:
            record.append({"gated": env.gated[-1] if env.gated else None, "seed": env.seed, "boxed": list(boxed), "coarse": {j: coarse[j] for j in free},
                           "labels": {j: labels[j] for j in free}, "dice": {j: sc[j] for j in free},
                           "unc": {j: res.uncertainty.get(j) for j in free},
                           "unc_plain": {j: res.uncertainty_plain.get(j) for j in free}})
        print(f"  s{env.seed} {rule} {pick} drags {len(boxed)}: mean {curve[-1]:.3f} unboxed {unb[-1]:.3f} ({time.time()-t0:.0f}s)", flush=True)
        if getattr(res, "uncertainty_plain", None):
            from napari_fewshot.evaluation.interactive_images import ranking_quality
            err = {j: 1 - sc[j] for j in free}
            for name, u in (("with quality", res.uncertainty), ("without", res.uncertainty_plain)):
                order = sorted(free, key=lambda i: (-u[i], i))
                print(f"    Check next {name}: {ranking_quality(u, err)}, misses at",
                      [order.index(j) + 1 for j in free if sc[j] < 0.05], "pick", order[0], flush=True)
        if r == rounds:
            break
        if pick == "worst":
            j = min(free, key=lambda i: (sc[i], i))
        elif pick == "order":
            j = free[0]
        elif pick == "suggested":
            order = sorted(free, key=lambda i: (-res.uncertainty[i], i))
            j = order[0]
        else:
            u = ranker(env, res, labels, coarse, boxed)
            j = max(free, key=lambda i: (u[i], -i))
        boxed.append(j)
    return curve, unb
