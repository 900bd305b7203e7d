"""A bank's priors (core/bank_priors.py): where each class was, measured on its support, removes what lies
elsewhere on a scan with no paint; kept in the bank file (schema 3); banks written before them still load."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_fewshot.core import SegmentationParams, run
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.core.bank_format import read_bank, write_bank
from napari_fewshot.core.bank_priors import ClassPrior, apply_priors, class_priors, z_window
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.errors import FewShotError

MAIN_BANK = Path(__file__).resolve().parent / "data" / "bank_schema2_main.fewshot"


def body_volume(slices=20, size=64):
    """(S, H, W) CT-like HU: air everywhere, a body (soft tissue) on rows 8..55, columns 4..59, every slice."""
    volume = np.full((slices, size, size), -1000.0, np.float32)
    volume[:, 8:56, 4:60] = 40.0
    return volume


def test_measure_finds_where_the_class_was_in_the_body():
    volume = body_volume()
    stack = ImageStack(volume, "ct")
    targets = {5: np.zeros((64, 64), np.int64), 9: np.zeros((64, 64), np.int64)}
    targets[5][20:30, 10:20] = 1   # class 7 on the body's left third (x in the box about 0.17)
    targets[9][22:32, 12:22] = 1
    targets[9][40:44, 44:52] = 2   # class 3 lower right, on slice 9 only
    priors = class_priors(stack, targets, [7, 3])
    left, other = priors[7], priors[3]
    assert left.slices == 2 and other.slices == 1
    assert left.z == pytest.approx((5 / 19, 9 / 19))
    y0, y1, x0, x1 = 8, 55, 4, 59  # the box from the 1st to the 99th percentile of the body's pixels
    assert left.centre[1] == pytest.approx(((14.5 + 16.5) / 2 - x0) / (x1 - x0), abs=0.02)
    assert other.centre[0] == pytest.approx((41.5 - y0) / (y1 - y0), abs=0.02)
    assert left.area == pytest.approx(100 / (48 * 56), rel=0.01)
    assert class_priors(ImageStack([volume[0], volume[1]], "ct"), {0: targets[5]}, [7]) == {}  # 2D images: none


def test_apply_priors_removes_pieces_far_away_in_the_plane_and_along_the_body():
    volume = body_volume()
    stack = ImageStack(volume, "ct")
    prior = ClassPrior(z=(0.4, 0.6), centre=(0.4, 0.2), spread=(0.0, 0.0), area=0.05, slices=2)
    labels = np.zeros((20, 64, 64), np.uint8)
    labels[6:14, 20:30, 10:20] = 1     # where the class was (slices 6..13: z 0.32..0.68, inside the window)
    labels[6:14, 20:30, 48:56] = 1     # the other side of the body: removed
    labels[0:3, 20:30, 10:20] = 1      # the right place but far along the body: removed
    out = apply_priors(labels, [1], {1: prior}, stack, segmented=range(20))
    lo, hi = z_window(prior)
    assert lo < 6 / 19 and hi > 13 / 19
    assert out[6:14, 20:30, 10:20].all()
    assert not out[:, :, 40:].any()
    assert not out[0:3].any()
    # a plan over some slices already says where along the body: only the plane is used
    partial = apply_priors(labels, [1], {1: prior}, stack, segmented=range(0, 14))
    assert partial[0:3, 20:30, 10:20].all() and not partial[:, :, 40:].any()
    # a class without a prior is left alone
    assert np.array_equal(apply_priors(labels, [1], {}, stack, range(20)), labels)


def _tube_bank():
    """(12, 64, 64) body volume with a bright tube through every slice, painted on slices 5 and 7 only; the
    SegmentationParams used; the bank built from that paint."""
    volume = body_volume(12)
    volume[:, 20:32, 10:22] = 200.0
    volume[:, 8:56, 4:60] += np.random.default_rng(0).normal(0, 30, (12, 48, 56)).astype(np.float32)
    support = np.zeros(volume.shape, np.uint8)
    support[[5, 7], 20:32, 10:22] = 1
    params = SegmentationParams(device="cpu", input_size=64, local_grid=2)
    return volume, params, PrototypeBank.build([(volume, support)], params, class_names={1: "organ"})


def test_bank_keeps_its_priors_in_the_file_and_uses_them(tmp_path):
    volume, params, bank = _tube_bank()
    assert set(bank.priors) == {1} and bank.priors[1].slices == 2
    path = bank.save(tmp_path / "organ")
    meta, _ = read_bank(path)
    assert meta["schema_version"] == 3 and set(meta["priors"]) == {"1"}
    loaded = PrototypeBank.load(path)
    assert loaded.priors[1].z == pytest.approx(bank.priors[1].z)
    assert loaded.priors[1].centre == pytest.approx(bank.priors[1].centre)
    with_priors = loaded.segment_volume(volume, "cpu").labels == 1
    loaded.priors = None
    without = loaded.segment_volume(volume, "cpu").labels == 1
    assert without[0].any() and without[11].any()       # along the whole scan, as banks labelled it before
    lo, hi = z_window(bank.priors[1])
    kept = np.flatnonzero(with_priors.any(axis=(1, 2)))
    assert 5 in kept and 7 in kept and kept.min() >= lo * 11 and kept.max() <= hi * 11
    assert not with_priors[:, :, 32:].any()


def test_a_bank_written_by_main_before_priors_loads_and_segments():
    bank = PrototypeBank.load(MAIN_BANK)
    assert bank.schema_version == 2 and bank.priors is None
    assert bank.class_names == {1: "a", 2: "b"}
    volume = np.random.default_rng(0).normal(size=(4, 64, 64)).astype(np.float32)
    volume[:, 16:40, 8:30] += 3
    labels = bank.segment_volume(volume, "cpu").labels
    assert labels.shape == volume.shape and (labels[:, 16:40, 8:30] == 1).mean() > 0.5


@pytest.mark.parametrize("bad, message", [
    ({"9": None}, "not one of its classes"),
    ({"1": {"z": [0, 1], "centre": [0.5], "spread": [0, 0], "area": 0.1, "slices": 2}}, "centre"),
    ({"1": {"z": [0, 1e9], "centre": [0.5, 0.5], "spread": [0, 0], "area": 0.1, "slices": 2}}, "z"),
    ({"1": {"z": [0, 1], "centre": [0.5, 0.5], "spread": [0, 0], "area": 0.1, "slices": 0}}, "slice count"),
    ([1, 2], "not a record"),
])
def test_invalid_priors_are_refused(tmp_path, bad, message):
    meta, arrays = read_bank(MAIN_BANK)
    meta = dict(meta, schema_version=3, priors=bad)
    meta.pop("tensors")
    path = write_bank(tmp_path / "bad.fewshot", meta, arrays)
    with pytest.raises(FewShotError, match=message):
        read_bank(path)


def test_the_plane_boost_helps_only_a_scan_less_like_the_support_than_the_support_itself():
    from napari_fewshot.core.bank_priors import LEVEL_SPAN, boost_weights, plane_boost

    prior = ClassPrior(z=(0.4, 0.6), centre=(0.5, 0.25), spread=(0.0, 0.0), area=0.05, slices=2, level=0.8)
    BOXES = {0: (0.0, 64.0, 0.0, 64.0)}
    scores = np.zeros((2, 8, 8), np.float32)
    scores[1, :, :4] = 0.1                        # the class wins on the left half, at level 0.1 + ...
    like = {0: scores + np.array([0.0, 0.75], np.float32)[:, None, None]}      # ... 0.85: like the support
    unlike = {0: scores + np.array([0.0, 0.8 - LEVEL_SPAN - 0.1], np.float32)[:, None, None]}  # well below
    assert boost_weights(like, [prior], BOXES, (64, 64)) == [0.0]
    assert boost_weights(unlike, [prior], BOXES, (64, 64)) == [1.0]
    assert boost_weights(unlike, [None], BOXES, (64, 64)) == [0.0]
    far = {0: unlike[0].copy()}
    far[0][1, :, :4] -= 1.0  # it wins only far from its centre (the right half): that is not the organ
    far[0][1, :, 4:] += 1.0
    assert boost_weights(far, [prior], BOXES, (64, 64)) == [1.0]  # not found where it was: helped there
    boosted = plane_boost(scores, (0.0, 64.0, 0.0, 64.0), (64, 64), [prior], [1.0])
    gain = boosted[1] - scores[1]
    assert np.array_equal(boosted[0], scores[0])
    assert gain[4, 2] > 0.03 and gain[4, 2] > gain[4, 7] and gain[0, 2] < gain[4, 2]  # most at its centre
    assert ClassPrior.from_dict(prior.to_dict()) == prior


class _Recorder:
    """A refiner that keeps the label planes it was handed (slice -> (H, W) copy) and redraws each class
    `grow` pixels wider (0: redraws nothing)."""

    params = None

    def __init__(self, grow=0):
        self.seen, self.grow = {}, grow

    def refine(self, stack, labels, indices, class_ids, stop=None):
        for i in indices:
            self.seen[int(i)] = np.array(labels[i], copy=True)
            if self.grow:
                wider = ndimage.grey_dilation(labels[i], size=2 * self.grow + 1)
                labels[i] = np.where(labels[i] > 0, labels[i], wider)
        yield from ()


@pytest.mark.parametrize("later", [False, True])
def test_a_bank_refines_only_what_its_coarse_clean_up_keeps(later):
    from dataclasses import replace

    from napari_fewshot.core import FewShotSegmenter, RefineParams

    volume, params, bank = _tube_bank()
    seg = FewShotSegmenter(replace(params, refine=RefineParams(enabled=False)))
    seg.set_image(volume)
    coarse = run(bank.segment(seg))
    priors, bank.priors = bank.priors, None
    without_priors = run(bank.segment(seg))
    assert without_priors.labels[0].any() and without_priors.labels[11].any()  # raw labels along the whole scan
    bank.priors = priors
    seg.params = replace(params, refine=RefineParams(enabled=True))
    seg._refiner = recorder = _Recorder()
    result = run(seg.segment_with(bank.prototypes, priors=bank.priors, refine_later=later))
    if later:
        result = run(seg.refine_result(result))
    handed = np.stack([recorder.seen.get(i, np.zeros_like(coarse.labels[i])) for i in range(len(volume))])
    assert np.array_equal(handed, coarse.labels)  # LiteMedSAM sees what the coarse path keeps, not the raw labels
    assert np.array_equal(result.labels, coarse.labels)  # a refiner that redraws nothing changes nothing
    assert not handed[0].any() and not handed[11].any()


@pytest.mark.parametrize("later", [False, True])
def test_painted_refinement_redraws_the_cleaned_labels_and_is_not_clipped_to_the_paint_again(later):
    """The paint path hands LiteMedSAM what the coarse clean-up keeps (as a bank's does), and the clean-up
    after refinement keeps the 3D components but does not clip a redrawn slice to its neighbour nearer the
    paint again (core/finishing.py): an organ may widen away from the painted slices."""
    from dataclasses import replace

    from napari_fewshot.core import FewShotSegmenter, RefineParams

    volume, params, _ = _tube_bank()
    support = np.zeros(volume.shape, np.uint8)
    support[[5, 7], 20:32, 10:22] = 1
    seg = FewShotSegmenter(replace(params, refine=RefineParams(enabled=False)))
    seg.set_image(volume)
    coarse = run(seg.segment(support))
    seg.params = replace(params, refine=RefineParams(enabled=True))

    def refined_with(refiner):
        seg._refiner = refiner
        result = run(seg.segment(support, refine_later=later))
        return run(seg.refine_result(result)) if later else result

    result = refined_with(recorder := _Recorder())
    assert sorted(recorder.seen) == [i for i in range(12) if i not in (5, 7)]
    for i, plane in recorder.seen.items():
        assert np.array_equal(plane, coarse.labels[i])  # the cleaned coarse labels, not the raw ones
    assert np.array_equal(result.labels, coarse.labels)  # a refiner that redraws nothing changes nothing
    assert (coarse.labels[8] == 1).sum() <= 144  # coarse: clipped to the paint of slice 7 (grow 0)
    wider = refined_with(_Recorder(grow=2)).labels
    assert (coarse.labels[8] == 1).any() and (wider[8] == 1).sum() > 144  # wider than slice 7's paint: kept
    assert np.array_equal(wider[[5, 7]], support[[5, 7]])  # the paint stays as painted
