"""LiteMedSAM's libraries are imported ahead of a volume's streamed refinement (plugin/warm_up.py): importing them
inside the refinement set off full garbage-collector passes that held the GIL 0.2-0.7 s while the window showed the
coarse result (BENCHMARKS.md, "The window's stalls while refinement streams")."""

import dataclasses
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from napari_fewshot.core.config import SegmentationParams
from napari_fewshot.plugin import streaming, warm_up, workers


class Stack:
    """What warm_up.start reads of a core ImageStack."""

    def __init__(self, volume, n):
        self.is_volume, self.n = volume, n
        self.is_3d = volume and n > 1

    def __len__(self):
        return self.n


def stack(volume=True, n=5):
    return Stack(volume, n)


def params(enabled):
    base = SegmentationParams()
    return dataclasses.replace(base, refine=dataclasses.replace(base.refine, enabled=enabled))


@pytest.fixture
def probe(monkeypatch):
    """warm_up imports one small module nobody has imported (colorsys) instead of LiteMedSAM's libraries."""
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    monkeypatch.setattr(warm_up, "LIBRARIES", ("colorsys",))
    return "colorsys"


def test_a_refined_volume_imports_the_libraries_in_a_background_thread(probe):
    thread = warm_up.start(params(True), stack())
    assert thread is not None and thread.name == warm_up.THREAD and thread is not threading.current_thread()
    thread.join(30)
    assert probe in sys.modules
    assert warm_up.start(params(True), stack()) is None  # imported: nothing more to do


@pytest.mark.parametrize("p, s", [(params(False), stack()), (params(True), stack(volume=False)),
                                  (params(True), stack(n=1))])
def test_nothing_is_imported_when_no_refinement_streams(probe, p, s):
    assert warm_up.start(p, s) is None
    assert probe not in sys.modules


def test_the_refinement_waits_for_the_warm_up_before_its_own_imports(monkeypatch):
    done = threading.Event()
    monkeypatch.setattr(warm_up, "LIBRARIES", ("a_module_that_is_not_there",))
    monkeypatch.setattr(warm_up, "_import", lambda: (time.sleep(0.3), done.set()))
    assert warm_up.start(params(True), stack()) is not None
    seen = []

    def refine_result(result, first, stop=None):
        seen.append(done.is_set())
        return "refined"
        yield  # a generator, as the core's

    session = SimpleNamespace(segmenter=SimpleNamespace(refine_result=refine_result))
    job = streaming.refine_job(session, "coarse", [0])
    with pytest.raises(StopIteration) as stop:
        next(job)
    assert stop.value.value == "refined" and seen == [True]


def test_a_stopped_refinement_does_not_wait_for_the_warm_up_to_end(monkeypatch):
    """Cancel or a close while the libraries still import: the refinement's worker ends within 0.1 s (main: it
    waited for the whole import, seconds on a loaded machine)."""
    from napari_fewshot.core.progress import Stopped

    release = threading.Event()
    monkeypatch.setattr(warm_up, "LIBRARIES", ("a_module_that_is_not_there",))
    monkeypatch.setattr(warm_up, "_import", lambda: release.wait(30))
    assert warm_up.start(params(True), stack()) is not None
    asked = threading.Event()
    threading.Timer(0.2, asked.set).start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Stopped):
            warm_up.wait(asked.is_set)
        assert time.perf_counter() - t0 < 1.5
    finally:
        release.set()


def test_segment_starts_the_warm_up_of_a_volume_it_leaves_to_be_refined(monkeypatch):
    calls = []
    monkeypatch.setattr(warm_up, "start", lambda p, s: calls.append((p, s)))

    class Stop(Exception):
        pass

    def parse_support(*_):
        raise Stop

    s = stack()
    seg = SimpleNamespace(cache=SimpleNamespace(stack=s), parse_support=parse_support)
    session = SimpleNamespace(prepare=lambda image, p: seg)
    job = workers.Job(session=session, params=params(None), image=None, support=np.zeros((5, 4, 4), np.uint8))
    with pytest.raises(Stop):
        next(workers.segment_job(job, None, False, 0, True))
    assert calls == [(job.params, s)]
    calls.clear()
    with pytest.raises(Stop):
        next(workers.segment_job(job, None, False, 0, False))  # no refinement to follow: nothing ahead
    assert calls == []
