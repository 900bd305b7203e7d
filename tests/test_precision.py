"""The matching's precision (core/precision.py): chosen from the CPU's flags (bfloat16 where native, int8 with VNNI,
else float32), forced by NAPARI_FEWSHOT_MATMUL, never the encoder's; int8 products exact, so a subset of classes
(core/bounded.py) gives the full product's values bit for bit. Runs on any CPU (int8 forced where needed)."""

import pytest
import torch
import torch.nn.functional as F

from napari_fewshot.core import precision
from napari_fewshot.core.bounded import _rows, _subset
from napari_fewshot.core.devices import native_autocast
from napari_fewshot.core.matching import MatchCache, PrototypeGroup, _Prepared, group_similarity, query_cells
from napari_fewshot.errors import FewShotError


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_bf16", "avx512_vnni"}, torch.bfloat16),  # bfloat16 first where native
    ({"amx_bf16"}, torch.bfloat16),
    ({"avx512f", "avx512_vnni"}, torch.int8),  # this project's session-16 CPU; most recent laptops: avx_vnni
    ({"avx2", "avx_vnni"}, torch.int8),
    ({"avx2", "fma"}, torch.float32),
    (set(), torch.float32),  # no /proc/cpuinfo (macOS, Windows)
])
def test_the_precision_follows_the_cpus_flags(flags, expected):
    assert precision.native_dtype("cpu", frozenset(flags)) == expected
    assert precision.native_dtype("cuda", frozenset(flags)) == torch.bfloat16
    assert precision.native_dtype("mps", frozenset(flags)) == torch.float32


def test_the_environment_forces_a_precision_but_not_the_encoders_autocast(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_vnni"})
    precision.native_dtype.cache_clear()
    try:
        monkeypatch.delenv(precision.ENV, raising=False)
        assert precision.matmul_dtype("cpu") == torch.int8
        monkeypatch.setenv(precision.ENV, "float32")
        assert precision.matmul_dtype("cpu") == torch.float32
        assert precision.matmul_dtype("cuda") == torch.float32
        monkeypatch.setenv(precision.ENV, " INT8 ")
        assert precision.matmul_dtype("cpu") == torch.int8
        assert precision.matmul_dtype("cuda") == torch.bfloat16  # int8 is for CPUs: a GPU keeps its own
        monkeypatch.setenv(precision.ENV, "bfloat16")
        assert precision.matmul_dtype("cpu") == torch.bfloat16
        assert not native_autocast("cpu")._enabled  # the features never change with the variable
        monkeypatch.setenv(precision.ENV, "fp8")
        with pytest.raises(FewShotError, match="not a matching precision"):
            precision.matmul_dtype("cpu")
    finally:
        precision.native_dtype.cache_clear()


def test_packed_rows_carry_their_scale():
    torch.manual_seed(0)
    rows = F.normalize(torch.randn(50, 64), dim=1)
    rows[7] = 0  # a cell with no signal keeps zeros
    packed = precision.quantise_rows(rows)
    assert packed.dtype == torch.int8 and packed.shape == (50, 68)
    values, scale = precision.unpack_rows(packed)
    assert values.abs().max() == 127 and scale[7] == 0 and (values[7] == 0).all()
    assert torch.allclose(scale, rows.abs().amax(1) / 127)
    error = (precision.dequantise_rows(packed) - rows).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()  # round to nearest
    picked = packed[[3, 9, 11]]  # rows moved anywhere keep their own scale
    assert torch.equal(precision.unpack_rows(picked)[1], scale[[3, 9, 11]])


def test_int8_similarity_is_close_to_float32_and_a_class_subset_is_bit_for_bit_the_full_product():
    torch.manual_seed(1)
    n_classes, c = 2, 96
    owner = torch.tensor([0] * 300 + [1] * 20 + [2] * 7)
    group = PrototypeGroup.make("g", torch.randn(len(owner), c).relu() + 0.1, owner, n_classes)
    features = torch.randn(c, 12, 10).relu()
    exact = group_similarity(query_cells(features, torch.float32), group)
    cells = query_cells(features, torch.int8)
    assert cells.shape == (120, c + 4)
    int8 = group_similarity(cells, group)
    assert int8.shape == exact.shape == (3, 120) and int8.dtype == torch.float32
    assert (int8 - exact).abs().max() < 1.5e-2  # random 96-d cells (7e-3 here); the CT sample: test_fast_matching
    prepared = _Prepared(group, cells.device, torch.int8)
    full = prepared.best(cells)
    for classes in ([1, 2], [0], [2]):
        part = _subset(prepared, classes).best(*_rows([cells[:50], cells[50:]]))
        for k in classes:
            assert torch.equal(part[k], full[k])  # the same int32 products, the same scale: the same bits
    picks = [torch.arange(0, 50, 3).numpy(), torch.arange(1, 70, 7).numpy()]
    rows, as_float = _rows([cells[:50], cells[50:]], picks)
    assert as_float is None
    picked = prepared.best(rows)
    assert torch.equal(picked, full[:, torch.cat([torch.as_tensor(picks[0]), 50 + torch.as_tensor(picks[1])])])


def test_the_query_budget_counts_int8_cells_with_their_scales(monkeypatch):
    monkeypatch.setenv(precision.ENV, "int8")
    features = torch.randn(32, 8, 8)
    cache = MatchCache(query_budget=64 * 36)  # 64 cells of 32 values + 4 scale bytes: exactly one slice
    cells, grid = cache._query("a", lambda: features)
    assert cells.dtype == torch.int8 and grid == (8, 8) and cache.query_nbytes == 64 * 36
    cache._query("b", lambda: features)
    assert cache.query_nbytes == 64 * 36 and "b" not in cache._queries  # over the budget: computed, not kept
