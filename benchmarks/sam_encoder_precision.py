"""LiteMedSAM's image encoder on OpenVINO in mixed precision: bf16 for most of the graph, chosen parts kept in f32
(the "precise" runtime info, written to IR and read back as DisablePrecisionConversion: OpenVINO 2026.4 ignores
it set in memory), against today's f32, the whole graph in bf16, stage-by-stage precision and int8 weights.

    OMP_NUM_THREADS=1 python benchmarks/sam_encoder_precision.py [--busi 20] [--chaos 3] [--repeats 1]
        [--variants f32,bf16,...] [--out FILE]

Planes: the CT sample's largest slice of each of its 4 organs (every organ on it boxed), BUSI benign 1..N and
malignant 1..N (the lesion boxed), CHAOS-T2 scans' largest liver and right-kidney slices (every organ boxed); boxes
are the reference box + 10 %. Reference: torch float32 embeddings (no autocast), kept under /tmp between runs.
Each variant's embeddings are decoded by (a) the adopted decoder (OpenVINO, bf16 where native) and (b) torch's
float32 decoder; Dice of the masks (p > 0.5) against the same decoder on torch float32's embeddings (the encoder's
effect alone), min / mean over masks. CPU seconds per plane: each plane runs every variant in turn (interleaved,
one process), medians over planes x repeats. Variants: "f32" (today), "bf16" (the whole
graph), "bf16-keep:<groups>" (bf16 but those groups in f32; groups: patch_embed, layers.0 .. layers.3, neck and
op types such as Add, MVN, Gelu, Multiply, ScaledDotProductAttention; FullyConnected ignores the mark), "split:<6
letters>" (each stage converted and compiled on its own, f = f32, b = bf16, chained: see Chain) and "int8w-f32"
(int8 weights for every MatMul, f32 compute; see int8_weights). The compiled graph's runtime precisions are
counted per variant (a mark the plugin ignored shows as no change).
⚠ MedSAM's training data included public breast-ultrasound (possibly BUSI) and abdominal CT/MR sets.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
STAGE = re.compile(r"__module\.(patch_embed|layers\.\d|neck)")


def load() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def largest_slices(prefix: str, image, labels, organs=None) -> list[tuple[str, np.ndarray, list]]:
    """A labelled volume's planes to box (also sam_int8.py's): per organ (every label value, or `organs`) the slice
    where it is largest -> [(f"{prefix} slice {index}", (H, W) plane, [(4,) box + 10 % of every organ on it])]."""
    from napari_fewshot.core.sam_prompt import box_of
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume

    volume = read_volume(image)
    label = read_labels(labels, like=volume)
    stack = ImageStack(volume.data)
    out = []
    for organ in organs or np.unique(label)[1:]:
        index = int(np.argmax((label == organ).sum((1, 2))))
        boxes = [box_of(label[index] == c, 0.1) for c in np.unique(label[index])[1:]]
        out.append((f"{prefix} slice {index}", stack.slice(index), boxes))
    return out


def busi_plane(path) -> tuple[np.ndarray, list]:
    """A BUSI image -> ((H, W) grey plane, [its lesion's (4,) box + 10 %])."""
    from napari_fewshot.core.sam_prompt import box_of
    from napari_fewshot.io import read_busi_mask, read_volume

    image = read_volume(path).data[0]
    return image.mean(-1) if image.ndim == 3 else image, [box_of(read_busi_mask(path), 0.1)]


def planes(busi: int, chaos: int) -> list[tuple[str, np.ndarray, list]]:
    """[(name, (H, W) plane, [(4,) boxes])]."""
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    out = []
    chaos_files = sorted((DATA / "chaos_t2").glob("image_*.nii.gz"), key=lambda p: int(p.name[6:-7]))[:chaos]
    for name, image, labels, organs in [("ct", CT_IMAGE, CT_LABELS, None)] + [
            (f"chaos{p.name[6:-7]}", p, p.with_name(p.name.replace("image", "label")), (1, 2)) for p in chaos_files]:
        out += largest_slices(name, image, labels, organs)
    for kind in ("benign", "malignant"):
        for n in range(1, busi + 1):
            out.append((f"{kind} {n}", *busi_plane(DATA / "busi" / kind / f"{kind} ({n}).png")))
    return out


def stages(model) -> dict:
    """{op friendly name: stage} for every op of the converted encoder: the module its name carries, else the next
    named op's (OpenVINO names a batch-norm-folded convolution "Multiply_N"; its batch norm's Add carries it)."""
    out, stage = {}, "neck"
    for op in reversed(model.get_ordered_ops()):
        found = STAGE.search(op.get_friendly_name())
        stage = found.group(1) if found else stage
        out[op.get_friendly_name()] = stage
    return out


def variant(ov, core, xml: str, name: str, threads: int):
    """Compile one variant (see the module docstring) -> (compiled model, Counter of (layer type, precision))."""
    model = core.read_model(xml)
    hint = "bf16" if name.startswith("bf16") else "f32"
    if name == "int8w-f32":
        int8_weights(model)
    if name.startswith("bf16-keep:"):
        keep = set(name.split(":", 1)[1].split("+"))
        where = stages(model)
        for op in model.get_ops():
            if where[op.get_friendly_name()] in keep or op.get_type_name() in keep:
                op.get_rt_info()["precise_0"] = ""  # an in-memory mark is ignored: through IR, see below
        with tempfile.TemporaryDirectory() as tmp:  # written, it reads back as DisablePrecisionConversion
            ov.save_model(model, f"{tmp}/marked.xml", compress_to_fp16=False)
            model = core.read_model(f"{tmp}/marked.xml")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads})
    counts = collections.Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind not in ("Const", "Input", "Output", "Reshape", "Reorder"):
            counts[info["runtimePrecision"].astype(str)] += 1
    return compiled, dict(counts)


