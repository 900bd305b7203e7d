"""Fine-tune's first press on a fresh set: its wall and CPU seconds, LiteMedSAM embeddings included (issue 24's
<= 30 s target: a volume with 5 signed slices, a set of 5 signed images, 2-core CPU).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/fine_tune_first_press.py

A new segmenter (no feature or embedding cache on disk), per case:
  cold:          Fine-tune pressed before any Segment (LiteMedSAM loaded and the signed images embedded by it);
  after Segment (image set only): a second fresh segmenter, Segment first (what the clinician would have done), then Fine-tune
                 (LiteMedSAM loaded, the signed images' embeddings made only where Segment made them).
Image set: BUSI benign (1)-(6), (1)-(5) painted from their masks, (6) the query. Volume: the CT sample, liver and
spleen painted on slices 72, 81, 90, 99, 108 (as session 13's lead measured it), with decoder_on_volumes (the
default before session 14: today's default adapts nothing on a volume)."""
import os, time
import numpy as np
from napari_fewshot.core import FewShotSegmenter, SegmentationParams, FineTuneParams, run
from napari_fewshot.evaluation.datasets import load_busi
from napari_fewshot.io import read_labels, read_volume
from sample_data import CT_IMAGE, CT_LABELS


def cpu():
    t = os.times()
    return t.user + t.system


def timed(job):
    w, c = time.perf_counter(), cpu()
    out = run(job)
    return out, time.perf_counter() - w, cpu() - c


def cases():
    names, images, masks = load_busi("../shared/data/busi")
    pick = [names.index(f"benign/benign ({i})") for i in range(1, 7)]
    imgs = [images[i] for i in pick]
    support = [masks[i].astype(np.uint8) for i in pick[:5]] + [np.zeros(masks[pick[5]].shape, np.uint8)]
    yield "5-image set (BUSI benign 1-5 signed, 6 the query)", imgs, support, {"indices": [5]}, FineTuneParams()
    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    support = np.zeros(labels.shape, np.uint8)
    for z in (72, 81, 90, 99, 108):
        support[z] = np.where(np.isin(labels[z], (1, 2)), labels[z], 0)
    # On volumes the default no longer tunes the decoder (session 14): timed as it ran before, decoder_on_volumes.
    yield ("5-slice volume (CT sample, liver + spleen on 72 81 90 99 108)", volume.data, support, {},
           FineTuneParams(decoder_on_volumes=True))


for name, image, support, kw, params in cases():
    seg = FewShotSegmenter(SegmentationParams()); seg.set_image(image)
    _, w, c = timed(seg.fine_tune(support, params))
    print(f"{name}: cold press {w:.1f} s wall, {c:.1f} CPU-s; {seg.adaptation.summary}; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    if name.startswith("5-slice"):
        continue  # a refined Segment all of 112 slices takes minutes under load: the cold press only
    seg = FewShotSegmenter(SegmentationParams()); seg.set_image(image)
    _, ws, cs = timed(seg.segment(support, **kw))
    _, w, c = timed(seg.fine_tune(support, params))
    print(f"{name}: Segment {ws:.1f} s wall ({cs:.1f} CPU-s), then the press {w:.1f} s wall, {c:.1f} CPU-s; "
          f"{seg.adaptation.summary}; load {os.getloadavg()[0]:.1f}", flush=True)
