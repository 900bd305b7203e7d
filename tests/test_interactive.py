"""The interactive protocol (evaluation/interactive.py): pick rules and NoC on synthetic arrays, the
correction loop with a stand-in segmenter, one real CHAOS task and the CLI."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from napari_fewshot.cli import main
from napari_fewshot.core import dice
from napari_fewshot.errors import FewShotError
from napari_fewshot.evaluation.interactive import (
    _volume_task,
    errors_per_slice,
    evaluate_volumes_interactive,
    noc,
    noc_per_case,
    pick_suggested,
    pick_uniform,
    pick_worst,
)

from shared_data import CHAOS, require

REPORT_KEYS = {"dice_mean", "dice_per_class", "cases", "seconds", "config", "dice_per_round", "noc_90"}


# -- rules on plain arrays --------------------------------------------------------------------------
def test_uniform_takes_the_middle_of_the_largest_gap():
    assert pick_uniform(41, [20]) == 10  # gaps 0-20 and 20-40 tie: the lower one
    assert pick_uniform(41, [20, 10]) == 30
    assert pick_uniform(41, [10, 20, 30]) == 5
    assert pick_uniform(41, [3]) == 21  # 3-40 is the largest gap
    assert pick_uniform(3, [1]) == 0  # gaps of one slice: their lower end
    assert pick_uniform(2, [0]) == 1  # no undrawn midpoint left: the farthest undrawn slice
    with pytest.raises(FewShotError):
        pick_uniform(2, [0, 1])


def test_worst_and_suggested_picks_among_the_candidates():
    errors = np.array([50, 0, 7, 30, 7])
    assert pick_worst(errors, [1, 2, 3, 4]) == 3  # slice 0 has more errors but is drawn already
    assert pick_worst(errors, [2, 4]) == 2  # ties: the first candidate
    seen = {}

    def check_order(exclude=()):
        seen["exclude"] = list(exclude)
        return [z for z in (4, 0, 2, 1, 3) if z not in exclude]

    result = SimpleNamespace(check_order=check_order)
    assert pick_suggested(result, [1, 2, 3, 4], drawn=[0]) == 4
    assert seen["exclude"] == [0]
    assert pick_suggested(result, [1, 2, 3], drawn=[0, 4]) == 2
    with pytest.raises(FewShotError, match="check_order"):
        pick_suggested(SimpleNamespace(), [1], drawn=[0])


def test_noc_counts_corrections_until_the_threshold():
    assert noc([0.7, 0.85, 0.91, 0.95]) == 2
    assert noc([0.92]) == 0
    assert noc([0.5, 0.89]) is None
    assert noc_per_case([0.5, 0.89, 0.895], rounds=2) == 2  # never reached: counts as `rounds`
    assert noc_per_case([0.5, 0.95, 0.8], rounds=2) == 1  # the first time it is reached
    assert list(errors_per_slice(np.array([[[1, 0]], [[1, 1]]], bool), np.array([[[1, 1]], [[1, 1]]], bool))) == [1, 0]


# -- the correction loop with a stand-in segmenter --------------------------------------------------
class NearestSlice:
    """Segments each slice as the nearest painted slice's mask (a caricature of propagation) and ranks
    slices by their distance to the paint, which is what it gets wrong."""

    def segment(self, support, empty_slices=()):
        self.empty = list(empty_slices)
        painted = np.flatnonzero(support.reshape(len(support), -1).any(1))
        labels = support[painted[np.argmin(abs(np.arange(len(support))[:, None] - painted[None]), axis=1)]]

        def check_order(exclude=()):
            distance = np.min(abs(np.arange(len(support))[:, None] - painted[None]), axis=1)
            return [int(z) for z in np.argsort(-distance, kind="stable") if z not in set(exclude)]

        yield from ()
        return SimpleNamespace(labels=labels.astype(np.uint8), check_order=check_order)


def _organ(n=24):
    """An organ whose cross-section grows and shrinks over slices 4..19; slices 0-3 and 20-23 are empty."""
    reference = np.zeros((n, 32, 32), bool)
    for z in range(4, 20):
        r = 3 + min(z - 4, 19 - z)
        reference[z, 16 - r:16 + r, 16 - r:16 + r] = True
    return reference


@pytest.mark.parametrize("pick", ["worst", "uniform", "suggested"])
def test_the_loop_corrects_new_slices_and_signs_them(pick):
    reference = _organ()
    segmenter = NearestSlice()
    row = _volume_task(segmenter, reference, [12], rounds=4, pick=pick)
    assert len(row["dice_per_round"]) == len(row["dice_per_round_uncorrected"]) == 5
    assert len(set(row["corrected"])) == 4 and 12 not in row["corrected"]
    assert row["dice_per_round"][-1] == row["dice"]
    assert row["noc_90"] == noc_per_case(row["dice_per_round"], 4)
    if pick == "worst":
        # Correcting the worst slice never lowers this segmenter's whole-volume Dice.
        assert np.all(np.diff(row["dice_per_round"]) >= 0)
        assert all(picked == worst for picked, worst in row["picked_vs_worst_errors"])
    if pick == "uniform":
        assert row["corrected"] == [6, 17, 3, 9]  # gaps 0|12|23, then 12-23, then the lowest of the ties
        # slice 3 has no organ: the correction reaches the segmenter as an empty (background-only) support slice
        assert row["corrected_empty"] == [3] and segmenter.empty == [3]
    # Round 0 with this segmenter: every slice is the painted middle one.
    assert row["dice_per_round"][0] == pytest.approx(dice(np.broadcast_to(reference[12], reference.shape), reference))


# -- real data ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chaos1")
    for kind in ("image", "label"):
        os.symlink(require(CHAOS) / f"{kind}_1.nii.gz", folder / f"{kind}_1.nii.gz")
    return folder


def test_worst_corrections_on_a_real_chaos_case(chaos_folder):
    from napari_fewshot.core import SegmentationParams

    report = evaluate_volumes_interactive(chaos_folder, rounds=2, pick="worst", classes={2: "kidney_right"},
                                          params=SegmentationParams(device="cpu"))
    assert REPORT_KEYS | {"noc_90_mean", "dice_per_round_uncorrected"} <= set(report)
    curve = report["dice_per_round"]
    assert len(curve) == 3 and list(report["dice_per_class"]) == ["kidney_right"]
    assert min(curve[1:]) >= curve[0] - 0.01, curve
    row = report["cases"][0]
    assert len(row["corrected"]) == 2 and row["support_slices"][0] not in row["corrected"]
    assert report["config"]["protocol"] == "interactive" and report["config"]["pick"] == "worst"


def test_cli_interactive_busi_and_bad_flags(tmp_path, busi_layout, capsys):
    """The interactive protocol on PNG slices in BUSI's layout (conftest.busi_layout)."""
    out = tmp_path / "busi.json"
    assert main(["evaluate", "busi", str(busi_layout), "--protocol", "interactive", "--images", "6", "--shots", "3",
                 "--rounds", "2", "--pick", "uniform", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert REPORT_KEYS <= set(report)
    assert len(report["dice_per_round"]) == 3 and len(report["cases"]) == 3  # the 3 unpainted of 6
    # uniform corrects the unpainted images in draw order; corrected images are signed as drawn (Dice 1)
    assert report["corrected"] == [c["case"] for c in report["cases"][:2]]
    assert all(c["dice_per_round"][-1] == 1.0 for c in report["cases"][:2])
    assert "Dice per round (uniform)" in capsys.readouterr().out
    for argv, message in [
        (["--protocol", "interactive", "--pick", "best"], "Unknown --pick 'best'"),
        (["--protocol", "interactive", "--rounds", "-1"], "--rounds must be 0 or more"),
        (["--rounds", "2", "--shots", "2"], "--rounds only applies to --protocol interactive"),
        ([], "needs --shots"),
        (["--protocol", "interactive", "--episodes", "3"], "--episodes only applies"),
    ]:
        assert main(["evaluate", "busi", str(busi_layout), *argv, "--json", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
