"""Provenance (core/provenance.py): which painted cell a prediction looks like, on the CT sample.

The known answer: one class painted on two slices, over the liver on one and over the left kidney on the other
(scribble mode, the body outside the organs painted background, other organs left unpainted, so neither organ
is background anywhere). A predicted liver pixel can only look like the liver cells, a predicted kidney pixel
like the kidney cells. (Liver and spleen, of nearly the same density and texture here, were the first pair: on the
centred feature grid (SegmentationParams.feature_grid) a cell describes its own tissue rather than the context
up-left of it, and the two organs' cells are too alike there for a known answer.)
"""

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_fewshot.cli import main
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run
from napari_fewshot.core.provenance import NO_SLICE, OTHER_SCAN, bank_source, cell_of, explained_share
from napari_fewshot.errors import FewShotError
from napari_fewshot.io import read_labels, read_volume, write_mask
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

LIVER, KIDNEY = 1, 4  # in the CT sample's reference (4: the left kidney, slices 72-104)
LIVER_SLICE, KIDNEY_SLICE = 100, 88  # each organ near its largest; the other one, where present, unpainted
BACKGROUND = 9  # scribble mode's background label
QUERIES = list(range(70, 112, 4))  # every 4th slice where the organs are (quick on 2 cores)


@pytest.fixture(scope="module")
def ct():
    volume = read_volume(CT_IMAGE)
    return volume, read_labels(CT_LABELS, like=volume)


@pytest.fixture(scope="module")
def two_textures(ct):
    """(segmenter, support, result): label 1 painted over the liver of LIVER_SLICE and the left kidney of
    KIDNEY_SLICE, the body outside the organs painted background on both."""
    volume, reference = ct
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", support_mode="scribble", background_label=BACKGROUND))
    segmenter.set_image(volume.data)
    support = np.zeros(reference.shape, np.uint8)
    support[LIVER_SLICE][reference[LIVER_SLICE] == LIVER] = 1
    support[KIDNEY_SLICE][reference[KIDNEY_SLICE] == KIDNEY] = 1
    for z in (LIVER_SLICE, KIDNEY_SLICE):
        support[z][reference[z] == 0] = BACKGROUND
    return segmenter, support, run(segmenter.segment(support, indices=QUERIES))


def test_each_texture_is_explained_by_the_slice_painted_with_it(two_textures, ct):
    _, reference = ct
    _, _, result = two_textures
    maps = run(result.explainer.volume_maps(result.labels, QUERIES))
    predicted = [z for z in QUERIES if z not in (LIVER_SLICE, KIDNEY_SLICE)]
    for organ, painted_on in ((LIVER, LIVER_SLICE), (KIDNEY, KIDNEY_SLICE)):
        origins = np.concatenate([maps[z][0][(result.labels[z] == 1) & (reference[z] == organ)] for z in predicted])
        share = float((origins == painted_on).mean())
        print(f"organ {organ}: {len(origins)} predicted pixels, {share:.3f} explained by slice {painted_on}")
        assert len(origins) > 200, "too few pixels of this organ were predicted for the test to mean anything"
        assert share >= 0.9, share
    for z in predicted:  # background is not explained; every predicted pixel is, by a painted slice
        support, similarity = maps[z]
        assert np.all((support == NO_SLICE) == (result.labels[z] == 0))
        assert set(np.unique(support)) <= {NO_SLICE, LIVER_SLICE, KIDNEY_SLICE}
        assert np.all(similarity[support != NO_SLICE] > 0)


