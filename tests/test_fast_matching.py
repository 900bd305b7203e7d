"""Coarse-to-fine matching (core/matching.py) against exhaustive matching, and prototype origins, on the
CT sample that ships with the package (liver and spleen painted on two slices from its reference)."""

import numpy as np
import pytest
import torch

from napari_fewshot.core import FewShotSegmenter, SegmentationParams
from napari_fewshot.core.matching import MatchCache, matmul_dtype
from napari_fewshot.core.predict import class_similarity
from napari_fewshot.core.prototypes import class_weights
from napari_fewshot.io import read_labels, read_volume
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

# Share of a real query slice's cells whose class (argmax over background, liver, spleen) must be the same with
# the correction engine's matching (per support slice, cached, bfloat16 products on CPUs that have them) as with
# exhaustive float32 matching of all prototypes at once (predict.class_similarity). bfloat16 on centred
# prototypes moves a similarity by at most ~4e-3 (asserted below), so only cells whose two best classes are
# closer than that can flip; on this slice none or a handful of its 1,920 cells are (99.9 % agree or more).
AGREEMENT = 0.995
# The matching's precisions these tests run in, forced (core/precision.py NAPARI_FEWSHOT_MATMUL) so that they run on
# every CPU, with or without VNNI; "native" is the machine's own choice (bfloat16, int8 or float32).
PRECISIONS = ("native", "float32", "int8")
TOLERANCE = {torch.bfloat16: 4e-3, torch.int8: 6e-3, torch.float32: 1e-5}  # int8: 3.8e-3 on the slice below


@pytest.fixture(params=PRECISIONS)
def precision(request, monkeypatch):
    if request.param == "native":
        monkeypatch.delenv("NAPARI_FEWSHOT_MATMUL", raising=False)
    else:
        monkeypatch.setenv("NAPARI_FEWSHOT_MATMUL", request.param)
    return matmul_dtype("cpu")


