"""Selection's low-resolution candidates upscale only the cells they are read in (issue 20's cost; session 19,
helper "cost"): propose and select reads a candidate's low-resolution decode inside its box (decoded_masks) and,
resized to the image (full_size), one low-resolution pixel around it; Check next's one box reads only the decoder's
IoU estimate. With `inside` at low resolution (sam_service.LOW_RES_INSIDE) each call upscales its boxes' cells
(sam_prompt.low_res_cells) and a plane's boxes are grouped so the windows stay small (low_res_calls). The tests: on
real BUSI images, the windowed decode is the whole frame's in every box and 3 pixels around it, the masks drawn from
it at full size are the same, the IoU estimates too; through FewShotSegmenter the labels and Check next's estimates
are the same with the switch on and off, and the decoder upscales fewer cells. They fail on main (no low_res_cells,
`inside` ignored at low resolution)."""

import numpy as np
import pytest
from conftest import convert_decoder_graphs
from shared_data import BUSI, require

from napari_fewshot.core import sam_service
from napari_fewshot.core.proposals import decoded_masks
from napari_fewshot.core.sam_prompt import BoxPrompter, box_of, box_region, low_res_calls, low_res_cells
from napari_fewshot.core.select_objects import full_size

openvino = pytest.importorskip("openvino", reason="openvino is not installed: the torch decoder is the only one")
NAMES = ("benign/benign (4)", "benign/benign (27)", "malignant/malignant (14)", "malignant/malignant (50)")


class Windows:
    """A decoder runtime recording the window and the prompts of each call."""

    def __init__(self, runtime):
        self.runtime, self.windows, self.prompts = runtime, [], []
        self.name, self.status = runtime.name, runtime.status

    def __call__(self, image, sparse, dense, index=None, window=None):
        self.windows.append(window)
        self.prompts.append(len(sparse))
        return self.runtime(image, sparse, dense, index, window)


@pytest.fixture(scope="module")
def busi():
    from napari_fewshot.evaluation.datasets import load_busi

    names, images, masks = load_busi(str(require(BUSI)))
    return {n: (i, m) for n, i, m in zip(names, images, masks)}


@pytest.fixture(scope="module")
def prompter():
    return BoxPrompter()


@pytest.fixture(scope="module")
def requests_(prompter, busi):
    """Four BUSI images: candidates as selection proposes them (the lesion's box at three margins; boxes of 0.7, 1
    and 1.4 times its size around its centre and around a point elsewhere, clipped at the image's edge)."""
    out = []
    for name in NAMES:
        image, mask = busi[name]
        plane = np.asarray(image, np.float32) / 255.0
        h, w = mask.shape
        boxes = [box_of(mask > 0, m) for m in (0.0, 0.1, 0.25)]
        x0, y0, x1, y1 = boxes[0]
        for cy, cx in (((y0 + y1) / 2, (x0 + x1) / 2), (0.85 * h, 0.1 * w)):
            for s in (0.7, 1.0, 1.4):
                bh, bw = s * (y1 - y0), s * (x1 - x0)
                boxes.append(np.array([max(0, cx - bw / 2), max(0, cy - bh / 2), min(w - 1, cx + bw / 2),
                                       min(h - 1, cy + bh / 2)], np.float32))
        out.append((prompter.embed(plane), np.stack(boxes).astype(np.float32), None))
    return out


