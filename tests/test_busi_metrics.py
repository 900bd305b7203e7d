"""The localisation figures of `evaluate busi` (hit, Dice on hits, false positives on misses), on hand-made
masks whose answers are known."""

import numpy as np
import pytest

from napari_fewshot.evaluation.busi import localisation, localisation_summary


def _square(shape, top, left, side):
    mask = np.zeros(shape, bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_a_prediction_on_the_lesion_is_a_hit():
    truth = _square((50, 60), 10, 10, 10)
    found = localisation(_square((50, 60), 12, 12, 10), truth)
    assert found["hit"] is True
    assert found["dice"] == pytest.approx(2 * 64 / 200)
    assert found["false_positive_px"] == 100 - 64


def test_the_largest_component_decides_a_hit():
    truth = _square((50, 60), 10, 10, 10)
    shadow = _square((50, 60), 30, 30, 15)  # 225 px elsewhere: the largest component misses the lesion
    found = localisation(truth | shadow, truth)
    assert found["hit"] is False
    assert found["false_positive_px"] == 225
    assert localisation(_square((50, 60), 10, 10, 10) | _square((50, 60), 40, 50, 3), truth)["hit"] is True


def test_an_empty_prediction_is_a_miss_without_false_positives():
    truth = _square((20, 20), 5, 5, 5)
    assert localisation(np.zeros((20, 20), bool), truth) == {"dice": 0.0, "hit": False, "false_positive_px": 0}


def test_summary_separates_finding_from_drawing():
    rows = [{"dice": 0.8, "hit": True, "false_positive_px": 10}, {"dice": 0.6, "hit": True, "false_positive_px": 30},
            {"dice": 0.0, "hit": False, "false_positive_px": 500}, {"dice": 0.1, "hit": False, "false_positive_px": 300}]
    summary = localisation_summary(rows)
    assert summary["hit_rate"] == 0.5
    assert summary["dice_on_hits"] == pytest.approx(0.7)
    assert summary["false_positive_px"] == 400
    assert localisation_summary(rows[:2])["false_positive_px"] == 0.0
    assert localisation_summary(rows[2:])["dice_on_hits"] is None
