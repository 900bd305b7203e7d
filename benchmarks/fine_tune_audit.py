"""Fine-tune's default, with and without, on every protocol in one interleaved run (issue 24's audit).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/fine_tune_audit.py OUT.jsonl [--busi-chunk 3] [--rounds 5]
    ... OUT.jsonl --plan i1,w1,b2,w2,i2,b2 [--busi-start 3]   # an explicit order (below)

Each step takes the next CHAOS-T2 case (order 1 2 3 5 8 10 13 15 19 20): the interactive protocol on it (suggested
picks, 1 painted slice, `--rounds` corrections; `evaluation.interactive._volume_task`, what `evaluate volumes
--protocol interactive [--fine-tune]` runs per case x organ), then within-1 and within-3 (as `evaluate volumes
--protocol within`: the organ's K spread slices painted, every other slice scored), then the next `--busi-chunk`
episodes of BUSI 5-shot and 20-shot, seeds 0 and 1 (`evaluate busi --shots K --seed S`'s episodes and segmenter
seed). Every task runs without and with the button's default before session 14 (`BUTTON`) on the same segmenter (features
and LiteMedSAM embeddings cached), so a step covers every protocol and an interrupted run still has some of each.
With --plan, the steps are run in the order given: iC the interactive protocol on case C, wC within-1 and within-3 on
case C, bN the next N episodes of each BUSI protocol (fN: of the 5-shot ones only) (after --busi-start episodes done by an earlier run).
One JSON line per task: protocol, case / episode, Dice without and with, Fine-tune seconds and its summary."""
import argparse, json, os, random, time
import numpy as np
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, FineTuneParams, run, dice
from napari_fewshot.evaluation.datasets import load_busi, find_cases, load_case, present_classes, slice_range, spread_slices
from napari_fewshot.evaluation.busi import localisation
from napari_fewshot.evaluation.interactive import _volume_task

ORGANS = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}
ORDER = ["1", "2", "3", "5", "8", "10", "13", "15", "19", "20"]


def cpu():
    t = os.times()
    return t.user + t.system


# What the button ran before session 14 (commit 7d71c20): LiteMedSAM's decoder bias on volumes too. On image sets it is
# FineTuneParams() still; on volumes today's default adapts nothing (decoder_on_volumes is off since this audit).
BUTTON = FineTuneParams(decoder_on_volumes=True)


def tuned(seg, support, empty=()):
    """Press Fine-tune (the default before session 14); (wall s, CPU s, summary)."""
    seg.reset_weights()
    w, c = time.perf_counter(), cpu()
    run(seg.fine_tune(support, BUTTON, empty_slices=empty))
    return time.perf_counter() - w, cpu() - c, seg.adaptation.summary


def chaos_step(case, ip, lp, rounds, interactive, emit, within=True):
    image, labels = load_case(ip, lp)
    seg = FewShotSegmenter(SegmentationParams()); seg.set_image(image)
    organs = present_classes(labels, ORGANS)
    if interactive:
        for cid, name in organs.items():
            initial = spread_slices(*slice_range(labels, cid), 1)
            rows = {}
            for v, tune in (("without", None), ("with", BUTTON)):
                seg.reset_weights()
                t = time.perf_counter()
                rows[v] = _volume_task(seg, labels == cid, initial, rounds, "suggested", tune)
                rows[v]["wall"] = time.perf_counter() - t
            seg.reset_weights()
            emit({"protocol": "interactive", "case": case, "organ": name,
                  "without": rows["without"]["dice_per_round_uncorrected"],
                  "with": rows["with"]["dice_per_round_uncorrected"],
                  "whole_without": rows["without"]["dice_per_round"], "whole_with": rows["with"]["dice_per_round"],
                  "noc_without": rows["without"]["noc_90"], "noc_with": rows["with"]["noc_90"],
                  "picked_without": rows["without"]["corrected"], "picked_with": rows["with"]["corrected"],
                  "wall_without": rows["without"]["wall"], "wall_with": rows["with"]["wall"]})
    for k in ((1, 3) if within else ()):
        for cid, name in organs.items():
            picks = spread_slices(*slice_range(labels, cid), k)
            support = np.zeros(labels.shape, np.uint8); support[picks] = labels[picks] == cid
            scored = np.setdiff1d(np.arange(len(labels)), picks)
            seg.reset_weights()
            base = np.asarray(run(seg.segment(support)).labels)
            wall, cpus, summary = tuned(seg, support)
            with_ = np.asarray(run(seg.segment(support)).labels)
            seg.reset_weights()
            emit({"protocol": f"within-{k}", "case": case, "organ": name,
                  "without": dice(base[scored] == 1, labels[scored] == cid),
                  "with": dice(with_[scored] == 1, labels[scored] == cid),
                  "ft_wall": wall, "ft_cpu": cpus, "summary": summary})