def test_windowed_candidates_are_the_whole_frames_in_and_around_each_box(prompter, requests_):
    runtime = convert_decoder_graphs(prompter.model, (3,))[3]
    whole = prompter.decode_batch(requests_, 4, low_res=True, decoder=runtime)
    spy = Windows(runtime)
    window = prompter.decode_batch(requests_, 4, low_res=True, decoder=spy, inside=True)
    checked = 0
    for (embedding, boxes, _), (pw, qw), (pi, qi) in zip(requests_, whole, window):
        assert pw.shape == pi.shape == (len(boxes), *embedding.resized)
        assert float(np.abs(qw - qi).max()) < 1e-5  # the IoU estimates (Check next's "estimate")
        shrink = np.array([pw.shape[2] / embedding.shape[1], pw.shape[1] / embedding.shape[0]] * 2, np.float32)
        for box, a, b in zip(boxes, pw, pi):
            lo = box * shrink
            read = box_region(lo + np.array([-3, -3, 3, 3], np.float32), a.shape)  # the box and 3 pixels around
            assert float(np.abs(a[read] - b[read]).max()) < 1e-5  # 0.0 on this CPU
            checked += 1
        # what selection keeps: the masks at low resolution and the winner's at full size
        for m1, m2 in zip(decoded_masks(boxes * shrink, pw), decoded_masks(boxes * shrink, pi)):
            assert np.array_equal(m1, m2)
        big = decoded_masks(boxes, full_size(pw, embedding.shape))
        assert all(np.array_equal(m1, m2) for m1, m2 in zip(big, decoded_masks(boxes, full_size(pi, embedding.shape))))
    assert checked == 4 * 9
    # calls of <= 4 prompts, each upscaling fewer cells than the image's whole resized part
    assert max(spy.prompts) <= 4 and sum(spy.prompts) == checked
    frame = [-(-r[0].resized[0] // 4) * -(-r[0].resized[1] // 4) for r in requests_]
    cells = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in spy.windows]
    assert sum(cells) < 0.6 * sum(frame) * len(spy.windows) / len(requests_)


def test_a_planes_boxes_are_grouped_by_overlap(prompter, requests_):
    def upscaled(groups, boxes, embedding):  # cells upscaled: each prompt of a call upscales the call's window
        windows = [low_res_cells([boxes[n] for n in g], embedding) for g in groups]
        return sum(len(g) * (r1 - r0) * (c1 - c0) for g, (r0, r1, c0, c1) in zip(groups, windows))

    for embedding, boxes, _ in requests_:
        groups = low_res_calls(list(boxes), embedding, 4)
        assert sorted(n for g in groups for n in g) == list(range(len(boxes)))
        assert all(len(g) <= 4 for g in groups) and len(groups) == 3  # as few calls as chunks of 4
        in_order = [list(range(n, min(n + 4, len(boxes)))) for n in range(0, len(boxes), 4)]
        assert upscaled(groups, boxes, embedding) <= upscaled(in_order, boxes, embedding)
        # nested boxes (the lesion's box at three margins) share a call
        assert any({0, 1, 2} <= set(g) for g in groups)


def test_the_image_set_gives_the_same_labels_and_check_next_with_fewer_cells_upscaled(busi, monkeypatch):
    from napari_fewshot.core import FewShotSegmenter, SegmentationParams, run

    names = ["benign/benign (2)", "malignant/malignant (3)", "benign/benign (27)", "malignant/malignant (14)",
             "malignant/malignant (50)", "benign/benign (4)"]
    images = [busi[n][0] for n in names]
    support = [busi[n][1].astype(np.uint8) if k < 2 else np.zeros(busi[n][1].shape, np.uint8)
               for k, n in enumerate(names)]
    out = {}
    for on in (False, True):
        monkeypatch.setattr(sam_service, "LOW_RES_INSIDE", on)
        segmenter = FewShotSegmenter(SegmentationParams(device="cpu"))
        segmenter.set_image(images)
        service = segmenter.refiner.service
        spy = Windows(service.decoder_runtime())
        service._decoder = spy
        result = run(segmenter.segment(support))
        out[on] = (result, spy)
    (off, spy_off), (on, spy_on) = out[False], out[True]
    for i in range(2, len(names)):
        assert np.array_equal(off.labels[i], on.labels[i])
        assert off.uncertainty[i] == on.uncertainty[i]
    assert sum(np.asarray(on.labels[i]).any() for i in range(2, len(names))) >= 3
    assert sum(spy_on.prompts) == sum(spy_off.prompts) > 10
    upscaled = {side: sum((r1 - r0) * (c1 - c0) * m for (r0, r1, c0, c1), m in zip(spy.windows, spy.prompts))
                for side, spy in (("off", spy_off), ("on", spy_on))}
    assert upscaled["on"] < 0.6 * upscaled["off"]


def test_the_torch_decoder_cuts_the_same_windows(prompter, requests_):
    """Where OpenVINO is not used (a GPU, torch's runtime) the torch decoder decodes the whole grid and cuts the
    window: the same probabilities in and around every box."""
    from napari_fewshot.core.sam_decoder import TorchDecoder

    request = requests_[:1]
    whole = prompter.decode_batch(request, 4, low_res=True, decoder=TorchDecoder(prompter.model))
    window = prompter.decode_batch(request, 4, low_res=True, decoder=TorchDecoder(prompter.model), inside=True)
    (embedding, boxes, _), (pw, qw), (pi, qi) = request[0], whole[0], window[0]
    shrink = np.array([pw.shape[2] / embedding.shape[1], pw.shape[1] / embedding.shape[0]] * 2, np.float32)
    assert float(np.abs(qw - qi).max()) < 1e-5
    for box, a, b in zip(boxes, pw, pi):
        read = box_region(box * shrink + np.array([-3, -3, 3, 3], np.float32), a.shape)
        assert float(np.abs(a[read] - b[read]).max()) < 1e-5
    assert (pi == 0).sum() > (pw == 0).sum()  # beyond each call's window: 0 (not upscaled)
