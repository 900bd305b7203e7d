"""Choosing the torch device."""

from __future__ import annotations

import torch

from ..errors import FewShotError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """Map "auto" | "cpu" | "cuda[:N]" | "mps" to an available torch.device, or explain why not."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FewShotError("Device 'cuda' was asked for but no CUDA GPU is available here; use --device cpu or auto.")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise FewShotError("Device 'mps' was asked for but Apple's Metal backend is not available here; use cpu or auto.")
        return torch.device("mps")
    raise FewShotError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def native_autocast(device: torch.device | str):
    """A context manager: bfloat16 autocast on `device` where the hardware does it natively (CUDA; x86 CPUs
    with AVX512-BF16 or AMX: core.precision.native_bfloat16, decided from the CPU's flags), else nothing (float32).

        with native_autocast("cpu"):
            out = module(x)      # bfloat16 matmuls and convolutions only where they are native
    """
    from .precision import native_bfloat16  # the one place the CPU's flags are read (and cached)

    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=native_bfloat16(device_type))