def int8_weights(model) -> int:
    """Every MatMul's constant weights as int8 (symmetric, one scale per output channel) -> Convert -> Multiply,
    the weight-compression pattern the CPU plugin runs as FullyConnected with i8 weights (no nncf needed).
    Returns how many were replaced."""
    import openvino.opset13 as ops

    replaced = 0
    for op in model.get_ordered_ops():
        source = op.input_value(1).get_node() if op.get_type_name() == "MatMul" else None
        if source is None or source.get_type_name() != "Constant":
            continue
        weights = source.get_data().astype(np.float32)
        axis = 1 if op.get_attributes().get("transpose_b", False) else 0
        scale = np.abs(weights).max(axis=axis, keepdims=True) / 127 + 1e-12
        q = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
        op.input(1).replace_source_output(ops.multiply(ops.convert(ops.constant(q), "f32"),
                                                       ops.constant(scale.astype(np.float32))).output(0))
        replaced += 1
    return replaced


class Chain:
    """The encoder as its stages compiled one by one, each in its own precision ("split:ffbbbb": patch_embed,
    layers.0 .. layers.3, neck; f = f32, b = bf16), called in turn: compiled(x)[0] as one compiled model."""

    def __init__(self, ov, core, encoder, example: torch.Tensor, code: str, threads: int):
        from napari_fewshot.core.sam_runtime import no_telemetry

        self.stages = []
        h = example
        with no_telemetry(), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            for part, c in zip([encoder.patch_embed, *encoder.layers, Neck(encoder.neck)], code):
                model = ov.convert_model(part, example_input=h)
                model.reshape(list(h.shape))
                self.stages.append(core.compile_model(model, "CPU", {
                    "INFERENCE_PRECISION_HINT": "bf16" if c == "b" else "f32", "INFERENCE_NUM_THREADS": threads}))
                h = part(h)

    def __call__(self, x):
        for stage in self.stages:
            x = stage(x)[0]
        return [x]


class Neck(torch.nn.Module):
    """TinyViT's last step: (B, 4096, C) tokens -> (B, C, 64, 64) -> the neck."""

    def __init__(self, neck):
        super().__init__()
        self.neck = neck

    def forward(self, x):
        return self.neck(x.view(x.shape[0], 64, 64, x.shape[2]).permute(0, 3, 1, 2))


