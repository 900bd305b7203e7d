"""Which runtime runs LiteMedSAM's image encoder: OpenVINO on the CPU where it imports, else torch.

    runtime = encoder_runtime("auto", model, device, model_dir, weights_id)
    features = runtime((1, 3, 256, 256) float32 tensor)     # -> (1, 256, 64, 64) float32 tensor
    runtime.name, runtime.status                              # "openvino-2026.4.1-f32", one sentence for the user

The image encoder is most of LiteMedSAM's time on a CPU. OpenVINO runs it ~5x faster than torch on the 2-core
Xeon this project is measured on, with the same masks (Dice 1.0 against torch float32; BENCHMARKS.md, LiteMedSAM
runtimes). The encoder is converted from the loaded torch module (``openvino.convert_model``; through an ONNX
export if that fails) once, and its IR (``encoder.xml`` / ``encoder.bin``, float32 weights) is kept under
``model_dir/sam/openvino/<weights, openvino and package version>/`` with a manifest of their digests, written
atomically: a later start compiles it in about a second, and a damaged copy is converted again. Anything that
goes wrong (openvino missing, conversion failing, a non-CPU device) leaves torch running, with bfloat16
autocast where the CPU does it natively as before, and a status sentence saying so; never a traceback.

The mask decoder follows the encoder onto OpenVINO (core/sam_decoder.py, the same folder scheme and helpers).

``runtime``: "auto" (OpenVINO on a CPU when it imports, else torch), "openvino" (the same, and the status says
why when it falls back) or "torch". The environment variable NAPARI_FEWSHOT_SAM_RUNTIME, when set, replaces
"auto" (a way to opt out without code).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Callable

import torch

from .devices import native_autocast
from .matching import matmul_dtype

LOG = logging.getLogger(__name__)
RUNTIMES = ("auto", "openvino", "torch")
RUNTIME_ENV = "NAPARI_FEWSHOT_SAM_RUNTIME"
SIDE = 256
PINNING = "ENABLE_CPU_PINNING"  # OpenVINO's property, turned off by openvino_setup
PRECISION = "f32"  # bf16 (whole or mixed) misses the Dice >= 0.99 bar against torch float32: min 0.967 over 69 masks


class TorchEncoder:
    """The torch image encoder: bfloat16 autocast where the hardware does it natively (matching.matmul_dtype)."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device, reason: str = ""):
        self.encoder = encoder
        self.device = device
        self.dtype = matmul_dtype(device.type)
        precision = "bfloat16 autocast" if self.dtype == torch.bfloat16 else "float32"
        self.name = f"torch-{'bfloat16' if self.dtype == torch.bfloat16 else 'float32'}"
        self.status = f"LiteMedSAM image encoder: torch {precision} on {device.type}" + (f" ({reason})" if reason else "")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) float32 on the device -> (1, 256, 64, 64) embedding (float32 or bfloat16)."""
        with native_autocast(self.device):
            return self.encoder(x)


class OpenVINOEncoder:
    """The image encoder compiled by OpenVINO for the CPU (float32 inference, torch's thread count)."""

    def __init__(self, compiled, version: str, threads: int, source: str):
        self.compiled = compiled
        self.name = f"openvino-{version}-{PRECISION}"
        self.status = (f"LiteMedSAM image encoder: OpenVINO {version} on cpu ({PRECISION}, {threads} threads, "
                       f"{source})")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) float32 CPU tensor -> (1, 256, 64, 64) float32 tensor."""
        out = self.compiled(x.detach().cpu().numpy())[0]
        return torch.from_numpy(out.copy())


def choose(runtime: str | None) -> str:
    """The runtime asked for: `runtime`, with "auto" (or None) replaced by $NAPARI_FEWSHOT_SAM_RUNTIME when set."""
    runtime = (runtime or "auto").lower()
    if runtime == "auto":
        runtime = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    if runtime not in RUNTIMES:
        raise ValueError(f"LiteMedSAM runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    return runtime


def encoder_runtime(runtime: str | None, encoder: torch.nn.Module, device: torch.device,
                    model_dir: Path | None, weights_id: str, stats: dict | None = None):
    """The image encoder's runtime (TorchEncoder or OpenVINOEncoder; see the module docstring).

    model_dir: folder for the converted IR (None: converted in memory, every time).
    stats: a dict whose "conversions" count is incremented per conversion (tests, benchmarks).
    """
    runtime = choose(runtime)
    if runtime == "torch":
        return TorchEncoder(encoder, device)
    if device.type != "cpu":
        return TorchEncoder(encoder, device, f"OpenVINO is used on the CPU only, this runs on {device.type}")
    try:
        import openvino
    except Exception as err:  # not installed, or a broken install
        return TorchEncoder(encoder, device, f"openvino does not import: {err.__class__.__name__}")
    try:
        return _openvino_encoder(openvino, encoder, model_dir, weights_id, stats if stats is not None else {})
    except Exception as err:  # conversion or compilation failed: torch still works
        LOG.debug("OpenVINO conversion failed", exc_info=True)
        return TorchEncoder(encoder, device, f"OpenVINO failed: {err.__class__.__name__}: {str(err)[:120]}")


def _openvino_encoder(ov, encoder: torch.nn.Module, model_dir: Path | None, weights_id: str, stats: dict):
    from .. import __version__

    version, threads, core, config = openvino_setup(ov)
    folder = None
    if model_dir is not None:
        folder = ir_folder(ov, model_dir, [weights_id, ov.__version__, __version__, SIDE])
        try:
            if _intact(folder):
                compiled = core.compile_model(str(folder / "encoder.xml"), "CPU", config)
                return OpenVINOEncoder(compiled, version, threads, "cached IR")
        except Exception:  # unreadable despite its manifest: converted again below
            LOG.debug("cached OpenVINO IR unusable", exc_info=True)
    model, source = _convert(ov, encoder)
    stats["conversions"] = stats.get("conversions", 0) + 1
    if folder is not None:
        _save(ov, model, folder)
    return OpenVINOEncoder(core.compile_model(model, "CPU", config), version, threads, source)


def openvino_setup(ov, precision: str = PRECISION):
    """(OpenVINO's version, threads (torch's count), an ov.Core, the CPU compile config: `precision`, those threads).

    "bf16" is asked for only where OpenVINO says the CPU computes it natively (BF16 among the CPU's
    OPTIMIZATION_CAPABILITIES: AVX512-BF16 or AMX), else "f32": without them OpenVINO does not fall back but
    emulates bfloat16, ~10x slower than f32 (LiteMedSAM's decoder 0.89 against 0.085 CPU-s per box on an AVX-512
    Xeon without AVX512-BF16, BENCHMARKS.md session 15, the lead), and most laptops lack it.

    CPU pinning is turned off (where OpenVINO has the property): with it, every process pins its inference threads
    to the first cores, so two processes with one thread each (a batch's two Dask workers, two command lines) both
    run on core 0, one at a time: 2.63 s per image encoder pass each against 1.29 s unpinned on a 2-core CPU, and
    the same 1.28 / 0.71 s either way in one quiet process (1 / 2 threads; BENCHMARKS.md, session 28)."""
    threads = max(1, torch.get_num_threads())
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        precision = "f32"
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
    if PINNING in core.get_property("CPU", "SUPPORTED_PROPERTIES"):
        config[PINNING] = False
    return ov.__version__.split("-")[0], threads, core, config


def ir_folder(ov, model_dir: Path, key: list) -> Path:
    """model_dir/sam/openvino/<digest of key>/: where one converted model's IR is kept."""
    return Path(model_dir) / "sam" / "openvino" / hashlib.sha1(json.dumps(key).encode()).hexdigest()[:20]


def _convert(ov, encoder: torch.nn.Module):
    """(ov.Model with a static (1, 3, 256, 256) input, how it was converted)."""
    example = torch.zeros(1, 3, SIDE, SIDE)
    was_training = encoder.training
    encoder.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about TinyViT's shape checks: not the user's
            model, source = _trace(ov, encoder, example)
    finally:
        encoder.train(was_training)
    model.reshape([1, 3, SIDE, SIDE])
    return model, source


TELEMETRY_USERS = ("openvino.tools.ovc.convert_impl", "openvino.tools.ovc.telemetry_utils", "openvino.tools.ovc.utils")


@contextlib.contextmanager
def no_telemetry():
    """OpenVINO's converter reports each conversion to an analytics service unless the user opted out (its
    ``openvino_telemetry`` package, installed with it). This tool sends nothing anywhere, and a hospital
    machine may have no network to wait on: while we convert, the converter's modules use OpenVINO's own
    do-nothing stub (what it uses when that package is absent). Fails (and torch runs the encoder) if the
    stub is gone in some later OpenVINO, rather than convert with telemetry on."""
    stub = importlib.import_module("openvino.tools.ovc.telemetry_stub")
    saved = []
    try:
        for name in TELEMETRY_USERS:
            module = importlib.import_module(name)
            if hasattr(module, "tm"):
                saved.append((module, module.tm))
                module.tm = stub
        yield
    finally:
        for module, real in saved:
            module.tm = real


def _trace(ov, encoder: torch.nn.Module, example: torch.Tensor):
    with no_telemetry():
        try:
            with torch.no_grad():
                return ov.convert_model(encoder, example_input=example), "converted from torch"
        except Exception:
            LOG.debug("openvino.convert_model on the torch module failed; trying ONNX", exc_info=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "encoder.onnx")
            torch.onnx.export(encoder, (example,), path, input_names=["image"], opset_version=17, dynamo=False)
            return ov.convert_model(path), "converted through ONNX"


def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(folder: Path, stem: str = "encoder") -> bool:
    """True when `folder` holds `stem`.xml / .bin whose digests match its manifest (written last)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return all(_digest(folder / name) == manifest[name] for name in (f"{stem}.xml", f"{stem}.bin"))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _save(ov, model, folder: Path, stem: str = "encoder") -> None:
    """Write the IR into a fresh sibling folder, then rename it into place (a damaged copy is replaced)."""
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        ov.save_model(model, str(tmp / f"{stem}.xml"), compress_to_fp16=False)
        manifest = {name: _digest(tmp / name) for name in (f"{stem}.xml", f"{stem}.bin")}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        LOG.debug("could not keep the OpenVINO IR under %s", folder, exc_info=True)  # a speed-up only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


EncoderRuntime = Callable[[torch.Tensor], torch.Tensor]
