"""Fine-tune variants on the same episodes, in one process (features and embeddings cached across variants).

    PYTHONPATH=. python benchmarks/fine_tune_compare.py busi N base,adapter,adapter+decoder [SEED]  # BUSI 5-shot
    PYTHONPATH=. python benchmarks/fine_tune_compare.py within-1 CASES base,adapter           # CHAOS within-K
    PYTHONPATH=. python benchmarks/fine_tune_compare.py interactive CASES base,adapter        # 3 corrections
A variant is base or a FineTuneParams.method, optionally with settings: "adapter:adapter_steps=20;feature_noise=0";
a trailing "!" lets the tuned decoder also draw the candidates selection chooses among (service.tuned_chooses).
BUSI's episodes are `evaluate busi --shots 5 --episodes N --seed SEED`'s. Every line prints the running means
and the load average. Writes /tmp/ft-tune/WHICH-N.json. BENCHMARKS.md, "Fine-tune", has what it gave."""
import json, os, random, sys, time
import numpy as np
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, FineTuneParams, run, dice
from napari_fewshot.evaluation.datasets import load_busi, find_cases, load_case, present_classes, slice_range, spread_slices
from napari_fewshot.evaluation.busi import localisation

which, n = sys.argv[1], int(sys.argv[2])
variants = sys.argv[3].split(",")
out = {v: [] for v in variants}; secs = {v: [] for v in variants}

def params_of(seg, v):
    """variant -> FineTuneParams (None: base); sets whether the tuned decoder also draws selection's candidates."""
    seg.sam.tuned_chooses = v.endswith("!")  # "...!": the tuned decoder also draws selection's candidates
    v = v.rstrip("!")
    if v == "base":
        return None
    kw = {}
    if ":" in v:
        v, extra = v.split(":")
        for item in extra.split(";"):
            k, val = item.split("=")
            kind = type(getattr(FineTuneParams(), k))
            kw[k] = val in ("1", "true", "True") if kind is bool else kind(val)
    return FineTuneParams(method=v, **kw)


def tuned(seg, support, v, empty=()):
    seg.reset_weights()
    params = params_of(seg, v)
    if params is None:
        return 0.0
    t = time.perf_counter()
    run(seg.fine_tune(support, params, empty_slices=empty))
    return time.perf_counter() - t


def chaos_organs(n):
    """(case, segmenter with the scan set, labels, class id, name) for each organ of the first n CHAOS scans."""
    classes = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}
    for case, ip, lp in find_cases("../shared/data/chaos_t2")[:n]:
        image, labels = load_case(ip, lp)
        seg = FewShotSegmenter(SegmentationParams()); seg.set_image(image)
        for cid, name in present_classes(labels, classes).items():
            yield case, seg, labels, cid, name


if which == "busi":
    names, images, masks = load_busi("../shared/data/busi")
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    queries = rng.sample(range(len(images)), n)
    seg = FewShotSegmenter(SegmentationParams(seed=0)); seg.set_image(images)
    for q in queries:
        sup = rng.sample([i for i in range(len(images)) if i != q], 5)
        support = [np.zeros(m.shape, np.uint8) for m in masks]
        for i in sup: support[i] = masks[i].astype(np.uint8)
        for v in variants:
            s = tuned(seg, support, v)
            r = run(seg.segment(support, indices=[q]))
            d = localisation(r.labels[q] == 1, masks[q])["dice"]
            out[v].append(d); secs[v].append(s)
        print(len(out[variants[0]]), names[q], " ".join(f"{v} {out[v][-1]:.3f} ({secs[v][-1]:.0f}s)" for v in variants),
              "| mean", " ".join(f"{np.mean(out[v]):.4f}" for v in variants), "| load %.1f" % os.getloadavg()[0],
              flush=True)
elif which == "interactive":
    from napari_fewshot.evaluation.interactive import _volume_task
    for case, seg, labels, cid, name in chaos_organs(n):
        initial = spread_slices(*slice_range(labels, cid), 1)
        for v in variants:
            seg.reset_weights()
            tune = params_of(seg, v)
            t = time.perf_counter()
            row = _volume_task(seg, labels == cid, initial, 3, "suggested", tune)
            out[v].append(row["dice_per_round_uncorrected"]); secs[v].append(time.perf_counter() - t)
        print(case, name, " | ".join(f"{v} " + " ".join(f"{d:.3f}" for d in out[v][-1]) for v in variants), flush=True)
    print("MEAN per round", " | ".join(f"{v} " + " ".join(f"{d:.4f}" for d in np.mean(out[v], 0)) for v in variants))
else:
    k = int(which.split("-")[1])  # within-K
    for case, seg, labels, cid, name in chaos_organs(n):
        picks = spread_slices(*slice_range(labels, cid), k)
        support = np.zeros(labels.shape, np.uint8); support[picks] = labels[picks] == cid
        scored = np.setdiff1d(np.arange(len(labels)), picks)
        for v in variants:
            s = tuned(seg, support, v)
            pred = np.asarray(run(seg.segment(support)).labels)
            out[v].append(dice(pred[scored] == 1, labels[scored] == cid)); secs[v].append(s)
        print(case, name, " ".join(f"{v} {out[v][-1]:.3f} ({secs[v][-1]:.0f}s)" for v in variants),
              "| mean", " ".join(f"{np.mean(out[v]):.4f}" for v in variants), "| load %.1f" % os.getloadavg()[0],
              flush=True)
print("MEAN", " ".join(f"{v} {np.mean(out[v]):.4f} (ft {np.mean(secs[v]):.1f}s)" for v in variants))
os.makedirs("/tmp/ft-tune", exist_ok=True)
json.dump({"dice": out, "seconds": secs}, open(f"/tmp/ft-tune/{which}-{n}-{'-'.join(sys.argv[4:])}.json", "w"))