@pytest.fixture(scope="module")
def ct_sample():
    ct = read_volume(CT_IMAGE)
    reference = read_labels(CT_LABELS, like=ct)
    truth = np.where(np.isin(reference, [1, 2]), reference, 0).astype(np.uint8)
    both = [z for z in range(len(truth)) if (truth[z] == 1).any() and (truth[z] == 2).any()]
    painted = [both[len(both) // 3], both[2 * len(both) // 3]]
    support = np.zeros_like(truth)
    support[painted] = truth[painted]
    query = both[len(both) // 2]
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(ct.data)
    return segmenter, support, painted, query


def test_grouped_matching_gives_the_labels_of_exhaustive_matching(ct_sample, precision):
    segmenter, support, painted, query = ct_sample
    support_set = segmenter.parse_support(support)
    groups = segmenter._groups(support_set)
    features = segmenter.slice_features([query])[0]
    grouped = MatchCache().class_similarity(("ct", query), lambda: features, groups)
    exhaustive = class_similarity(features[None], segmenter.prototypes(support_set))[0]
    assert grouped.shape == exhaustive.shape == (3, *features.shape[-2:])
    assert (grouped - exhaustive).abs().max() <= TOLERANCE[precision]
    same = (grouped.argmax(0) == exhaustive.argmax(0)).float().mean().item()
    assert same >= AGREEMENT, f"only {same:.4f} of the cells have the exhaustive label"
    assert (exhaustive.argmax(0) > 0).any()  # the slice shows an organ, so the agreement is not all background


def test_origins_point_to_painted_cells_of_their_class(ct_sample):
    segmenter, support, painted, _ = ct_sample
    support_set = segmenter.parse_support(support)
    groups = segmenter._groups(support_set)
    assert (groups[0].origins == -1).all()  # the global prototypes are averaged over slices
    for group in groups[1:]:
        slice_index = int(group.origins[0, 0])
        assert slice_index in painted and (group.origins[:, 0] == slice_index).all()
        features = segmenter.slice_features([slice_index])[0]
        weights = class_weights(torch.from_numpy(support[slice_index]).long(), 2, tuple(features.shape[-2:]))
        ys, xs = group.origins[:, 1], group.origins[:, 2]
        owner = torch.repeat_interleave(torch.arange(3), torch.diff(torch.tensor(group.bounds)))
        assert torch.equal(weights[:, ys, xs].argmax(0), owner)  # the cell is mostly of the prototype's class
        cell_vectors = torch.nn.functional.normalize(features[:, ys, xs].T.float(), dim=1)
        assert torch.allclose(cell_vectors, group.vectors, atol=1e-5)  # and the prototype is that cell's feature
    combined = segmenter.prototypes(support_set)
    assert combined.origins.shape == (len(combined.vectors), 3)
    assert set(combined.origins[~combined.is_global, 0].tolist()) == set(painted)


def test_batched_matching_equals_slice_by_slice_and_matches_only_what_changed(ct_sample, monkeypatch, precision):
    import napari_fewshot.core.matching as matching

    segmenter, support, painted, query = ct_sample
    groups = segmenter._groups(segmenter.parse_support(support))
    slices = [z for z in range(query - 6, query + 6) if z not in painted]
    features = {z: segmenter.slice_features([z])[0] for z in slices}
    loads = [lambda z=z: features[z] for z in slices]
    one_by_one = [MatchCache().class_similarity(("ct", z), loads[n], groups) for n, z in enumerate(slices)]
    monkeypatch.setattr(matching, "_ROWS", 3 * features[slices[0]][0].numel())  # several chunks of 3 slices
    cache = MatchCache()
    batched = list(cache.class_similarities([("ct", z) for z in slices], loads, groups))
    assert len(batched) == len(slices)
    for a, b in zip(one_by_one, batched):
        assert torch.equal(a, b)  # the same products row by row: bit for bit the same maps
    keyed = len(groups) - 1  # the global group (key None) is never cached
    assert cache.misses == keyed * len(slices) and cache.hits == 0
    calls = []
    counted = [lambda z=z: calls.append(z) or features[z] for z in slices]
    again = list(cache.class_similarities([("ct", z) for z in slices], counted, groups))
    assert cache.misses == keyed * len(slices) and cache.hits == keyed * len(slices)
    assert len(calls) == 0  # query cells are kept: nothing loaded again
    assert all(torch.equal(a, b) for a, b in zip(again, batched))
    # a changed group (new key) is matched again for every slice, the unchanged ones are not
    changed = matching.PrototypeGroup("new key", groups[1].vectors.flip(0), groups[1].bounds, groups[1].origins)
    regrouped = [groups[0], changed, *groups[2:]]
    after = list(cache.class_similarities([("ct", z) for z in slices], counted, regrouped))
    assert cache.misses == (keyed + 1) * len(slices)
    # the chunks' cells were stacked once and reused (the slices' own cells are views of the stacks), and
    # the maps are bit for bit those of a cache that starts afresh
    assert len(cache._stacks) == -(-len(slices) // 3) - (len(slices) % 3 == 1)
    assert all(cache._queries[("ct", z)][0].untyped_storage().data_ptr() in
               {t.untyped_storage().data_ptr() for t in cache._stacks.values()} for z in slices[:3])
    fresh = list(MatchCache().class_similarities([("ct", z) for z in slices], loads, regrouped))
    assert all(torch.equal(a, b) for a, b in zip(after, fresh))
    # another chunking (a slice range) supersedes the stacks it overlaps: no slice's cells are kept twice
    shifted = list(cache.class_similarities([("ct", z) for z in slices[1:]], counted[1:], regrouped))
    fresh = list(MatchCache().class_similarities([("ct", z) for z in slices[1:]], loads[1:], regrouped))
    assert all(torch.equal(a, b) for a, b in zip(shifted, fresh)) and len(calls) == 0
    stacked_keys = [k for chunk in cache._stacks for k in chunk]
    assert len(stacked_keys) == len(set(stacked_keys))
