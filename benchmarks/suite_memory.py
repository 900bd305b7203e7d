"""pytest plugin: the process RSS after each test (and its peak), and every 20 tests the live instances of our
classes and napari's, to find what a test leaves behind. Usage (session 18 found napari's closed windows kept):
    PYTHONPATH=benchmarks MEMTRACK_OUT=rss.tsv xvfb-run -a python -m pytest -p suite_memory tests
Columns: test number, time, RSS MB, peak RSS MB, test id[, after a gc pass: RSS, array MB, instance counts]."""

import collections
import gc
import os
import time

_OUT = open(os.environ.get("MEMTRACK_OUT", "suite_rss.tsv"), "w", buffering=1)
_N = [0]
WATCH = ("Viewer", "LiteMedSAM", "Service", "CompiledModel", "Core", "Segmenter", "FeatureCache", "Widget",
         "QWidget", "Tensor", "ndarray", "Encoder", "EmbeddingCache", "Refiner", "Session")


def _rss():
    with open("/proc/self/status") as f:
        d = dict(l.split(":", 1) for l in f if ":" in l)
    return int(d["VmRSS"].split()[0]) // 1024, int(d["VmHWM"].split()[0]) // 1024


def pytest_runtest_logfinish(nodeid, location):
    _N[0] += 1
    rss, hwm = _rss()
    extra = ""
    if _N[0] % 20 == 0:
        gc.collect()
        c = collections.Counter()
        big = 0
        for o in gc.get_objects():
            n = type(o).__name__
            mod = type(o).__module__ or ""
            if any(w in n for w in WATCH) and ("napari" in mod or "openvino" in mod or n in ("Tensor", "ndarray")):
                c[mod.split(".")[0] + "." + n] += 1
            if n == "ndarray":
                try:
                    big += o.nbytes
                except Exception:
                    pass
            elif n == "Tensor":
                try:
                    big += o.element_size() * o.nelement()
                except Exception:
                    pass
        rss2, _ = _rss()
        extra = f"\tafter_gc={rss2}\tarrays_MB={big>>20}\t" + ",".join(f"{k}={v}" for k, v in c.most_common(25))
    _OUT.write(f"{_N[0]}\t{time.time():.0f}\t{rss}\t{hwm}\t{nodeid}{extra}\n")
