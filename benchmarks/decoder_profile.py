"""Where one LiteMedSAM decode's time goes on OpenVINO (graph 2, f32, one thread): per-node real time from
OpenVINO's PERF_COUNT, summed by node type and by part of the decoder (session 18 "redec"). Shares only: the node
times are wall times of the profiled call.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/decoder_profile.py
"""
import collections
import time

import numpy as np
import torch
import openvino as ov

from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.sam_decoder import _convert, hyper_weights
from napari_fewshot.core.sam_prompt import BoxPrompter
from napari_fewshot.io import read_volume
from napari_fewshot.sample_data import CT_IMAGE
ct = read_volume(CT_IMAGE).data
svc = LiteMedSAMService()
from napari_fewshot.core.stack import ImageStack
plane = ct[90].astype(np.float32); plane=(plane-plane.min())/(plane.max()-plane.min())
emb = svc.embedding(plane)
p = svc.prompter
core = ov.Core()
model = _convert(ov, p.model, 2)
compiled = core.compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"})
box = torch.tensor([[20., 30., 70., 90.]]) * emb.scale
for M in (1, 4):
    s, d = p.model.prompt_encoder(points=None, boxes=box[:, None, :].repeat(M,1,1).reshape(M,1,4)[:, 0][:, None], masks=None)
    src = (emb.features.float() + d[:1]).detach().numpy()
    idx = np.zeros(M, np.int64)
    ins = [src, idx, s.detach().numpy()] + [w.numpy() for w in hyper_weights(p.model)]
    req = compiled.create_infer_request()
    for _ in range(3): req.infer(ins)
    t = time.process_time(); n=10
    agg = collections.Counter()
    for _ in range(n):
        req.infer(ins)
        for pi in req.profiling_info:
            agg[(pi.node_type, pi.exec_type)] += pi.real_time.total_seconds()
    per = (time.process_time()-t)/n
    tot = sum(agg.values())
    print(f"M={M}: {per:.4f} CPU-s per call, {per/M:.4f} per box; profiled total {tot/n:.4f}")
    for k, v in agg.most_common(14): print(f"   {v/n*1000:7.2f} ms  {100*v/tot:5.1f}%  {k}")
    # by node name groups
    names = collections.Counter()
    for pi in req.profiling_info:
        nm = pi.node_name
        key = 'upscal' if 'upscal' in nm else ('final' if 'final' in nm else ('layers.1' if 'layers.1' in nm else ('layers.0' if 'layers.0' in nm else nm[:30])))
        names[key] += pi.real_time.total_seconds()
    t2 = sum(names.values())
    for k, v in names.most_common(12): print(f"      {v*1000:7.2f} ms {100*v/t2:5.1f}% {k}")
