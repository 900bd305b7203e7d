"""LiteMedSAM's image encoder quantized to int8 by nncf (post-training, activations and weights) on OpenVINO's CPU,
against today's OpenVINO f32: speed, embedding agreement and box-prompted mask Dice against torch float32.

    OMP_NUM_THREADS=1 python benchmarks/sam_int8.py [--busi 20] [--variants 't,m,t:patch_embed+layers\.0,...']
        [--runs 10] [--out FILE]

Needs nncf (3.4 was measured), which is not a dependency of the tool: install it beside the tool, e.g. into a
folder of its own on PYTHONPATH (`pip install --target DIR nncf`), as session 20 did.

Calibration: CT sample slices (package data, what a fresh installation has) every CAL_STEP-th slice
(calibration_planes: slices 0, 6, .., 108), none of them a scored slice (the script checks; 78 and 108 are
next to the scored 79 and 107). No ultrasound is shipped, so
BUSI is scored with a CT-only calibration. Scored planes: the CT sample's largest slice of each of its 4 organs
(every organ on it boxed), the shipped CHAOS-T2 cases (tests/data/chaos_t2, cases 1 and 5: largest liver and
right-kidney slices, every organ boxed), BUSI benign 1..N and malignant 1..N (../shared/data/busi, the lesion
boxed); boxes = reference box + 10 %. Reference: torch float32 (the encoder with no autocast; torch's float32
decoder). Each variant's embeddings are decoded by torch's float32 decoder and by the service's decoder (OpenVINO);
Dice of masks (p > 0.5) per dataset, mean and min. Speed: CPU seconds per plane on one CT plane, 2 warm-ups,
then `--runs` rounds, each running f32 and every variant in turn (interleaved, one process), median.
Variants (VARIANTS, variant_spec): nncf.quantize options, e.g. "t" (ModelType.TRANSFORMER), "m" (nncf's default
scheme), "t:patch_embed+layers\\.0" (those ops kept f32); quantized models are kept under /tmp/sam_int8_models
between runs (delete it after changing the calibration). `--calibrate busi`: a diagnostic of calibration domain only.
MedSAM's training data included public breast-ultrasound (possibly BUSI) and abdominal CT/MR sets, so these
figures may be optimistic.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"
CHAOS = ROOT / "tests" / "data" / "chaos_t2"
MODELS = Path("/tmp/sam_int8_models")

VARIANTS = {  # name -> (nncf.quantize options, ignored name patterns (regex on op names), help); see variant_spec
    "t": (dict(transformer=True), [], "ModelType.TRANSFORMER (SmoothQuant, no softmax/LN quantized)"),
    "m": (dict(transformer=False), [], "default (CNN) scheme"),
}


CAL_STEP = 6  # calibration: every CAL_STEP-th slice of the CT sample, from CAL_START
CAL_START = 0


def calibration_planes() -> tuple[list[int], list[np.ndarray]]:
    """([slice indices], [(H, W) float planes in [0, 1]]): the CT sample's slices the quantizer calibrates on,
    windowed as the plugin windows them (ImageStack)."""
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_volume
    from napari_fewshot.sample_data import CT_IMAGE

    stack = ImageStack(read_volume(CT_IMAGE).data)
    indices = list(range(CAL_START, len(stack), CAL_STEP))
    return indices, [stack.slice(i) for i in indices]


def load() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def planes(busi: int) -> list[tuple[str, str, np.ndarray, list]]:
    """[(dataset, name, (H, W) plane, [(4,) boxes])]."""
    from sam_encoder_precision import busi_plane, largest_slices

    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    out = []
    for dataset, image, labels, organs in [("ct", CT_IMAGE, CT_LABELS, None)] + [
            ("chaos", CHAOS / f"image_{n}.nii.gz", CHAOS / f"label_{n}.nii.gz", (1, 2)) for n in (1, 5)]:
        out += [(dataset, *row) for row in largest_slices(Path(image).name, image, labels, organs)]
    for kind in ("benign", "malignant"):
        for n in range(1, busi + 1):
            path = BUSI / kind / f"{kind} ({n}).png"
            if path.is_file():
                out.append(("busi", f"{kind} {n}", *busi_plane(path)))
    return out


def variant_spec(name: str):
    """VARIANTS[name], or a composed name "t|m[:keep1+keep2...][@opt...]": t = ModelType.TRANSFORMER, m = the default
    scheme; keep tokens are regexes on op names (a folded convolution is named by its batch norm) whose
    Convolution / MatMul ops stay f32 (e.g. "patch_embed+layers\\.0+fc2"); opts: "sq<alpha>" (SmoothQuant alpha on
    MatMul, -1 off), "bc" (full bias correction), "r<SET>" (activation ranges: nncf's RangeEstimatorParametersSet.<SET>, e.g. rMINMAX, rHISTOGRAM), "noconv"."""
    if name in VARIANTS:
        return VARIANTS[name]
    head, _, opts = name.partition("@")
    base, _, keep = head.partition(":")
    options = {"transformer": base == "t", "regex": True}
    for opt in filter(None, opts.split("@")):
        if opt.startswith("sq"):
            options["sq"] = float(opt[2:])
        elif opt == "bc":
            options["fast_bc"] = False
        elif opt.startswith("r"):
            options["ranges"] = opt[1:]
        elif opt == "noconv":
            options["types"] = ["Convolution", "GroupConvolution"]
    return options, [k for k in keep.split("+") if k], name


def op_names(model) -> dict[str, str]:
    """{friendly name of each Convolution / GroupConvolution / MatMul: the name it is known by}: a batch-norm-folded
    convolution ("Multiply_N") by its consumer's (the batch norm's) name."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
            name = op.get_friendly_name()
            if name.startswith("Multiply_"):
                name = next(iter(op.output(0).get_target_inputs())).get_node().get_friendly_name()
            out[op.get_friendly_name()] = name
    return out


def quantized(ov, core, xml: str, name: str, calibration: list[np.ndarray], busi: bool = False):
    """The variant's quantized ov.Model (kept under MODELS), and the quantization's wall / CPU seconds (0 if kept)."""
    import nncf

    path = MODELS / ("busi" if busi else "") / f"{name}.xml"
    if path.is_file():
        return core.read_model(str(path)), 0.0, 0.0
    options, patterns, _ = variant_spec(name)
    kwargs = dict(subset_size=len(calibration), fast_bias_correction=options.get("fast_bc", True))
    if options["transformer"]:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = {}
    if "sq" in options:
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=options["sq"])
    if options.get("ranges"):
        advanced["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, options["ranges"])
    if advanced:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    if patterns or options.get("types"):
        import re

        names = [f for f, known in op_names(core.read_model(xml)).items()
                 if any(re.search(p, known) for p in patterns)]
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=names, types=options.get("types", []), validate=False)
    wall, cpu = time.time(), time.process_time()
    model = nncf.quantize(core.read_model(xml), nncf.Dataset(calibration), **kwargs)
    wall, cpu = time.time() - wall, time.process_time() - cpu
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return model, wall, cpu


def precisions(compiled) -> dict:
    counts = collections.Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in ("FullyConnected", "Convolution", "MatMul"):
            counts[f"{kind} {info['runtimePrecision'].astype(str)}"] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busi", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--variants", default="t")
    parser.add_argument("--reference", default="/tmp/sam_int8_reference.pt")
    parser.add_argument("--calibrate", default="ct", choices=("ct", "busi"),
                        help="busi: a diagnostic only (BUSI benign and malignant 41-60, none scored; "
                             "no installation has them)")
    parser.add_argument("--out")
    args = parser.parse_args()
    import logging

    try:
        import nncf
    except ImportError:
        sys.exit("This benchmark needs nncf, which the tool does not install: pip install --target DIR nncf, "
                 "then PYTHONPATH=DIR.")
    import openvino as ov

    nncf.set_log_level(logging.ERROR)

    from sam_encoder_precision import reference_and_ir

    from napari_fewshot.core.features import default_cache_dir
    from napari_fewshot.core.sam_decoder import decoder_runtime
    from napari_fewshot.core.sam_prompt import BoxPrompter, PlaneEmbedding

    report = {"load_before": load(), "threads": torch.get_num_threads(), "cal_step": CAL_STEP}
    prompter = BoxPrompter()
    todo = planes(args.busi)
    cal_indices, cal_planes = calibration_planes()
    scored_ct = {int(name.split()[-1]) for d, name, _, _ in todo if d == "ct"}
    assert not scored_ct & set(cal_indices), "a scored CT slice is in the calibration"
    if args.calibrate == "busi":
        from napari_fewshot.io import read_volume

        paths = [BUSI / "benign" / f"benign ({n}).png" for n in range(41, 61)] + [
            BUSI / "malignant" / f"malignant ({n}).png" for n in range(41, 61)]
        cal_planes = [read_volume(p).data[0] for p in paths]
        cal_planes = [p.mean(-1) if p.ndim == 3 else p for p in cal_planes]
        MODELS.joinpath("busi").mkdir(parents=True, exist_ok=True)
    calibration = [prompter.to_input(p)[0].numpy() for p in cal_planes]
    report["calibrate"] = args.calibrate
    report["calibration"] = {"ct_slices": cal_indices, "scored_ct_slices": sorted(scored_ct)}
    inputs = [prompter.to_input(plane) for _, _, plane, _ in todo]
    names = [name for _, name, _, _ in todo]
    cached, runtime, xml = reference_and_ir(prompter, names, inputs, args.reference)
    decoders = {"service": decoder_runtime(runtime.name, prompter.model, torch.device("cpu"), default_cache_dir(),
                                           prompter.weights_id), "torch_f32": None}
    report["decoder"] = decoders["service"].status
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": report["threads"]}
    variants = {"f32": core.compile_model(core.read_model(xml), "CPU", config)}
    report["variants"] = {}
    for name in args.variants.split(","):
        model, wall, cpu = quantized(ov, core, xml, name, calibration, args.calibrate == "busi")
        variants[name] = core.compile_model(model, "CPU", config)
        report["variants"][name] = {"help": variant_spec(name)[2], "quantize_wall_s": wall, "quantize_cpu_s": cpu,
                                    "precisions": precisions(variants[name])}
        print(name, report["variants"][name], "load", load(), flush=True)

    # speed: one CT plane, 2 warm-ups each, then rounds of every variant in turn
    x = inputs[0][0].numpy()
    for compiled in variants.values():
        compiled(x), compiled(x)
    seconds = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, compiled in variants.items():
            started = time.process_time()
            compiled(x)
            seconds[name].append(time.process_time() - started)
    report["load_after_timing"] = load()

    def masks(features, p, decoder):
        (_, _, plane, boxes), (_, scale) = todo[p], inputs[p]
        got = prompter.decode_batch([(PlaneEmbedding(features.float(), plane.shape[:2], scale), np.stack(boxes), None)],
                                    decoder=decoder)[0][0]
        return got > 0.5

    reference = [masks(cached[names[p]], p, None) for p in range(len(todo))]  # torch float32 throughout
    rows = {}
    for name, compiled in variants.items():
        dice = {d: collections.defaultdict(list) for d in decoders}
        cosine, worst = [], {}
        for p, (x, _) in enumerate(inputs):
            features = torch.from_numpy(compiled(x.numpy())[0].copy())
            ref = cached[names[p]]
            cosine.append(float((features * ref).sum() / features.norm() / ref.norm()))
            for d, decoder in decoders.items():
                for a, b in zip(masks(features, p, decoder), reference[p]):
                    value = float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
                    dice[d][todo[p][0]].append(value)
                    if d == "service" and value < worst.get(todo[p][0], (2, ""))[0]:
                        worst[todo[p][0]] = (value, names[p])
        median = float(np.median(seconds[name]))
        rows[name] = {"cpu_s_per_plane_median": median,
                      "speedup_vs_f32": float(np.median(seconds["f32"])) / median,
                      "cosine_mean_min": [float(np.mean(cosine)), min(cosine)],
                      **{f"dice_{d}": {k: {"mean": float(np.mean(v)), "min": min(v), "masks": len(v)}
                                       for k, v in by.items()} for d, by in dice.items()},
                      "worst_service": worst}
        print(name, json.dumps(rows[name]), flush=True)
    report.update(rows=rows, planes=len(todo), load_after=load())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