def reference_and_ir(prompter, names: list[str], inputs: list, reference: str) -> tuple[dict, object, str]:
    """The torch float32 reference and today's OpenVINO f32 encoder (also sam_int8.py's): name -> (1, 256, 64, 64)
    embedding of each of `inputs` ((1, 3, 256, 256) input, scale) by the torch encoder (kept in the file `reference`
    between runs), the service's encoder runtime (converted into the user's cache folder if need be) and the path
    of its IR (encoder.xml)."""
    import openvino as ov

    from napari_fewshot import __version__
    from napari_fewshot.core.features import default_cache_dir
    from napari_fewshot.core.sam_runtime import SIDE, encoder_runtime, ir_folder

    encoder = prompter.model.image_encoder.eval()
    cached = torch.load(reference) if Path(reference).is_file() else {}
    with torch.no_grad():
        for name, (x, _) in zip(names, inputs):
            if name not in cached:
                cached[name] = encoder(x)
                print("reference", name, flush=True)
    torch.save(cached, reference)
    runtime = encoder_runtime("openvino", encoder, torch.device("cpu"), default_cache_dir(), prompter.weights_id, {})
    folder = ir_folder(ov, default_cache_dir(), [prompter.weights_id, ov.__version__, __version__, SIDE])
    return cached, runtime, str(folder / "encoder.xml")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busi", type=int, default=20)
    parser.add_argument("--chaos", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", default="f32,bf16")
    parser.add_argument("--reference", default="/tmp/sam_encoder_precision_reference.pt")
    parser.add_argument("--out")
    args = parser.parse_args()
    import openvino as ov

    from napari_fewshot.core.features import default_cache_dir
    from napari_fewshot.core.sam_decoder import decoder_runtime
    from napari_fewshot.core.sam_prompt import BoxPrompter, PlaneEmbedding

    report = {"load_before": load(), "threads": torch.get_num_threads()}
    prompter = BoxPrompter()
    encoder = prompter.model.image_encoder.eval()
    todo = planes(args.busi, args.chaos)
    inputs = [prompter.to_input(plane) for _, plane, _ in todo]
    names = [name for name, _, _ in todo]
    cached, runtime, xml = reference_and_ir(prompter, names, inputs, args.reference)
    decoders = {"adopted": decoder_runtime(runtime.name, prompter.model, torch.device("cpu"), default_cache_dir(),
                                           prompter.weights_id), "torch f32": None}
    report["decoder"] = decoders["adopted"].status
    core = ov.Core()
    variants, report["precisions"] = {}, {}
    for name in args.variants.split(","):
        if name.startswith("split:"):
            variants[name] = Chain(ov, core, encoder, inputs[0][0], name[6:], report["threads"])
            report["precisions"][name] = name[6:]
        else:
            variants[name], report["precisions"][name] = variant(ov, core, xml, name, report["threads"])
        print(name, report["precisions"][name], flush=True)

    def masks(features, p, decoder):
        (_, plane, boxes), (_, scale) = todo[p], inputs[p]
        got = prompter.decode_batch([(PlaneEmbedding(features.float(), plane.shape[:2], scale), np.stack(boxes), None)],
                                    decoder=decoder)[0][0]
        return got > 0.5

    seconds = {name: [] for name in variants}
    dice = {name: {d: [] for d in decoders} for name in variants}
    error = {name: [] for name in variants}  # |embedding - torch f32's| / |torch f32's|, per plane
    for compiled in variants.values():
        compiled(inputs[0][0].numpy())  # warm-up
    for repeat in range(args.repeats):
        for p, (x, _) in enumerate(inputs):
            for name, compiled in variants.items():
                started = time.process_time()
                features = torch.from_numpy(compiled(x.numpy())[0].copy())
                seconds[name].append(time.process_time() - started)
                if repeat == 0:
                    error[name].append(float((features - cached[names[p]]).norm() / cached[names[p]].norm()))
                    for d, decoder in decoders.items():
                        ref = masks(cached[names[p]], p, decoder)
                        for a, b in zip(masks(features, p, decoder), ref):
                            dice[name][d].append(float(2 * (a & b).sum() / max(1, a.sum() + b.sum())))
            print(p, names[p], {n: round(s[-1], 3) for n, s in seconds.items()}, "load", load(), flush=True)
    base = float(np.median(seconds["f32"])) if "f32" in seconds else None
    rows = {}
    for name in variants:
        median = float(np.median(seconds[name]))
        rows[name] = {"cpu_s_per_plane_median": median, "speedup_vs_f32": base / median if base else None,
                      **{f"dice_{d}_min_mean": [min(v), float(np.mean(v))] for d, v in dice[name].items()},
                      "relative_error_mean_max": [float(np.mean(error[name])), max(error[name])]}
        worst = int(np.argmin(dice[name]["adopted"]))
        rows[name]["worst_mask"] = worst
        print(name, json.dumps(rows[name]), flush=True)
    report.update(rows=rows, planes=len(todo), masks=len(dice[next(iter(variants))]["adopted"]), load_after=load())
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
