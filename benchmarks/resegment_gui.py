"""Re-segmenting after a correction in the window, as a clinician does it: a real viewer (Xvfb), a real
brush stroke on a corrected slice, a click on Segment; the same correction through the Python API in the
same process; this checkout against another (e.g. the last release) side by side, in one run.

    xvfb-run -a python benchmarks/resegment_gui.py [--baseline GIT_REV] [--scan ct|tiled] [--slices 100]
                                                   [--float32] [--precision float32,int8] [--profile]
                                                   [--no-refine] [--json OUT]

--scan ct: the CT sample (112 x 101 x 122; liver and spleen painted on 2 slices from its reference);
--scan tiled: the 20-slice 512 x 512 DICOM CT of ../shared/data tiled to --slices slices (liver on 3 slices).
Each version runs in its own process: features are computed once (Segment all, not timed as a
correction); then 3 corrections, each alternating window and API: the reference of one more organ slice
is put into the support, a real stroke is dragged over it on the canvas, and the whole volume is
segmented again, by clicking Segment (timed from the click until the prediction layer holds the coarse result,
and until the widget is idle: LiteMedSAM's refinement, where on, streams in between) or by
``FewShotSegmenter.segment(..., refine_later=True)`` (the coarse result) on the session's own segmenter. Medians are
reported. --float32 makes the matching use float32 as on CPUs without AVX512-BF16/AMX (most laptops),
the same way in both versions; --precision float32,int8 runs this checkout once per matching precision
(core/precision.py, NAPARI_FEWSHOT_MATMUL), each in its own process, one after the other. --profile samples the stacks of every thread during the window
corrections and prints where the time goes. Each window correction runs a 10 ms heartbeat on the Qt thread
(benchmarks/heartbeat.py) from the click until the refinement is in: its gaps are the window's stalls, for the
coarse phase and the refinement phase apart. --screenshot DIR also keeps the first window correction's steps
(after the stroke, on the corrected slice: *_1_stroke.png; then two slices away, a predicted one, with the
coarse result shown: *_2_coarse.png, and with the refinement in: *_3_refined.png). Each window correction also
says how every thread spent the coarse phase and the refinement phase (``coarse_phase_threads``,
``refinement_phase_threads``: ms on a CPU, waiting for one, and neither; heartbeat.thread_use), and each API
correction the same (``api_threads``): software OpenGL's threads (llvmpipe-N) are the window's drawing.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct_totalseg"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # resegment.py's checkout()


def scan(kind: str, slices: int):
    """(volume (S, H, W), reference (S, H, W) uint8 with classes 1.., painted slice indices, class names)."""
    import numpy as np

    from napari_fewshot.io import read_labels, read_volume

    if kind == "ct":
        from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

        ct = read_volume(CT_IMAGE)
        ref = read_labels(CT_LABELS, like=ct)
        truth = np.where(np.isin(ref, [1, 2]), ref, 0).astype(np.uint8)  # liver 1, spleen 2
        both = [z for z in range(len(truth)) if (truth[z] == 1).any() and (truth[z] == 2).any()]
        return ct.data, truth, [both[len(both) // 3], both[2 * len(both) // 3]], both
    ct = read_volume(DATA / "example_ct_dicom")
    ref = read_labels(DATA / "example_seg_dicom.nii.gz", like=ct)
    reps = -(-slices // len(ct.data))
    volume = np.concatenate([ct.data] * reps)[:slices]
    truth = (np.concatenate([ref] * reps)[:slices] == 5).astype(np.uint8)
    organ = [z for z in range(slices) if truth[z].any()]
    return volume, truth, [slices // 6, slices // 2, 5 * slices // 6], organ


def force_float32(matching) -> None:
    """Make the matching's products float32 (core/precision.py's NAPARI_FEWSHOT_MATMUL; an older checkout read the
    CPU's flags in core/matching.py)."""
    os.environ["NAPARI_FEWSHOT_MATMUL"] = "float32"
    if hasattr(matching, "_cpu_flags"):
        matching._cpu_flags = lambda: set()
        matching.matmul_dtype.cache_clear()


class StackSampler:
    """Samples every thread's Python stack every `interval` s while on; counts inclusive time per function."""

    def __init__(self, interval: float = 0.003):
        self.interval, self.on, self.samples = interval, False, collections.Counter()
        self.total = collections.Counter()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        me = threading.get_ident()
        names = {}
        while not self._stop:
            if self.on:
                names.update({t.ident: t.name for t in threading.enumerate()})
                for ident, frame in sys._current_frames().items():
                    if ident == me:
                        continue
                    where = "main" if ident == threading.main_thread().ident else "worker"
                    self.total[where] += 1
                    seen = set()
                    while frame is not None:
                        code = frame.f_code
                        key = (where, f"{Path(code.co_filename).name}:{code.co_name}")
                        if key not in seen:
                            seen.add(key)
                            self.samples[key] += 1
                        frame = frame.f_back
            time.sleep(self.interval)

    def report(self, top: int = 30) -> list[str]:
        self._stop = True
        lines = []
        for where in ("main", "worker"):
            total = max(self.total[where], 1)
            rows = sorted(((n, f) for (w, f), n in self.samples.items() if w == where), reverse=True)[:top]
            lines.append(f"-- {where} thread: {self.total[where]} samples")
            lines += [f"{100 * n / total:5.1f} %  {f}" for n, f in rows]
        return lines


