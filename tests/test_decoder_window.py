"""LiteMedSAM's decoder upscales only the cells a refinement reads (core/sam_decoder.py graph 3, WindowGraph;
session 18, helper "redec"): refinement reads each decoded mask inside its box only (refine.apply_decoded,
DecodedBoxes), and the decoder's output upscaling (two 2x2 stride-2 transposed convolutions, per-pixel LayerNorm and
GELUs) and its mask product are per cell of the 64 x 64 token grid, so decoding with `inside` (one call per plane,
the window of cells its boxes read) must give the whole grid's probabilities inside every box, 0 outside, on real
CT-sample slices, mask prompts included; with the whole grid, graph 3 is graph 2. Compiled in f32."""

import numpy as np
import pytest
import torch
from conftest import convert_decoder_graphs

from napari_fewshot.core.sam_prompt import BoxPrompter, box_cells, box_of, box_region

openvino = pytest.importorskip("openvino", reason="openvino is not installed: the torch decoder is the only one")


@pytest.fixture(scope="module")
def prompter():
    return BoxPrompter()


@pytest.fixture(scope="module")
def graphs(prompter):
    """{2: graph 2, 3: graph 3}, converted in memory, compiled in f32."""
    return convert_decoder_graphs(prompter.model, (2, 3))


@pytest.fixture(scope="module")
def requests_(prompter):
    """Three CT-sample slices: each organ boxed (+ 10 %, and a box shifted by 1.5 px), a small box in a corner, and
    the organs of one slice with their masks as mask prompts."""
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    stack = ImageStack(volume.data)
    out = []
    for index in (60, 76, 94):
        organs = [c for c in np.unique(labels[index])[1:] if (labels[index] == c).sum() >= 30]
        boxes = [box_of(labels[index] == c, 0.1) for c in organs]
        boxes += [np.minimum(b + 1.5, [volume.data.shape[2] - 1, volume.data.shape[1] - 1] * 2) for b in boxes]
        boxes.append(np.array([0, 0, 6, 5], np.float32))
        out.append((prompter.embed(stack.slice(index)), np.stack(boxes).astype(np.float32), None))
    embedding, boxes, _ = out[1]
    masks = np.stack([labels[76] == c for c in np.unique(labels[76])[1:]]).astype(np.float32)
    out.append((embedding, np.stack([box_of(m > 0, 0.1) for m in masks]), masks))
    return out


class Windows:
    """A decoder runtime recording the window of each call."""

    def __init__(self, runtime):
        self.runtime, self.windows, self.prompts = runtime, [], []

    def __call__(self, image, sparse, dense, index=None, window=None):
        self.windows.append(window)
        self.prompts.append(len(sparse))
        return self.runtime(image, sparse, dense, index, window)


def test_inside_gives_the_whole_grids_probabilities_in_every_box_from_the_cells_it_reads(prompter, graphs, requests_):
    full = prompter.decode_batch(requests_, 32, decoder=graphs[3])
    spy = Windows(graphs[3])
    inside = prompter.decode_batch(requests_, 32, decoder=spy, inside=True)
    boxes = 0
    for (_, planes_boxes, _), (pf, qf), (pi, qi) in zip(requests_, full, inside):
        assert pf.shape == pi.shape and float(np.abs(qf - qi).max()) < 1e-5
        for box, a, b in zip(planes_boxes, pf, pi):
            region = box_region(box, a.shape)
            assert float(np.abs(a[region] - b[region]).max()) < 1e-5  # 0.0 on this CPU
            assert not b[~region].any()
            boxes += 1
    assert boxes >= 20
    # one call per plane (the 4th request shares the 2nd's embedding but has mask prompts: same plane, same call)
    assert len(spy.windows) == 3 and sum(spy.prompts) == boxes
    cells = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in spy.windows]
    assert max(cells) < 64 * 64 and sum(cells) < 0.75 * 3 * 64 * 64, cells  # fewer cells upscaled


