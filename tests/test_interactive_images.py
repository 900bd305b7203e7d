"""The simulated box-correction loop on an image set (evaluation/interactive_images.py): seeded drags around
the reference lesion, turned into masks by the box tool's own code, each boxed image becoming support."""

import json
import random

import numpy as np
import pytest
from shared_data import BUSI, require

from napari_fewshot.cli import main
from napari_fewshot.core import RefineParams, SegmentationParams
from napari_fewshot.core.sam_prompt import box_of
from napari_fewshot.evaluation.interactive_images import (dragged_box, evaluate_busi_boxes, ranking_quality,
                                                          unboxed_changes)


def test_a_drag_is_the_lesion_box_with_its_margin_and_a_seeded_jitter_of_at_most_five_pixels():
    mask = np.zeros((100, 120), bool)
    mask[30:60, 40:90] = True
    exact = box_of(mask, 0.1)
    drags = [dragged_box(mask, random.Random(7)) for _ in range(2)]
    np.testing.assert_array_equal(drags[0], drags[1])  # seeded
    many = np.array([dragged_box(mask, rng) for rng in [random.Random(1)] for _ in range(200)])
    assert np.abs(many - exact).max() <= 5 and np.abs(many - exact).max() >= 4  # the whole +-5 px is used
    np.testing.assert_allclose(np.round(many - exact), many - exact)  # whole pixels
    with pytest.raises(Exception, match="without a reference lesion"):
        dragged_box(np.zeros((10, 10), bool), random.Random(0))


def test_ranking_quality_counts_the_worst_among_the_first_proposed():
    errors = {0: 0.9, 1: 0.1, 2: 0.8, 3: 0.2, 4: 0.7}
    assert ranking_quality(errors, errors) == {"spearman": pytest.approx(1.0), "worst_in_first": 3, "k": 3}
    backwards = {i: -e for i, e in errors.items()}
    quality = ranking_quality(backwards, errors)
    assert quality["spearman"] == pytest.approx(-1.0) and quality["worst_in_first"] == 1  # image 4 is in both threes
    assert ranking_quality({0: 1.0}, errors)["spearman"] is None


def test_what_a_new_box_did_to_the_images_nobody_boxed():
    """a boxed first; b boxed after the first segmentation; c and d untouched: c fell by 0.3, d rose by 0.05."""
    per_image = [{"a": 0.9, "b": 0.1, "c": 0.8, "d": 0.5}, {"a": 0.9, "b": 0.95, "c": 0.5, "d": 0.55}]
    changes = unboxed_changes(per_image, ["a"], ["b", "c"], [1, 2])
    assert changes == {"2": {"mean_change": pytest.approx(-0.125), "fell": 1, "rose": 0}}


def test_five_busi_images_two_boxed_then_two_rounds_of_check_next_and_a_box():
    busi = require(BUSI)
    params = SegmentationParams(device="cpu", refine=RefineParams(enabled=False))  # quicker; boxes still LiteMedSAM
    report = evaluate_busi_boxes(busi, rounds=2, shots=2, images=5, seed=3, params=params)
    curve = report["dice_per_drag"]
    assert list(curve) == ["2", "3", "4"]  # two boxed first, then one drag per round
    names = report["config"]["images_drawn"]
    boxed_first = set(names[:2])
    picked = [p["image"] for p in report["picked"]]
    assert len(picked) == 2 and len(set(picked)) == 2 and not boxed_first & set(picked)
    assert all(p["rank_of_error"] >= 1 for p in report["picked"])
    # a box replaces a prediction by LiteMedSAM's mask of the lesion: the mean over the 5 images goes up
    assert curve["4"] > curve["2"]
    assert 0.8 <= report["box_every_image"] <= 1.0  # boxing every image: the baseline without the model
    reached = [int(d) for d, v in curve.items() if v >= 0.85]
    assert report["noc_85"] == (reached[0] if reached else None)
    assert len(report["ranking_per_round"]) == 3 and report["ranking_per_round"][-1]["k"] == 1
    assert list(report["dice_per_image"]) == ["2", "3", "4"] and list(report["unboxed_changes"]) == ["3", "4"]
    assert all(np.mean(list(report["dice_per_image"][d].values())) == pytest.approx(curve[d], abs=1e-3) for d in curve)


def test_a_proposed_image_already_right_is_accepted_with_a_click_not_a_drag():
    """accept_above 0: every image Check next proposes is signed as predicted (Shift+A). The drag count stays at
    the two first boxes, each segmentation is keyed "2+Na", the accepted image keeps its predicted Dice, and
    noc_85 counts drags only."""
    busi = require(BUSI)
    params = SegmentationParams(device="cpu", refine=RefineParams(enabled=False))
    report = evaluate_busi_boxes(busi, rounds=2, shots=2, images=5, seed=3, params=params, accept_above=0.0)
    assert list(report["dice_per_drag"]) == ["2", "2+1a", "2+2a"]
    assert [p["accepted"] for p in report["picked"]] == [True, True]
    for n, pick in enumerate(report["picked"]):  # signed as it was predicted: its Dice does not move
        key = list(report["dice_per_image"])[n + 1]
        assert report["dice_per_image"][key][pick["image"]] == pytest.approx(pick["dice_before"], abs=1e-4)
    reached = [n for n, v in enumerate(report["dice_per_drag"].values()) if v >= 0.85]
    assert report["noc_85"] == (2 if reached else None)  # drags only: the two first boxes
    assert report["accepts"] == (reached[0] if reached else None)  # round n has accepted n images
    assert report["config"]["accept_above"] == 0.0 and 0.8 <= report["box_every_image"] <= 1.0


def test_cli_box_correction_and_its_bad_flags(tmp_path, capsys):
    busi = require(BUSI)
    assert main(["evaluate", "busi", str(busi), "--protocol", "episodes", "--shots", "2", "--accept-above", "0.9",
                 "--json", str(tmp_path / "x.json")]) == 2
    assert "--accept-above only applies to --protocol interactive --correct box" in capsys.readouterr().err
    assert main(["evaluate", "busi", str(busi), "--protocol", "episodes", "--shots", "2", "--correct", "box",
                 "--json", str(tmp_path / "x.json")]) == 2
    assert "--correct box only applies to --protocol interactive" in capsys.readouterr().err
    assert main(["evaluate", "busi", str(busi), "--protocol", "interactive", "--correct", "box", "--images", "4",
                 "--shots", "2", "--rounds", "3", "--json", str(tmp_path / "x.json")]) == 2
    assert "--rounds 3 is more than the 2 images left to box" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    out = tmp_path / "box.json"
    assert main(["evaluate", "busi", str(busi), "--protocol", "interactive", "--correct", "box", "--images", "4",
                 "--shots", "3", "--rounds", "1", "--seed", "5", "--device", "cpu", "--no-refine",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["correct"] == "box" and list(report["dice_per_drag"]) == ["3", "4"]
    assert "NoC@0.85" in capsys.readouterr().out
