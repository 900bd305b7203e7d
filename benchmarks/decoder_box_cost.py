"""CPU seconds per box of LiteMedSAM's mask decoder on this CPU, by runtime and precision.

    OMP_NUM_THREADS=1 python benchmarks/decoder_box_cost.py openvino        # the precision the tool picks here
    OMP_NUM_THREADS=1 python benchmarks/decoder_box_cost.py openvino bf16   # force bfloat16 (emulated without BF16)
    OMP_NUM_THREADS=1 python benchmarks/decoder_box_cost.py torch

One CT-sized (101 x 122) embedding, 1 / 4 / 16 / 32 boxes per call, 3 calls each after a warm-up call; process CPU
seconds per box and wall seconds per call. BENCHMARKS.md, session 15 "the lead".
"""

import os
import sys
import time

import numpy as np

runtime = sys.argv[1] if len(sys.argv) > 1 else "openvino"
os.environ["NAPARI_FEWSHOT_SAM_RUNTIME"] = runtime
if len(sys.argv) > 2:
    from napari_fewshot.core import sam_decoder, sam_runtime

    forced = sys.argv[2]
    setup = sam_runtime.openvino_setup

    def forced_setup(ov, precision=forced):  # bypasses the capability check: what the CPU does when asked
        version, threads, core, config = setup(ov, "f32")
        return version, threads, core, {**config, "INFERENCE_PRECISION_HINT": forced}

    sam_decoder.openvino_setup = forced_setup

from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402

service = LiteMedSAMService("cpu")
rng = np.random.default_rng(0)
plane = (rng.random((101, 122)) * 255).astype(np.float32)
embedding = service.embedding(plane)
print(service.runtime_status)
for n in (1, 4, 16, 32):
    boxes = np.tile(np.array([[20, 20, 70, 60]], np.float32), (n, 1)) + rng.integers(-3, 3, (n, 4))
    service.decode([(embedding, boxes, None)])
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(3):
        service.decode([(embedding, boxes, None)])
    print(f"{runtime} {n:2d} boxes: {(time.process_time() - cpu) / 3 / n:.4f} CPU-s per box, "
          f"{(time.perf_counter() - wall) / 3:.3f} s per call")