def test_one_pixel_agrees_with_the_slice_map_and_points_at_paint(two_textures, ct):
    _, reference = ct
    segmenter, support, result = two_textures
    z = 94
    ys, xs = np.nonzero((result.labels[z] == 1) & (reference[z] == KIDNEY))
    slice_map, similarity = result.explainer.slice_map(result.labels[z], z)
    for y, x in list(zip(ys, xs))[:: max(1, len(ys) // 10)]:
        origin = result.explain(z, int(y), int(x))
        assert origin.class_id == 1 and origin.source == "slice"
        assert origin.slice == slice_map[y, x] and origin.similarity == pytest.approx(similarity[y, x], abs=1e-5)
        oy, ox = origin.pixel
        window = support[origin.slice][max(0, oy - 4):oy + 5, max(0, ox - 4):ox + 5]
        assert (window == 1).any(), "the origin is not on the paint of its class"
        assert origin.describe({1: "organ"}).startswith(f"looks like slice {origin.slice}, painted organ, similarity")


def test_a_painted_cell_is_explained_by_itself(two_textures):
    """On a support slice (predicted too in scribble mode) a painted cell's best prototype is its own."""
    segmenter, support, _ = two_textures
    result = run(segmenter.segment(support, indices=[LIVER_SLICE]))
    ys, xs = np.nonzero((support[LIVER_SLICE] == 1) & (result.labels[LIVER_SLICE] == 1))
    y, x = int(np.median(ys)), int(np.median(xs))
    origin = result.explain(LIVER_SLICE, y, x)
    h, w = segmenter.slice_features([LIVER_SLICE])[0].shape[-2:]
    height, width = support.shape[1:]
    assert origin.slice == LIVER_SLICE
    assert origin.similarity == pytest.approx(1.0, abs=1e-3)
    assert origin.cell == (cell_of(y, height, h), cell_of(x, width, w))


def test_origins_are_the_cells_the_local_prototypes_were_pooled_from(two_textures):
    """Each local prototype (grid 1: one cell's features) is the normalised feature vector at its origin."""
    segmenter, support, _ = two_textures
    support_set = segmenter.parse_support(support)
    prototypes = segmenter.prototypes(support_set)
    local = ~prototypes.is_global
    origins = prototypes.origins[local]
    assert len(origins) == int(local.sum()) and (origins[:, 0] >= 0).all()
    features = {i: F.normalize(f.float(), dim=0) for i, f in zip(support_set.slice_indices,
                                                                  segmenter.slice_features(support_set.slice_indices))}
    cells = torch.stack([features[int(s)][:, int(r), int(c)] for s, r, c in origins])
    assert torch.allclose(cells, prototypes.vectors[local].float(), atol=1e-4)


def test_explaining_costs_nothing_until_asked(ct, monkeypatch):
    volume, reference = ct
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
    segmenter.set_image(volume.data)
    support = np.zeros(reference.shape, np.uint8)
    support[90] = reference[90] == LIVER
    calls = []
    original = segmenter.prototypes
    monkeypatch.setattr(segmenter, "prototypes", lambda s: calls.append(1) or original(s))
    result = run(segmenter.segment(support, indices=[88]))
    assert calls == []  # segmenting made no explanation
    y, x = np.argwhere(result.labels[88] == 1)[0]
    assert result.explain(88, int(y), int(x)).slice == 90
    result.explain(88, int(y), int(x))
    assert calls == [1]  # the prototypes are made once per result
    with pytest.raises(FewShotError, match="outside slice"):
        result.explain(88, 500, 0)
    segmenter.set_image(volume.data)  # another image (here the same pixels): the old result cannot be explained
    with pytest.raises(FewShotError, match="segment again"):
        result.explain(88, int(y), int(x))


def test_ready_prototypes_name_no_painted_slice_of_this_scan(two_textures):
    segmenter, support, _ = two_textures
    prototypes = segmenter.prototypes(segmenter.parse_support(support))
    result = run(segmenter.segment_with(prototypes, indices=[90]))
    y, x = np.argwhere(result.labels[90] == 1)[0]
    assert result.explain(90, int(y), int(x)).source == OTHER_SCAN

    class Bank:  # what bank_source reads of a PrototypeBank
        sources = [{"image": "/data/ct_abdomen.nii.gz"}]

    result.explainer.source = bank_source(Bank())
    origin = result.explain(90, int(y), int(x))
    assert origin.pixel is None and origin.source == "bank scan ct_abdomen.nii.gz"
    assert origin.describe().startswith("looks like bank scan ct_abdomen.nii.gz, slice ")


def test_explained_share_counts_the_nearest_painted_slice():
    support = np.array([[NO_SLICE, 75, 75], [100, 75, NO_SLICE]])
    assert explained_share(support, [75, 100], 80) == pytest.approx(0.75)
    assert explained_share(support, [75, 100], 95) == pytest.approx(0.25)
    assert explained_share(np.full((2, 2), NO_SLICE), [75], 80) is None


def test_cli_writes_provenance_maps_beside_the_heatmaps(tmp_path, ct):
    """The upper 40 slices of the CT sample (quick on 2 cores), the liver painted on two of them."""
    image = tmp_path / "ct.nii.gz"
    nib.save(nib.load(CT_IMAGE).slicer[:, :, 72:], image)
    volume = read_volume(image)
    reference = read_labels(CT_LABELS, like=read_volume(CT_IMAGE))[72:]
    painted = [8, 23]
    support = np.zeros(reference.shape, np.uint8)
    support[painted] = reference[painted] == LIVER
    write_mask(tmp_path / "support.nii.gz", support, like=volume)
    out = tmp_path / "maps"
    args = ["segment", str(image), "--support", str(tmp_path / "support.nii.gz"), "--device", "cpu",
            "--explain", str(out)]
    assert main(args + ["--out", str(tmp_path / "pred.nii.gz")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["provenance_similarity.nii.gz", "provenance_slice.nii.gz"]
    prediction = read_labels(tmp_path / "pred.nii.gz", like=volume)
    slices = read_volume(out / "provenance_slice.nii.gz").data
    similarity = read_volume(out / "provenance_similarity.nii.gz").data
    assert slices.shape == prediction.shape
    predicted = np.ones(len(prediction), bool)
    predicted[painted] = False  # copied paint (dense mode) is not explained
    assert np.array_equal(slices[predicted] != NO_SLICE, prediction[predicted] == LIVER)
    assert set(np.unique(slices)) <= {NO_SLICE, *painted} and all((slices == z).any() for z in painted)
    assert np.all(similarity[slices != NO_SLICE] > 0)
    assert main(args + ["--out", str(tmp_path / "pred2.nii.gz")]) == 2  # the maps exist: no overwrite
