"""Fine-tune "calibrate" (core/calibration.py): a per-class offset on the coarse scores, chosen leave one out on
the signed slices; nothing with one signed slice of a class; saved like the other adapted parts; Reset removes it."""

import numpy as np
import pytest

from napari_fewshot.core import FewShotSegmenter, FineTuneParams, SegmentationParams, run
from napari_fewshot.core.calibration import Calibration, calibrate, choose_offset, held_out_scores, offset_grid
from test_fine_tune_cheap import liver_crop


def test_the_grid_puts_zero_first_and_the_smaller_offsets_before_the_larger():
    grid = offset_grid(0.02, 0.01)
    assert list(np.round(grid, 6)) == [0.0, -0.01, 0.01, -0.02, 0.02]


def test_a_known_offset_is_recovered_from_constructed_margins():
    rng = np.random.default_rng(0)
    truth = [rng.normal(0, 0.05, 4000) for _ in range(3)]  # the class is where the true margin is > 0
    positives = [t > 0 for t in truth]
    grid = offset_grid(0.06, 0.005)
    for objective in ("pooled", "mean"):
        for bias in (-0.03, 0.0, 0.02):  # the class's score is off by `bias` everywhere
            offset, before, after = choose_offset([t + bias for t in truth], positives, grid, objective)
            assert offset == pytest.approx(-bias, abs=0.0051)
            assert after >= before and (after == 1.0 if bias == 0 else after > before)


def test_the_mean_objective_weighs_an_empty_slice_like_a_full_one():
    # slice 1: 11 class pixels, 10 of them just below the decision (-0.04); slice 2: empty, one pixel at -0.02
    margins = [np.array([-0.04] * 10 + [0.1]), np.array([-0.02])]
    positives = [np.ones(11, bool), np.zeros(1, bool)]
    grid = offset_grid(0.05, 0.01)
    assert choose_offset(margins, positives, grid, "pooled")[0] == pytest.approx(0.05)  # 22/23 pooled
    offset, before, after = choose_offset(margins, positives, grid, "mean")
    assert offset == 0.0 and after == pytest.approx((2 / 12 + 1) / 2)  # +0.05 would give the empty slice Dice 0


def test_ties_keep_no_offset():
    margins = [np.array([-0.5, -0.4, 0.4, 0.5])]  # every offset within +-0.3 gives Dice 1
    offset, before, after = choose_offset(margins, [np.array([False, False, True, True])], offset_grid(0.3, 0.01))
    assert (offset, before, after) == (0.0, 1.0, 1.0)


@pytest.fixture()
def liver(chaos_case):
    return liver_crop(chaos_case, 10, [2, 5, 8])


def test_the_held_out_calibration_recovers_a_bias_added_to_the_class_scores(liver):
    segmenter, support = liver
    support_set = segmenter.parse_support(support)
    run(segmenter.cache.compute(support_set.slice_indices))
    scores = held_out_scores(segmenter, support_set, segmenter._groups(support_set))
    assert sorted(scores) == [2, 5, 8] and scores[2].shape == (2, *support.shape[1:])
    plain = calibrate(scores, support_set, 0.2, 0.005, 0.0).offsets[1]
    for bias in (-0.04, 0.03):
        biased = {s: sc + np.array([0.0, bias], np.float32)[:, None, None] for s, sc in scores.items()}
        assert calibrate(biased, support_set, 0.2, 0.005, 0.0).offsets[1] == pytest.approx(plain - bias, abs=0.0051)
    shrunk = calibrate({s: sc + np.array([0.0, -0.04], np.float32)[:, None, None] for s, sc in scores.items()},
                       support_set, 0.2, 0.005, 3.0)
    assert shrunk.shown == {1: 3} and shrunk.offsets[1] == pytest.approx((plain + 0.04) * 3 / 6, abs=0.003)


def test_one_signed_slice_of_a_class_calibrates_nothing_and_says_so(liver):
    segmenter, support = liver
    one = np.zeros_like(support)
    one[5] = support[5]
    before = run(segmenter.segment(one)).labels
    run(segmenter.fine_tune(one, FineTuneParams(method="calibrate"), empty_slices=[0]))
    assert segmenter.adaptation.calibration is None and not segmenter.is_fine_tuned
    assert "label 1 0.000 (needs 2 signed)" in segmenter.adaptation.summary
    assert "on 2 signed slices" in segmenter.adaptation.summary  # the empty slice is signed too
    assert np.array_equal(run(segmenter.segment(one)).labels, before)


def test_an_offset_moves_the_labels_is_saved_like_the_adapter_and_reset_removes_it(liver):
    segmenter, support = liver
    before = run(segmenter.segment(support)).labels
    segmenter.adaptation.calibration = Calibration({1: 0.1}, {1: 3})
    assert segmenter.is_fine_tuned
    grown = run(segmenter.segment(support)).labels
    assert (grown == 1).sum() > (before == 1).sum()  # a higher liver score: more liver, before any clean-up
    arrays = segmenter.adaptation.arrays()
    assert set(arrays) == {"calibration/1"} and arrays["calibration/1"].tolist() == pytest.approx([0.1])
    other = FewShotSegmenter(SegmentationParams(input_size=128))
    other.set_image(np.asarray(segmenter.cache.stack.slice(0))[None].repeat(2, 0))
    other.adaptation.load_arrays(other, arrays, tag="bank")
    assert other.adaptation.calibration.offsets == {1: pytest.approx(0.1)}
    assert "class offsets" in other.adaptation.summary
    from napari_fewshot.plugin.fine_tuning import reset_message

    assert reset_message(segmenter) == "Reset: the class offsets are removed."
    segmenter.reset_weights()
    assert segmenter.adaptation.calibration is None and not segmenter.is_fine_tuned
    assert reset_message(segmenter) == "Nothing was fine-tuned."
    assert np.array_equal(run(segmenter.segment(support)).labels, before)


def test_fine_tune_calibrate_runs_in_seconds_and_says_what_it_chose(liver):
    segmenter, support = liver
    run(segmenter.segment(support))
    losses = run(segmenter.fine_tune(support, FineTuneParams(method="calibrate")))
    summary = segmenter.adaptation.summary
    assert summary.startswith("Calibrated label 1 ") and "on 3 signed slices in" in summary
    assert len(losses) == 1 and 0 <= losses[0] <= 1  # the held-out Dice with the chosen offset
    assert segmenter.adaptation.seconds < 30


def test_a_bank_file_keeps_the_offsets_and_applying_it_restores_them(liver, tmp_path):
    from napari_fewshot.core.bank import PrototypeBank
    from napari_fewshot.core.bank_format import read_bank

    segmenter, support = liver
    segmenter.adaptation.calibration = Calibration({1: -0.02}, {1: 3})
    path = PrototypeBank.from_segmenter(segmenter, support).save(tmp_path / "calibrated.fewshot")
    assert read_bank(path)[1]["calibration/1"].tolist() == pytest.approx([-0.02])
    loaded = PrototypeBank.load(path)
    fresh = FewShotSegmenter(loaded.segmentation_params("cpu"))
    fresh.set_image(np.asarray([segmenter.cache.stack.slice(i) for i in range(len(segmenter.cache.stack))]))
    loaded.prepare(fresh)
    assert fresh.adaptation.calibration.offsets == {1: pytest.approx(-0.02)}
    assert fresh.adaptation.offsets_for([1]).tolist() == pytest.approx([0.0, -0.02])
