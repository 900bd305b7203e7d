"""Interleaved A/B of Fine-tune's decoder stage on 5 signed BUSI images (same embeddings, same load):
old = a decoder pass per jittered box per step (commit 50451bc: bias, 30 steps x 4 boxes), new = the cached
activations of core/decoder_tuning.py with the current FineTuneParams defaults.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fine_tune_speed.py   # in the repository (needs git)

Prints the seconds of embedding the 5 images (torch LiteMedSAM encoder) and of each decoder stage, twice per
support set, with the load average. BENCHMARKS.md, "ftcache", has what it gave.
"""
import importlib.util, os, subprocess, tempfile, time, types

import torch

from napari_fewshot.core import FineTuneParams
from napari_fewshot.core import decoder_tuning as new
from napari_fewshot.core.sam_prompt import BoxPrompter
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.evaluation.datasets import load_busi

OLD = "50451bc"
torch.set_num_threads(1)
source = subprocess.run(["git", "show", f"{OLD}:napari_fewshot/core/decoder_tuning.py"], capture_output=True,
                        text=True, check=True).stdout.replace("from .", "from napari_fewshot.core.")
path = os.path.join(tempfile.mkdtemp(), "old_decoder_tuning.py")
open(path, "w").write(source)
spec = importlib.util.spec_from_file_location("old_decoder_tuning", path)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)


def drain(job):
    try:
        while True:
            next(job)
    except StopIteration as stop:
        return stop.value


names, images, masks = load_busi("../shared/data/busi")
prompter = BoxPrompter()
old_params = types.SimpleNamespace(seed=0, decoder_tuned="bias", decoder_learning_rate=1e-3, decoder_steps=30,
                                   decoder_batch=4, box_jitter=0.5)
for signed in ([0, 10, 20, 70, 90], [5, 33, 61, 80, 111]):
    stack = ImageStack([images[i] for i in signed], "us")
    started = time.perf_counter()
    examples = [(prompter.embed(stack.slice(k)), masks[i]) for k, i in enumerate(signed)]
    print(f"embed 5 images (torch) {time.perf_counter() - started:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(2):
        started = time.perf_counter()
        drain(old.tune_decoder(prompter, examples, old_params))
        a = time.perf_counter() - started
        started = time.perf_counter()
        _, losses, kept = drain(new.tune_decoder(prompter, examples, FineTuneParams()))
        b = time.perf_counter() - started
        print(f"old (bias, 30 x 4 decoder passes) {a:.1f} s | new (cached, {FineTuneParams().decoder_tuned}, "
              f"{len(losses)} steps, kept step {kept}) {b:.1f} s | load {os.getloadavg()[0]:.1f}", flush=True)