def test_graph_3_over_the_whole_grid_is_graph_2(prompter, graphs, requests_):
    two = prompter.decode_batch(requests_, 32, decoder=graphs[2])
    three = prompter.decode_batch(requests_, 32, decoder=graphs[3])
    for (p2, q2), (p3, q3) in zip(two, three):
        assert float(np.abs(p2 - p3).max()) < 1e-5 and float(np.abs(q2 - q3).max()) < 1e-5
    low2 = prompter.decode_batch(requests_, 4, low_res=True, decoder=graphs[2])
    low3 = prompter.decode_batch(requests_, 4, low_res=True, decoder=graphs[3])
    for (p2, _), (p3, _) in zip(low2, low3):
        assert p2.shape == p3.shape and float(np.abs(p2 - p3).max()) < 1e-5


def test_box_cells_cover_every_cell_the_resize_reads():
    """For planes smaller and larger than 256 px, every plane pixel of a box reads (bilinear, align_corners=False)
    256-frame rows and columns whose cells lie inside box_cells."""
    from napari_fewshot.core.sam_prompt import PlaneEmbedding

    rng = np.random.default_rng(0)
    for shape in ((101, 122), (512, 512), (300, 97)):
        embedding = PlaneEmbedding(torch.zeros(1), shape, 256 / max(shape))
        h, w = embedding.resized
        for _ in range(50):
            y0, y1 = np.sort(rng.uniform(0, shape[0] - 1, 2))
            x0, x1 = np.sort(rng.uniform(0, shape[1] - 1, 2))
            r0, r1, c0, c1 = box_cells([np.array([x0, y0, x1, y1])], embedding)
            for low, high, size, resized, first, last in ((y0, y1, shape[0], h, r0, r1), (x0, x1, shape[1], w, c0, c1)):
                pixels = np.arange(int(np.floor(low)), int(np.ceil(high)) + 1)
                source = np.maximum((pixels + 0.5) * resized / size - 0.5, 0)
                read = np.concatenate([np.floor(source), np.minimum(np.floor(source) + 1, resized - 1)]).astype(int)
                assert first <= read.min() // 4 and read.max() // 4 < last


def test_refinement_decodes_inside_its_boxes_and_its_labels_are_those_of_whole_grid_decodes(tmp_path):
    """A Refiner on real CT-sample slices (liver and spleen from the reference, coarsened) hands the decoder windows
    smaller than the 64 x 64 grid, and refines to the labels that whole-grid decodes give, bit for bit."""
    from scipy import ndimage

    from napari_fewshot.core import RefineParams, SegmentationParams
    from napari_fewshot.core.refine import Refiner
    from napari_fewshot.core.sam_service import LiteMedSAMService
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    reference = read_labels(CT_LABELS, like=volume)
    picked = [80, 95]
    stack = ImageStack(volume.data[picked])
    coarse = [np.where(np.isin(reference[z], [1, 2]), reference[z], 0).astype(np.uint8) for z in picked]
    coarse = [np.where(ndimage.binary_dilation(c > 0, iterations=2), ndimage.grey_dilation(c, size=3), 0)
              .astype(np.uint8) for c in coarse]  # a coarse result's blunter outline
    service = LiteMedSAMService(model_dir=tmp_path)
    params = SegmentationParams(refine=RefineParams(enabled=True))
    runtime = service.decoder_runtime()
    spy = Windows(runtime)
    service._decoder = spy
    inside = [c.copy() for c in coarse]
    for _ in Refiner(params, service).refine(stack, inside, [0, 1], [1, 2]):
        pass
    assert spy.windows and all(w is not None and (w[1] - w[0]) * (w[3] - w[2]) < 64 * 64 for w in spy.windows)
    whole = [c.copy() for c in coarse]
    decode = service.decode
    service.decode = lambda requests, *a, inside=False, **k: decode(requests, *a, **k)  # the whole grid
    for _ in Refiner(params, service).refine(stack, whole, [0, 1], [1, 2]):
        pass
    assert spy.windows[-1][0] == spy.windows[-1][2] == 0  # the whole grid's resized part
    for a, b, c in zip(inside, whole, coarse):
        assert np.array_equal(a, b) and not np.array_equal(a, c)
