"""LiteMedSAM on the CPU: batched refinement against main's, and the image encoder's runtimes.

    python benchmarks/sam_runtimes.py refine [--main /work/main] [--ct-slices 12] [--busi 4] [--repeats 3]
    python benchmarks/sam_runtimes.py runtimes [--venv /tmp/svc-venv] [--repeats 5] [--busi 4] [--no-compile] [--torch-float32-only]

refine: main's Refiner (loaded from a checkout of main as the package ``nfs_main``, in this process) and this
    tree's (LiteMedSAMService, prompts of several slices per decoder call) refine the same coarse labels: the CT
    sample (prototype labels from liver and spleen painted on 2 slices each, the slices with organs spread
    over the scan) and BUSI images (each lesion's mask coarsened on a 24-pixel grid). Embeddings are computed
    once by each, then the decodes are timed interleaved, main then this tree, `--repeats` times. Reports the
    labels' differing pixels (they must be identical) and the decode seconds.
runtimes: the image encoder (1, 3, 256, 256) -> (1, 256, 64, 64) per runtime: torch float32, torch bfloat16
    autocast (what the service runs where the CPU has native bfloat16), torch.compile (float32 and bfloat16),
    and, run by the Python of `--venv` (a virtual environment holding onnxruntime and openvino; nothing of
    theirs is imported here), ONNX Runtime and OpenVINO on the ONNX export. Each runtime's embeddings of real
    slices (CT sample, BUSI) are decoded with the same boxes (each organ's / lesion's reference box + 10 %) by
    torch's decoder; Dice of the masks against torch float32's.
Timings on a shared machine are upper bounds; the load average is in the report. MedSAM's training data may
include public breast-ultrasound sets (possibly BUSI).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _load_main(path: Path):
    """main's package, imported as ``nfs_main`` beside this tree's ``napari_fewshot``."""
    spec = importlib.util.spec_from_file_location("nfs_main", path / "napari_fewshot" / "__init__.py",
                                                  submodule_search_locations=[str(path / "napari_fewshot")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["nfs_main"] = module
    spec.loader.exec_module(module)
    importlib.import_module("nfs_main.core.refine")
    return module


def ct_case(slices: int):
    """(ImageStack, coarse labels per slice, indices refined, class ids) for the CT sample."""
    from napari_fewshot.core import FewShotSegmenter, RefineParams, SegmentationParams, run
    from napari_fewshot.demo import paint_support_from_labels
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS, ct_class_names

    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    classes = sorted(ct_class_names())
    support = paint_support_from_labels(labels, classes, 2)
    organs = np.flatnonzero(np.isin(labels, classes).any(axis=(1, 2)))
    indices = sorted(set(organs[np.linspace(0, len(organs) - 1, slices).round().astype(int)].tolist()))
    segmenter = FewShotSegmenter(SegmentationParams(refine=RefineParams(enabled=False)))
    segmenter.set_image(volume.data)
    coarse = run(segmenter.segment(support, indices=indices)).labels
    return segmenter.stack, [plane.copy() for plane in coarse], indices, classes


def busi_case(count: int):
    """(ImageStack of `count` BUSI images, lesion masks coarsened on a grid, indices, [1])."""
    from scipy import ndimage

    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_busi_mask, read_volume

    images, coarse = [], []
    for n in range(1, count + 1):
        kind = "benign" if n % 2 else "malignant"
        path = DATA / "busi" / kind / f"{kind} ({n}).png"
        image = read_volume(path).data[0]
        images.append(image.mean(-1) if image.ndim == 3 else image)
        mask = read_busi_mask(path)
        h, w = mask.shape
        small = mask[: h - h % 24, : w - w % 24].reshape(h // 24, 24, w // 24, 24).mean((1, 3)) > 0.3
        grid = np.zeros_like(mask)
        grid[: h - h % 24, : w - w % 24] = small.repeat(24, 0).repeat(24, 1)
        coarse.append(ndimage.binary_dilation(grid, iterations=12).astype(np.uint8))
    return ImageStack(images), coarse, list(range(count)), [1]


def compare_refine(args) -> dict:
    from napari_fewshot.core import RefineParams, SegmentationParams
    from napari_fewshot.core.refine import Refiner
    from napari_fewshot.core.sam_service import LiteMedSAMService

    main = _load_main(Path(args.main))
    params = SegmentationParams(refine=RefineParams(enabled=True))
    main_params = main.core.SegmentationParams(refine=main.core.RefineParams(enabled=True))
    report = {}
    for name, (stack, coarse, indices, classes) in {"ct_sample": ct_case(args.ct_slices),
                                                     "busi": busi_case(args.busi)}.items():
        old = main.core.refine.Refiner(main_params, "cpu")
        new = Refiner(params, LiteMedSAMService("cpu", 1 << 30))
        outputs, seconds = {}, {"main": [], "this": []}
        for repeat in range(args.repeats + 1):  # the first round computes the embeddings (not timed)
            for who, refiner in (("main", old), ("this", new)):
                refiner._refined.clear()  # decode every slice again, from the cached embeddings
                planes = [plane.copy() for plane in coarse]
                started = time.perf_counter()
                for _ in refiner.refine(stack, planes, indices, classes):
                    pass
                if repeat:
                    seconds[who].append(time.perf_counter() - started)
                outputs[who] = planes
        differing = int(sum((outputs["main"][i] != outputs["this"][i]).sum() for i in indices))
        same_embedding = bool(torch.equal(old.cache.get(stack, indices[0], old.prompter).features,
                                          new.service.embedding_of(stack, indices[0]).features))
        report[name] = {"slices": len(indices), "differing_pixels": differing, "first_embedding_equal": same_embedding,
                        "decode_s_main": seconds["main"], "decode_s_this": seconds["this"],
                        "median_speedup": float(np.median(seconds["main"]) / np.median(seconds["this"]))}
        print(name, report[name], flush=True)
    return report


# -- runtimes of the image encoder ------------------------------------------------------------------------------
VENV_SCRIPT = """
import sys, time, json, numpy as np
onnx_path, inputs_path, out_path, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(inputs_path)
result, arrays = {}, {}
def bench(name, run):
    run(x[:1])
    times = []
    for _ in range(repeats):
        started = time.perf_counter(); run(x[:1]); times.append(time.perf_counter() - started)
    key = "e%d" % len(arrays)
    arrays[key] = np.concatenate([np.asarray(run(x[i:i + 1]), np.float32) for i in range(len(x))])
    result[name] = {"seconds": times, "embeddings": key}
