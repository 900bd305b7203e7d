"""A/B of select_plane before and after the boxes that cannot cover MIN_COVER of the coarse finding are dropped
before decoding (core/select_objects.candidates): same labels?, CPU seconds inside select_plane, alternating
image by image under the same load. On busi_select_dump.py's episodes (/tmp/select/data).

    python benchmarks/busi_select_prune_ab.py OLD_MODULE_PATH [EPISODES]

OLD_MODULE_PATH: the previous core/select_objects.py with absolute imports (git show COMMIT:... | sed).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import importlib.util
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from busi_select_score import DATA, embedding, image  # noqa: E402
from napari_fewshot.core import select_objects as new  # noqa: E402
from napari_fewshot.core.predict import upsample  # noqa: E402
from napari_fewshot.core.sam_service import LiteMedSAMService  # noqa: E402

spec = importlib.util.spec_from_file_location("select_old", sys.argv[1])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
count = int(sys.argv[2]) if len(sys.argv) > 2 else 12
service = LiteMedSAMService("cpu")
seconds = {"before": [], "after": []}
boxes = {"before": 0, "after": 0}
same = 0
for tag in ("s0_k5_n50", "s1_k5_n50"):
    for ep in pickle.load(open(DATA / f"eps_{tag}.pkl", "rb"))[: count // 2]:
        q, emb = ep["query"], embedding(ep["query"])
        truth = image(q)["mask"]
        scores = upsample(torch.from_numpy(ep["coarse"])[None], truth.shape)[0].numpy()
        labels = (scores.argmax(0) == 1).astype(np.uint8)
        profiles = new.support_profiles({i: image(i)["mask"].astype(np.int16) for i in ep["supports"]}, 1, embedding)
        out = {}
        for name, module in (("before", old), ("after", new)):
            def decode(b, low, name=name):
                if low:
                    boxes[name] += len(b)
                return service.decode([(emb, b, None)], low_res=low)[0]
            started = time.process_time()
            out[name] = module.select_plane(labels, scores, [1], decode, emb, profiles)
            seconds[name].append(time.process_time() - started)
        same += int(np.array_equal(out["before"], out["after"]))
        print(q, "same" if np.array_equal(out["before"], out["after"]) else "DIFFERENT",
              {k: round(v[-1], 2) for k, v in seconds.items()}, flush=True)
n = len(seconds["after"])
print(f"{same} of {n} images: identical labels; candidates decoded: before {boxes['before']}, after {boxes['after']}")
for name, values in seconds.items():
    print(f"{name}: CPU-s in select_plane per image: mean {np.mean(values):.2f}, median {np.median(values):.2f}")
print(f"load average {os.getloadavg()}")