class Busi:
    """One protocol's episodes (`evaluate busi --shots K --episodes N --seed S`'s draw), taken a chunk at a time."""

    def __init__(self, images, masks, names, shots, seed, n, seg):
        self.images, self.masks, self.names, self.shots, self.seed, self.seg = images, masks, names, shots, seed, seg
        rng = random.Random(seed)
        queries = rng.sample(range(len(images)), n)
        self.episodes = [(q, rng.sample([i for i in range(len(images)) if i != q], shots)) for q in queries]
        self.done = 0

    def skip(self, m):
        self.done = m

    def chunk(self, m, emit):
        for q, sup in self.episodes[self.done:self.done + m]:
            support = [np.zeros(mk.shape, np.uint8) for mk in self.masks]
            for i in sup:
                support[i] = self.masks[i].astype(np.uint8)
            self.seg.reset_weights()
            base = run(self.seg.segment(support, indices=[q])).labels[q] == 1
            wall, cpus, summary = tuned(self.seg, support)
            with_ = run(self.seg.segment(support, indices=[q])).labels[q] == 1
            self.seg.reset_weights()
            self.done += 1
            emit({"protocol": f"busi-{self.shots}", "seed": self.seed, "episode": self.done, "query": self.names[q],
                  "without": localisation(base, self.masks[q])["dice"],
                  "with": localisation(with_, self.masks[q])["dice"], "ft_wall": wall, "ft_cpu": cpus,
                  "summary": summary})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--busi-chunk", type=int, default=3)
    ap.add_argument("--busi-episodes", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interactive-cases", default="1,2,3,5,8")
    ap.add_argument("--cases", default=",".join(ORDER))
    ap.add_argument("--plan", default=None)
    ap.add_argument("--busi-start", type=int, default=0)
    a = ap.parse_args()

    def emit(row):
        row["load"] = round(os.getloadavg()[0], 2); row["t"] = time.strftime("%H:%M:%S")
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                          if not k.startswith("picked") and not k.startswith("whole")}), flush=True)

    names, images, masks = load_busi("../shared/data/busi")
    segs = {}
    for s in (0, 1):
        segs[s] = FewShotSegmenter(SegmentationParams(seed=s)); segs[s].set_image(images)
    busi = [Busi(images, masks, names, k, s, a.busi_episodes, segs[s]) for k in (5, 20) for s in (0, 1)]
    cases = {c: (ip, lp) for c, ip, lp in find_cases("../shared/data/chaos_t2")}
    for b in busi:
        b.skip(a.busi_start)
    if a.plan:
        for step in a.plan.split(","):
            if step[0] in "bf":
                for b in busi:
                    if step[0] == "b" or b.shots == 5:
                        b.chunk(int(step[1:]), emit)
            else:
                chaos_step(step[1:], *cases[step[1:]], a.rounds, step[0] == "i", emit, within=step[0] == "w")
        return
    inter = set(a.interactive_cases.split(","))
    for case in a.cases.split(","):
        chaos_step(case, *cases[case], a.rounds, case in inter, emit)
        for b in busi:
            b.chunk(a.busi_chunk, emit)
    while any(b.done < len(b.episodes) for b in busi):
        for b in busi:
            b.chunk(a.busi_chunk, emit)


def table(path):
    """Print the means of an audit's JSON lines: per protocol (and organ), without / with / delta, n."""
    rows = [json.loads(line) for line in open(path)]
    for proto in sorted({r["protocol"] for r in rows}):
        got = [r for r in rows if r["protocol"] == proto]
        if proto == "interactive":
            for k in (0, 1, 3, 5):
                have = [r for r in got if len(r["without"]) > k]
                w = np.mean([r["without"][k] for r in have]); t = np.mean([r["with"][k] for r in have])
                print(f"{proto} after {k}: {w:.4f} -> {t:.4f} ({t - w:+.4f}), n = {len(have)} case x organ; cases "
                      f"{sorted({r['case'] for r in have}, key=int)}")
            for organ in ORGANS.values():
                o = [r for r in got if r["organ"] == organ and len(r["without"]) > 3]
                if o:
                    print(f"   {organ} after 3: {np.mean([r['without'][3] for r in o]):.4f} -> "
                          f"{np.mean([r['with'][3] for r in o]):.4f}, n = {len(o)}")
            print(f"   NoC@0.90 per task mean {np.mean([r['noc_without'] for r in got]):.2f} -> "
                  f"{np.mean([r['noc_with'] for r in got]):.2f}; wall per task {np.mean([r['wall_without'] for r in got]):.0f}"
                  f" -> {np.mean([r['wall_with'] for r in got]):.0f} s")
            continue
        keys = sorted({r.get("seed") for r in got}, key=str)
        for seed in keys:
            g = [r for r in got if r.get("seed") == seed]
            w, t = np.mean([r["without"] for r in g]), np.mean([r["with"] for r in g])
            d = [r["with"] - r["without"] for r in g]
            extra = f" seed {seed}" if seed is not None else f" cases {sorted({r['case'] for r in g}, key=int)}"
            print(f"{proto}{extra}: {w:.4f} -> {t:.4f} ({t - w:+.4f}), n = {len(g)}; per task {min(d):+.3f} .. "
                  f"{max(d):+.3f}, {sum(x < -0.01 for x in d)} lower by > 0.01; Fine-tune {np.mean([r['ft_wall'] for r in g]):.1f} s wall "
                  f"({min(r['ft_wall'] for r in g):.1f}-{max(r['ft_wall'] for r in g):.1f}), "
                  f"{np.mean([r['ft_cpu'] for r in g]):.1f} CPU-s; adapted nothing {sum(r['summary'].startswith('Adapted nothing') for r in g)}")
            if seed is None:
                for organ in ORGANS.values():
                    o = [r for r in g if r["organ"] == organ]
                    if o:
                        print(f"   {organ}: {np.mean([r['without'] for r in o]):.4f} -> {np.mean([r['with'] for r in o]):.4f}")
    print("load", min(r["load"] for r in rows), "-", max(r["load"] for r in rows), "time", rows[0]["t"], "-", rows[-1]["t"])


if __name__ == "__main__":
    import sys
    table(sys.argv[2]) if sys.argv[1] == "--table" else main()
