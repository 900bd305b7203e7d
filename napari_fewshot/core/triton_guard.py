"""Keep Triton from loading into a process whose OpenGL driver (napari's canvas) has loaded Mesa's LLVM.

Loading ``triton`` (torch imports it lazily, e.g. through ``torch._dynamo`` when torchvision or timm
are first imported, which LiteMedSAM's loader does) after Mesa's ``libLLVM`` is in the process crashes
it (segmentation fault: two LLVMs). That is the case under Xvfb and software rendering (llvmpipe) and
with Mesa's LLVM-based GPU drivers. Nothing here needs Triton (it serves ``torch.compile``), so in
that case it is marked unavailable (``sys.modules["triton"] = None``: its import raises ImportError,
which torch treats as "not installed"). A process that imported Triton before the canvas existed,
or whose OpenGL does not use Mesa's LLVM, is left alone. Called where Triton could first be imported:
the widget's start, LiteMedSAM's loader and the start of training (every torch optimizer imports
torch._dynamo), so a notebook that shows a viewer and calls the core is protected too.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def llvm_loaded(maps_path: str = "/proc/self/maps") -> bool:
    """True when a shared ``libLLVM`` (Mesa's) is mapped into this process (Linux; False elsewhere)."""
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as handle:
            return any("libLLVM" in line for line in handle)
    except OSError:
        return False


def keep_triton_out(maps_path: str = "/proc/self/maps") -> bool:
    """Mark Triton unavailable when importing it now would crash the process; True when it did so."""
    if "triton" in sys.modules or not llvm_loaded(maps_path):
        return False
    sys.modules["triton"] = None
    logger.info("Triton is kept out of this napari process: the OpenGL driver's LLVM is loaded and the two clash.")
    return True
