"""The number format of the prototype matching's products: bfloat16, int8 or float32, from the CPU's flags.

bfloat16 where the hardware computes it natively (CUDA; x86 CPUs with AVX512-BF16 or AMX), else int8 where the
CPU has VNNI (``avx512_vnni`` or ``avx_vnni``: int8 products accumulated in int32, ~1.5-2x float32's speed on such
CPUs), else float32. Decided from the CPU's flags, never from a timing, so the same machine always gives the same
labels. The environment variable ``NAPARI_FEWSHOT_MATMUL`` (``float32``, ``int8``, ``bfloat16``; empty or
``auto``: the flags decide) forces one, e.g. float32 for a researcher comparing machines; int8 applies to the CPU
only (another device keeps its own). It changes the matching only, never the features (the encoder's bfloat16
autocast follows the flags alone: :func:`native_bfloat16`).

int8 cells are stored *packed*: a query cell is one row of (C + 4) int8, its C values quantised symmetrically
(scale = max |x| / 127, round to nearest) followed by the 4 bytes of its float32 scale. Stacking, splitting and
picking rows of such a tensor (core/matching.py, core/bounded.py) then move each cell's scale with it, and the
MatchCache's query budget counts the scale's bytes. Prototypes are quantised with one scale per group
(:func:`quantise_group`), so a class's best match is the maximum of exact int32 products, scaled afterwards by a
positive number per row (monotone: the maximum of the scaled values is the scaled maximum).
"""

from __future__ import annotations

import functools
import os

import torch

from ..errors import FewShotError

ENV = "NAPARI_FEWSHOT_MATMUL"
CHOICES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
_SCALE_BYTES = 4  # a packed row's float32 scale


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=4)
def native_dtype(device_type: str, flags: frozenset[str] | None = None) -> torch.dtype:
    """The matching's products on `device_type` from the hardware alone: bfloat16 where native (CUDA; CPUs with
    AVX512-BF16 or AMX), int8 on CPUs with VNNI, else float32. flags: the CPU's (default: :func:`cpu_flags`)."""
    if device_type == "cuda":
        return torch.bfloat16
    if device_type != "cpu":
        return torch.float32
    flags = cpu_flags() if flags is None else flags
    if flags & {"avx512_bf16", "amx_bf16"}:
        return torch.bfloat16
    if flags & {"avx512_vnni", "avx_vnni"}:
        return torch.int8
    return torch.float32


def native_bfloat16(device_type: str) -> bool:
    """Whether `device_type` computes bfloat16 natively (the encoder's autocast; not changed by ``ENV``)."""
    return native_dtype(device_type) == torch.bfloat16


def matmul_dtype(device_type: str) -> torch.dtype:
    """torch.bfloat16, torch.int8 or torch.float32: the matching's products on `device_type` (module docstring)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("", "auto"):
        return native_dtype(device_type)
    if forced not in CHOICES:
        raise FewShotError(f"{ENV}={forced!r} is not a matching precision; use one of auto, {', '.join(CHOICES)}.")
    if forced == "int8" and device_type != "cpu":
        return native_dtype(device_type)
    return CHOICES[forced]


def quantise_rows(rows: torch.Tensor) -> torch.Tensor:
    """(N, C) float rows -> (N, C + 4) int8 packed rows (module docstring): values round(x / s) in -127..127 with
    s = max |x| / 127 per row (a zero row keeps s = 0 and zeros), then s's 4 bytes."""
    rows = rows.float()
    scale = rows.abs().amax(1) / 127.0
    values = torch.round(rows / scale.clamp_min(1e-30)[:, None]).clamp_(-127, 127).to(torch.int8)
    return torch.cat([values, scale[:, None].contiguous().view(torch.int8)], 1)


def unpack_rows(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C + 4) packed int8 rows -> (values (N, C) int8, a view; scales (N,) float32)."""
    c = packed.shape[1] - _SCALE_BYTES
    return packed[:, :c], packed[:, c:].contiguous().view(torch.float32)[:, 0]


def dequantise_rows(packed: torch.Tensor) -> torch.Tensor:
    """(N, C + 4) packed int8 rows -> (N, C) float32 (values x scale)."""
    values, scale = unpack_rows(packed)
    return values.float() * scale[:, None]


def quantise_group(vectors: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(P, C) float prototypes -> ((C, P) int8 for torch._int_mm, the group's one scale max |x| / 127)."""
    vectors = vectors.float()
    scale = float(vectors.abs().max()) / 127.0 if vectors.numel() else 1.0
    scale = scale or 1.0
    values = torch.round(vectors / scale).clamp_(-127, 127).to(torch.int8)
    return values.T.contiguous(), scale


def int8_products(values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """(N, C) int8 query values @ (C, P) int8 prototypes -> (N, P) int32, exact (|sum| <= C x 127², no overflow)."""
    if values.shape[0] == 0 or columns.shape[1] == 0:
        return torch.zeros(values.shape[0], columns.shape[1], dtype=torch.int32)
    return torch._int_mm(values, columns)