try:
    import onnxruntime as ort
    options = ort.SessionOptions(); options.intra_op_num_threads = 2
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    bench("onnxruntime " + ort.__version__, lambda a: session.run(None, {"image": a})[0])
except Exception as err:
    result["onnxruntime"] = {"error": repr(err)}
try:
    import openvino as ov
    core = ov.Core()
    model = core.read_model(onnx_path)
    for hint in ("f32", "bf16"):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2})
        bench(f"openvino {ov.__version__} {hint}", lambda a, c=compiled: c(a)[0])
except Exception as err:
    result["openvino"] = {"error": repr(err)}
np.savez(out_path + ".npz", **arrays)
json.dump(result, open(out_path, "w"))
"""


def real_planes(busi: int):
    """[(plane (H, W) float in [0, 1], [(4,) boxes])]: CT sample slices through liver and spleen, BUSI images."""
    from napari_fewshot.core.sam_prompt import box_of
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    stack = ImageStack(volume.data)
    out = []
    for organ in np.unique(labels)[1:]:
        index = int(np.argmax((labels == organ).sum((1, 2))))
        boxes = [box_of(labels[index] == c, 0.1) for c in np.unique(labels[index])[1:]]
        out.append((stack.slice(index), boxes))
    images, _, _, _ = busi_case(busi)
    from napari_fewshot.io import read_busi_mask

    for n in range(1, busi + 1):
        kind = "benign" if n % 2 else "malignant"
        mask = read_busi_mask(DATA / "busi" / kind / f"{kind} ({n}).png")
        out.append((images.slice(n - 1), [box_of(mask, 0.1)]))
    return out


def compare_runtimes(args) -> dict:
    from napari_fewshot.core.sam_prompt import BoxPrompter, PlaneEmbedding

    prompter = BoxPrompter()
    encoder = prompter.model.image_encoder
    planes = real_planes(args.busi)
    inputs = [prompter.to_input(plane) for plane, _ in planes]
    x = torch.cat([i for i, _ in inputs])

    def dice_against(reference: list, embeddings: torch.Tensor) -> float:
        scores = []
        for (plane, boxes), (_, scale), ref, feat in zip(planes, inputs, reference, embeddings):
            emb = PlaneEmbedding(feat[None].float(), plane.shape[:2], scale)
            masks = prompter.decode(emb, np.stack(boxes)) > 0.5
            for a, b in zip(masks, ref):
                scores.append(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
        return float(np.min(scores)), float(np.mean(scores))

    def timed(run) -> tuple[list[float], torch.Tensor]:
        with torch.no_grad():
            run(x[:1])
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                run(x[:1])
                times.append(time.perf_counter() - started)
            return times, torch.cat([run(x[i:i + 1]) for i in range(len(x))])

    def bf16(module):
        def run(a):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(a)
        return run

    runs = {"torch float32": encoder}
    if not args.torch_float32_only:
        runs["torch bfloat16 autocast"] = bf16(encoder)
    report = {}
    fp32 = None
    for name, run in runs.items():
        times, embeddings = timed(run)
        if fp32 is None:
            fp32 = embeddings
            reference = [prompter.decode(PlaneEmbedding(e[None], p.shape[:2], s), np.stack(b)) > 0.5
                         for (p, b), (_, s), e in zip(planes, inputs, fp32)]
        report[name] = {"median_s": float(np.median(times)), "dice_min_mean": dice_against(reference, embeddings)}
        print(name, report[name], flush=True)
    compiles = {"torch.compile float32": lambda: torch.compile(encoder),
                "torch.compile bfloat16 autocast": lambda: bf16(torch.compile(encoder))}
    for name, make in ({} if args.no_compile else compiles).items():
        try:
            started = time.perf_counter()
            compiled = make()
            times, embeddings = timed(compiled)
            report[name] = {"median_s": float(np.median(times)), "dice_min_mean": dice_against(reference, embeddings),
                            "compile_and_first_call_s": time.perf_counter() - started - sum(times)}
        except Exception as err:  # no compiler on the machine, or the model does not trace
            report[name] = {"error": f"{err.__class__.__name__}: {str(err)[:300]}"}
        print(name, report[name], flush=True)
    venv_python = Path(args.venv) / "bin" / "python"
    if venv_python.is_file():
        report.update(_venv_runtimes(args, encoder, x, venv_python, reference, dice_against))
    report["load_average"] = open("/proc/loadavg").read().split()[:3]
    report["torch_threads"] = torch.get_num_threads()
    return report


def _venv_runtimes(args, encoder, x, venv_python: Path, reference, dice_against) -> dict:
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, inputs_path, out_path = (os.path.join(tmp, n) for n in ("enc.onnx", "x.npy", "out.json"))
        site = sorted((Path(args.venv) / "lib").glob("python3*/site-packages"))
        sys.path.extend(str(path) for path in site)  # the exporter needs the `onnx` package, the venv has it
        try:
            torch.onnx.export(encoder, (x[:1],), onnx_path, input_names=["image"], output_names=["embedding"],
                              opset_version=17, dynamo=False)
        except Exception as err:
            return {"onnx export": {"error": f"{err.__class__.__name__}: {str(err)[:300]}"}}
        np.save(inputs_path, x.numpy())
        script = os.path.join(tmp, "run.py")
        Path(script).write_text(VENV_SCRIPT)
        done = subprocess.run([str(venv_python), script, onnx_path, inputs_path, out_path, str(args.repeats)],
                              capture_output=True, text=True)
        if done.returncode:
            return {"venv": {"error": done.stderr[-500:]}}
        arrays = np.load(out_path + ".npz")
        for name, value in json.load(open(out_path)).items():
            if "error" in value:
                report[name] = value
            else:
                embeddings = torch.from_numpy(arrays[value["embeddings"]])
                report[name] = {"median_s": float(np.median(value["seconds"])),
                                "dice_min_mean": dice_against(reference, embeddings)}
            print(name, report[name], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["refine", "runtimes"])
    parser.add_argument("--main", default="/work/main")
    parser.add_argument("--ct-slices", type=int, default=12)
    parser.add_argument("--busi", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--venv", default="/tmp/svc-venv")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes to compile)")
    parser.add_argument("--torch-float32-only", action="store_true", help="of torch, only float32 (the reference)")
    parser.add_argument("--out")
    args = parser.parse_args()
    load = open("/proc/loadavg").read().split()[:3]
    report = compare_refine(args) if args.part == "refine" else compare_runtimes(args)
    report["load_average_before_after"] = [load, open("/proc/loadavg").read().split()[:3]]
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