def shot(path: str, step: str) -> str:
    """The screenshot file of one step of the first window correction, beside `path`."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}_{step}{p.suffix}"))


def near_refined(events: list, z: int, painted) -> dict:
    """From a correction's trace events: seconds from the click until the decoder call that completes the corrected
    slice z's neighbours up to 2 away (those the refinement reaches, painted ones apart), and the boxes decoded."""
    decoded = [(t, set(extra["slices"]), extra.get("decoded_boxes", 0)) for t, _, what, _, extra in events
               if what == "decoded" and extra]
    reached = set().union(*(s for _, s, _ in decoded)) if decoded else set()
    need = ({z + d for d in (-2, -1, 1, 2)} - set(painted)) & reached
    seen, at = set(), None
    for t, slices, _ in decoded:
        seen |= slices
        if at is None and need <= seen:
            at = t
    return {"near_refined_s": at, "boxes_decoded": sum(b for _, _, b in decoded)}


def measure(kind: str, slices: int, float32: bool, profile: bool, screenshot: str | None = None,
            refine: bool = True, trace: bool = False, mirror: bool = False) -> dict:
    import dataclasses

    import torch  # noqa: F401  (before Qt)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    import napari_fewshot.core.matching as matching
    from napari_fewshot.core import dice, run

    sys.path.insert(0, str(ROOT / "tests"))
    from gui_driver import canvas_drag, wait_idle
    from heartbeat import Heartbeat, thread_times, thread_use

    if float32:  # as on a CPU without AVX512-BF16 / AMX / VNNI: the matching's products fall back to float32
        force_float32(matching)
    volume, truth, painted, organ = scan(kind, slices)
    tracer = None
    if trace:  # timestamps of each window correction (benchmarks/correction_trace.py)
        from correction_trace import count_embeddings, install

        tracer = install()
    viewer = napari.Viewer(show=True)
    image = viewer.add_image(volume, name="scan")
    _, widget = viewer.window.add_plugin_dock_widget("napari-fewshot", "Few-shot segmentation")
    widget.ui.settings["device"].value = "cpu"
    if not refine:  # the coarse result only (LiteMedSAM's refinement of 100+ slices takes minutes on 2 cores)
        params = widget.params
        off = lambda: dataclasses.replace(params().refine, enabled=False)  # noqa: E731
        widget.params = lambda: dataclasses.replace(params(), refine=off())
    support = widget.create_support_layer()
    data = support.data
    data[painted] = truth[painted]
    support.data = data
    app = QApplication.instance()
    started = time.perf_counter()
    widget.segment("all")
    first_s = wait_idle(widget, settle_s=0.2)
    session = widget.session
    seg = session.segmenter
    if tracer is not None and seg._sam is not None:
        count_embeddings(seg._sam)

    def correct(z):
        """The reference of slice z into the support, then a real stroke over its first class on the canvas."""
        layer_data = support.data
        layer_data[z] = truth[z]
        support.data = layer_data
        rows, cols = np.nonzero(truth[z] == 1)
        centre = (int(np.median(rows)), int(np.median(cols)))
        path = [(centre[0] + d, centre[1] + d) for d in range(-3, 4)]
        canvas_drag(viewer, support, z, path, label=1, brush=3)
        app.processEvents()

    calls = []  # (what, seconds) of each segmentation the window ran, and of showing each result
    original_segment, original_show = type(seg).segment, type(widget)._show_result

    def timed_segment(self, *args, **kwargs):
        start, misses = time.perf_counter(), self._matches.misses
        result = yield from original_segment(self, *args, **kwargs)
        calls.append((f"segment {'all' if kwargs.get('indices') is None else kwargs['indices']}",
                      round(time.perf_counter() - start, 2), f"{self._matches.misses - misses} slice matches",
                      f"{len(kwargs.get('empty_slices', ()))} empty slices"))
        return result

    def timed_show(self, *args, **kwargs):
        start = time.perf_counter()
        original_show(self, *args, **kwargs)
        calls.append(("show result", round(time.perf_counter() - start, 2)))

    type(seg).segment, type(widget)._show_result = timed_segment, timed_show
    later = {"refine_later": True} if "refine_later" in inspect.signature(original_segment).parameters else {}
    sampler = StackSampler() if profile else None
    candidates = [z for z in organ if z not in painted]
    chosen = candidates[:: max(1, len(candidates) // 6)][:6]
    window, refined, api, dices, steps, beats, digests, summary = [], [], [], [], [], [], [], []
    api_threads = []  # per API correction: each thread's CPU / run-queue / off ms (heartbeat.thread_use)
    for n, z in enumerate(chosen):
        correct(z)
        if n % 2 == 0 and mirror:  # the window's correction through the API instead: coarse, then refined (first=[z])
            from napari_fewshot.core.ahead import embed_ahead

            click, cpu = time.perf_counter(), time.thread_time()
            coarse = run(original_segment(seg, np.array(support.data), refine_later=True,
                                          empty_slices=widget.corrections.empty_slices()))
            window.append(time.perf_counter() - click)
            coarse_cpu = time.thread_time() - cpu
            result = run(seg.refine_result(coarse, first=[z]))
            refined.append(time.perf_counter() - click)
            steps.append({"coarse_cpu_s": round(coarse_cpu, 2),
                          "refine_cpu_s": round(time.thread_time() - cpu - coarse_cpu, 2)})
            run(embed_ahead(seg, result))  # as the window's quiet job does after a refinement (idle time)
            labels = result.labels
        elif n % 2 == 0:
            if sampler:
                sampler.on = True
            calls.clear()
            shots = screenshot and n == 0  # the first window correction, step by step, as the user sees it
            if shots:
                viewer.window._qt_window.resize(1500, 900)  # the same frame in every run
                viewer.reset_view()
                viewer.dims.set_current_step(0, z)
                wait_idle(None, settle_s=0.5)
                viewer.screenshot(shot(screenshot, "1_stroke"), canvas_only=False)
                shown = next(v for v in (z + 2, z - 2, z + 3, z - 3) if v not in painted and v not in chosen)
                viewer.dims.set_current_step(0, shown)  # a predicted slice: its coarse, then refined outline
                rows, cols = np.nonzero(truth[shown] == 1)
                viewer.camera.center = (float(np.median(rows)), float(np.median(cols)))  # the liver, 2.5x
                viewer.camera.zoom *= 2.5
                wait_idle(None, settle_s=0.3)
            heart = Heartbeat()
            if os.environ.get("STALL_DUMP"):  # faulthandler's dump of every thread at each stall over 100 ms
                heart.dump_to(f"{os.environ['STALL_DUMP']}.{n}")
            heart.start()
            if tracer is not None:
                tracer.reset()
            threads_before = thread_times()
            click = time.perf_counter()
            widget.ui.segment_button.click()
            streaming = getattr(widget, "streaming", None)  # None: a revision without streamed refinement
            while widget.busy and not (streaming is not None and streaming.running and session.prediction is not None):
                app.processEvents()  # until the coarse result is shown (refinement, if on, streams in after it)
                time.sleep(0.005)
            window.append(time.perf_counter() - click)
            coarse_threads = thread_times()
            coarse_at = time.perf_counter() - heart.t0
            if shots:
                viewer.screenshot(shot(screenshot, "2_coarse"), canvas_only=False)
            while streaming is not None and streaming.running:  # until the refined labels are in (not the embeddings ahead after it)
                app.processEvents()
                time.sleep(0.005)
            refined.append(time.perf_counter() - click)
            refined_threads = thread_times()
            done_at = time.perf_counter() - heart.t0
            wait_idle(widget, settle_s=0)  # idle time: the embeddings ahead of need (core/ahead.py) where there are
            wait_idle(None, settle_s=0.5)
            heart.stop()
            if shots:
                viewer.screenshot(shot(screenshot, "3_refined"), canvas_only=False)
            beats.append({"coarse_phase": heart.gaps(0, coarse_at), "refinement_phase": heart.gaps(coarse_at, done_at + 0.5),
                          "stalls": [{"at_s": st["at_s"], "gap_ms": st["gap_ms"], "main": [m["stack"][:3] for m in st["main"][:1]],
                                      "threads": st["threads"][:3]} for st in heart.stalls if st["gap_ms"] > 100],
                          "collections": heart.collections})
            steps.append(list(calls) + ([tracer.report()] if tracer is not None else []))
            summary.append({"slice": z, "load": round(os.getloadavg()[0], 1), "coarse_shown_s": round(window[-1], 2),
                            **(near_refined(tracer.events, z, painted) if tracer is not None else {}),
                            "all_refined_s": round(refined[-1], 2),
                            "max_gap_refining_ms": beats[-1]["refinement_phase"].get("max_stall_ms"),
                            "coarse_phase_threads": thread_use(threads_before, coarse_threads, window[-1]),
                            "refinement_phase_threads": thread_use(coarse_threads, refined_threads,
                                                                   refined[-1] - window[-1])})
            if sampler:
                sampler.on = False
            labels = np.asarray(session.prediction.data)
        else:
            threads_before, click = thread_times(), time.perf_counter()
            result = run(original_segment(seg, np.array(support.data), **later,
                                          empty_slices=widget.corrections.empty_slices()))
            api.append(time.perf_counter() - click)
            api_threads.append(thread_use(threads_before, thread_times(), api[-1]))
            labels = result.labels
        dices.append(round(float(dice(labels == 1, truth == 1)), 4))
        digests.append(hashlib.blake2b(np.ascontiguousarray(labels, np.uint8).tobytes(), digest_size=8).hexdigest())
    status = widget.ui.status_label.text()
    if screenshot:  # the last corrected slice, prediction outlined over the paint, as the user sees it
        viewer.dims.set_current_step(0, chosen[-1])
        wait_idle(None, settle_s=0.5)
        viewer.screenshot(screenshot, canvas_only=False)
    layer_names = [layer.name for layer in viewer.layers]
    viewer.close()
    row = {
        "scan": list(volume.shape), "matmul": str(matching.matmul_dtype("cpu")).replace("torch.", ""),
        "first_segment_all_with_features_s": round(first_s, 1),
        "window_after_correction_s": [round(s, 2) for s in window],
        "window_refined_after_correction_s": [round(s, 2) for s in refined],
        "api_after_correction_s": [round(s, 2) for s in api], "api_threads": api_threads,
        "window_median_s": round(float(np.median(window)), 2), "api_median_s": round(float(np.median(api)), 2),
        "window_summary": summary, "liver_dice_per_correction": dices, "labels_digest_per_correction": digests, "window_steps": steps, "window_heartbeat": beats,
        "layers": layer_names, "status": status, "setup_s": round(time.perf_counter() - started, 1),
    }
    if sampler:
        row["profile"] = sampler.report()
    return row


def main() -> None:
    from resegment import checkout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="git revision to compare with (e.g. c750513)")
    parser.add_argument("--scan", choices=("ct", "tiled"), default="ct")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--precision", default=None,
                        help="comma-separated matching precisions for this checkout, each in its own process, "
                             "e.g. float32,int8 (NAPARI_FEWSHOT_MATMUL)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-refine", action="store_true", help="LiteMedSAM's refinement off (coarse results only)")
    parser.add_argument("--screenshot", default=None, help="folder for a screenshot of each version's window")
    parser.add_argument("--baseline-only", action="store_true", help="run the baseline only")
    parser.add_argument("--mirror", action="store_true", help="the window's corrections through the API (refined)")
    parser.add_argument("--trace", action="store_true",
                        help="timestamps of each window correction (correction_trace.py)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        sys.path.insert(0, args.one)
        print(json.dumps(measure(args.scan, args.slices, args.float32, args.profile, args.screenshot,
                                 not args.no_refine, args.trace, args.mirror)))
        return
    trees = {} if args.baseline_only else {"this checkout": ROOT}
    precisions = {"this checkout": None}
    if args.precision and not args.baseline_only:
        trees = {f"this checkout, {p}": ROOT for p in args.precision.split(",")}
        precisions = {name: name.split(", ")[1] for name in trees}
    if args.baseline:
        trees[f"baseline {args.baseline}"] = checkout(args.baseline)
    rows = {}
    if args.screenshot:
        Path(args.screenshot).mkdir(parents=True, exist_ok=True)
    try:
        for name, tree in trees.items():
            command = [sys.executable, __file__, "--one", str(tree), "--scan", args.scan, "--slices", str(args.slices)]
            command += ["--float32"] * args.float32 + ["--profile"] * args.profile + ["--no-refine"] * args.no_refine
            command += ["--trace"] * args.trace + ["--mirror"] * args.mirror
            if args.screenshot:
                tag = "baseline" if tree != ROOT else "this" + (f"_{precisions[name]}" if precisions.get(name) else "")
                command += ["--screenshot", str(Path(args.screenshot).resolve() / f"resegment_gui_{tag}.png")]
            with tempfile.TemporaryDirectory() as tmp:  # the benchmark's paint is not the user's: own autosaves
                env = {**__import__("os").environ, "NAPARI_FEWSHOT_AUTOSAVE_DIR": tmp}
                if precisions.get(name):
                    env["NAPARI_FEWSHOT_MATMUL"] = precisions[name]
                out = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
            profile = rows[name].pop("profile", None)
            print(name, json.dumps(rows[name], indent=1), flush=True)
            if profile:
                print("\n".join(profile), flush=True)
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
