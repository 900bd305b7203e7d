"""Where the real evaluation data lives (../shared/data beside the repository) and how tests get it.

In CI (CI set to anything but "", 0, false or no) missing data is an error, so a broken checkout never
passes by skipping; on a developer's machine without it, tests that need it are skipped with the reason.
Every test that needs the data goes through :func:`require` (directly, or through a fixture calling it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("NAPARI_FEWSHOT_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHAOS = DATA / "chaos_t2"
BUSI = DATA / "busi"
CT = DATA / "ct_totalseg"
CHAOS_NAMES = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}


def in_ci() -> bool:
    """True under a CI service (they set CI=true); CI=false or CI=0 is a developer's machine."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(path: Path) -> Path:
    """Return `path`, or skip (fail in CI) when the shared data is not there."""
    if not path.exists():
        message = f"shared test data not found at {path} (see README: tests use ../shared/data)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path
