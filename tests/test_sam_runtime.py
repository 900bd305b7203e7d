"""LiteMedSAM's image encoder and mask decoder on OpenVINO (core/sam_runtime.py, core/sam_decoder.py through
core/sam_service.py): the same masks as torch float32 on CT-sample slices (box and mask prompts, full and low
resolution), a torch fallback with a status that says why, the converted IRs cached under the service's folder
and rebuilt when damaged, Fine-tune's tuned hypernetwork weights decoded on OpenVINO too (torch when tuning
touched other weights). Real weights, real slices."""

import sys

import numpy as np
import pytest
import torch

from napari_fewshot.core.sam_decoder import HYPER, TorchDecoder
from napari_fewshot.core.sam_prompt import BoxPrompter, box_of
from napari_fewshot.core.sam_service import LiteMedSAMService

openvino = pytest.importorskip("openvino", reason="openvino is not installed: the torch runtime is the only one")


@pytest.fixture(scope="module")
def prompter():
    return BoxPrompter()


@pytest.fixture(scope="module")
def ct_planes():
    """[(plane (H, W) float in [0, 1], (N, 4) reference boxes + 10 %)]: the CT sample's slices where its first two
    organs are largest (every organ on them boxed)."""
    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    stack = ImageStack(volume.data)
    organs = np.unique(labels)[1:]
    largest = [int(np.argmax((labels == organ).sum((1, 2)))) for organ in organs[:2]]
    indices = sorted(set(largest))
    out = []
    for index in indices:
        boxes = [box_of(labels[index] == c, 0.1) for c in np.unique(labels[index])[1:]]
        out.append((stack.slice(index), np.stack(boxes)))
    return out


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _service(prompter, folder, runtime="auto"):
    return LiteMedSAMService("cpu", 1 << 28, prompter_factory=lambda device: prompter, runtime=runtime,
                             model_dir=folder)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_openvino_embeddings_decode_to_the_masks_of_torch_float32(prompter, ct_planes, ir_dir):
    service = _service(prompter, ir_dir)
    assert "not loaded" in service.runtime_status
    scores = []
    for plane, boxes in ct_planes:
        with torch.no_grad():
            reference = prompter.decode(prompter.embed(plane), boxes) > 0.5  # torch float32, no autocast
        masks = service.decode([(service.embedding(plane), boxes, None)])[0] > 0.5
        assert reference.any(axis=(1, 2)).all()
        scores += [_dice(a, b) for a, b in zip(masks, reference)]
    assert service.runtime_name.startswith("openvino-") and "OpenVINO" in service.runtime_status
    assert service.runtime_stats["conversions"] == 1 and service.runtime_stats["decoder_conversions"] == 1
    assert len(scores) >= 3 and min(scores) >= 0.99, scores


def test_a_second_service_loads_the_cached_ir(prompter, ct_planes, ir_dir):
    plane = ct_planes[0][0]
    first = _service(prompter, ir_dir)
    assert first.embedding(plane).features.shape == (1, 256, 64, 64)
    assert first.runtime_stats.get("conversions", 0) == 0 and "cached IR" in first.runtime_status
    folders = {frozenset(p.name for p in f.iterdir()) for f in (ir_dir / "sam" / "openvino").iterdir()}
    assert folders == {frozenset({"encoder.xml", "encoder.bin", "manifest.json"}),  # the mask decoder's beside
                       frozenset({"decoder.xml", "decoder.bin", "manifest.json"})}  # (core/sam_decoder.py)


def test_a_damaged_cached_ir_is_converted_again(tmp_path):
    # the cache's mechanics on a small real module (a conversion of LiteMedSAM's encoder takes 20 s or more)
    from napari_fewshot.core.sam_runtime import encoder_runtime

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.GELU()).eval()
    x = torch.rand(1, 3, 256, 256)
    stats = {}
    first = encoder_runtime("openvino", module, torch.device("cpu"), tmp_path, "small", stats)
    with torch.no_grad():
        assert torch.allclose(first(x), module(x), atol=1e-4)
    folder = next((tmp_path / "sam" / "openvino").iterdir())
    weights = folder / "encoder.bin"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])  # a half-written copy
    again = encoder_runtime("openvino", module, torch.device("cpu"), tmp_path, "small", stats)
    assert stats["conversions"] == 2 and "converted" in again.status
    assert weights.stat().st_size == size  # rewritten whole
    third = encoder_runtime("openvino", module, torch.device("cpu"), tmp_path, "small", stats)
    assert stats["conversions"] == 2 and "cached IR" in third.status
    assert torch.allclose(third(x), first(x), atol=1e-6)
    (folder / "manifest.json").write_text("{")  # a damaged manifest counts as a damaged copy
    encoder_runtime("openvino", module, torch.device("cpu"), tmp_path, "small", stats)
    assert stats["conversions"] == 3


def test_torch_runs_when_openvino_does_not_import_or_is_not_asked_for(prompter, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    service = _service(prompter, tmp_path)
    assert service.runtime_name.startswith("torch-")
    assert "torch" in service.runtime_status and "openvino does not import" in service.runtime_status
    assert not (tmp_path / "sam" / "openvino").exists()
    monkeypatch.delitem(sys.modules, "openvino")
    assert _service(prompter, tmp_path, "torch").runtime_name.startswith("torch-")
    monkeypatch.setenv("NAPARI_FEWSHOT_SAM_RUNTIME", "torch")
    assert _service(prompter, tmp_path).runtime == "torch"  # the variable replaces "auto"
    with pytest.raises(ValueError, match="runtime must be one of"):
        _service(prompter, tmp_path, "tensorrt")


def test_embeddings_of_each_runtime_are_kept_apart_on_disk(prompter, ct_planes, ir_dir, tmp_path):
    plane = ct_planes[0][0]
    on_disk = {}
    for runtime in ("openvino", "torch"):
        service = LiteMedSAMService("cpu", 1 << 28, tmp_path, lambda device: prompter, runtime=runtime,
                                    model_dir=ir_dir)
        on_disk[runtime] = service._folder()
    assert on_disk["openvino"] != on_disk["torch"]


def test_converting_sends_no_telemetry(tmp_path, monkeypatch):
    """OpenVINO's converter would report the conversion to an analytics service (openvino_telemetry); the
    tool converts with OpenVINO's stub instead, so no real Telemetry object is ever made."""
    telemetry = pytest.importorskip("openvino_telemetry")
    from napari_fewshot.core.sam_runtime import encoder_runtime

    made = []
    real_init = telemetry.Telemetry.__init__
    monkeypatch.setattr(telemetry.Telemetry, "__init__", lambda self, *a, **k: made.append(k) or real_init(self, *a, **k))
    monkeypatch.delenv("CI", raising=False)  # the package itself stays quiet under CI=true: test the real case
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4)).eval()
    stats = {}
    runtime = encoder_runtime("openvino", module, torch.device("cpu"), tmp_path, "telemetry", stats)
    assert stats["conversions"] == 1 and runtime.name.startswith("openvino")
    assert made == []


# -- the mask decoder (core/sam_decoder.py), converted by the first test above into ir_dir ------------------
@pytest.fixture(scope="module")
def service(prompter, ir_dir):
    return _service(prompter, ir_dir, "openvino")


@pytest.fixture(scope="module")
def requests_(service):
    """[(PlaneEmbedding, (N, 4) boxes, (N, H, W) coarse masks)]: four CT-sample slices across its organs, each
    organ's reference mask boxed twice (+ 5 %, + 20 %) and given eroded as a mask prompt (a coarse guess)."""
    from scipy import ndimage

    from napari_fewshot.core.stack import ImageStack
    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    volume = read_volume(CT_IMAGE)
    labels = read_labels(CT_LABELS, like=volume)
    stack = ImageStack(volume.data)
    out = []
    for index in (76, 86, 94, 104):
        organs = [c for c in np.unique(labels[index])[1:] if (labels[index] == c).sum() >= 50] * 2
        masks = np.stack([ndimage.binary_erosion(labels[index] == c, iterations=2) for c in organs])
        boxes = np.stack([box_of(labels[index] == c, 0.05 if n < len(organs) // 2 else 0.2)
                          for n, c in enumerate(organs)])
        out.append((service.embedding_of(stack, index), boxes, masks.astype(np.float32)))
    return out


def _scores(ours, reference) -> list[float]:
    return [_dice(a > 0.5, b > 0.5) for x, y in zip(ours, reference) for a, b in zip(x, y)]


def _off(ours, reference) -> float:
    """Mean |p - p_torch| over every mask's pixels: ~1e-6 for an exact f32 graph, ~1e-3 in bfloat16."""
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(ours, reference)]))


def _tolerance(service) -> float:
    """How far OpenVINO's probabilities may be from torch float32's: f32 is the same arithmetic; bf16 (the
    decoder's precision where the CPU has it natively, sam_decoder.PRECISION) rounds, and is held to the masks."""
    return 1e-4 if service.decoder_runtime().name.endswith("-f32") else 5e-3


def test_openvino_decodes_the_masks_of_torch_float32(prompter, service, requests_):
    boxes_only = [(e, b, None) for e, b, _ in requests_]
    for requests in (boxes_only, requests_[1:3]):  # boxes; boxes and mask prompts
        ours = service.decode(requests)
        with torch.no_grad():
            reference = [p for p, _ in prompter.decode_batch(requests, decoder=TorchDecoder(prompter.model))]
        scores = _scores(ours, reference)
        assert len(scores) >= 12 and min(scores) >= 0.99, scores
        assert _off(ours, reference) < _tolerance(service)
    assert "mask decoder: OpenVINO" in service.runtime_status and "cached IR" in service.runtime_status
    assert service.runtime_stats.get("decoder_conversions", 0) == 0  # the first test converted it


def test_the_converted_graph_is_torch_exactly_in_f32(prompter, ir_dir, requests_, monkeypatch):
    """bf16 rounding could hide a wrong graph behind Dice >= 0.99: compiled in f32, the converted decoder must
    give torch float32's probabilities."""
    from napari_fewshot.core import sam_decoder

    monkeypatch.setattr(sam_decoder, "PRECISION", "f32")
    f32 = _service(prompter, ir_dir, "openvino")
    requests = [(e, b, m) for e, b, m in requests_[:2]]
    ours = f32.decode(requests)
    assert f32.decoder_runtime().name.endswith("-f32") and "cached IR" in f32.runtime_status
    with torch.no_grad():
        reference = [p for p, _ in prompter.decode_batch(requests, decoder=TorchDecoder(prompter.model))]
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours, reference)) < 1e-3


def test_the_low_resolution_candidates_agree_with_torch_float32(prompter, service, requests_):
    requests = [(e, b, None) for e, b, _ in requests_]
    ours = service.decode(requests, low_res=True)
    with torch.no_grad():
        reference = [p for p, _ in prompter.decode_batch(requests, 4, low_res=True)]
    assert [o.shape for o in ours] == [r.shape for r in reference]
    scores = _scores(ours, reference)
    assert min(scores) >= 0.99, scores


def test_tuned_hypernetwork_weights_decode_on_openvino(prompter, service, requests_):
    requests = [(e, b[:2], None) for e, b, _ in requests_[:2]]
    before = service.decode(requests)
    state = service.decoder_state()
    generator = torch.Generator().manual_seed(0)
    tuned = {k: v + 0.05 * torch.randn(v.shape, generator=generator) * v.abs().mean() if k.startswith(HYPER) else v
             for k, v in state.items()}
    service.load_decoder_state(tuned)
    try:
        assert service.decoder_runtime().name.startswith("openvino")
        ours = service.decode(requests)
        with torch.no_grad():
            reference = [p for p, _ in prompter.decode_batch(requests, decoder=TorchDecoder(prompter.model))]
        assert max(float(np.abs(a - b).max()) for a, b in zip(ours, before)) > 0.05  # the tuning shows
        assert _off(ours, reference) < _tolerance(service)  # and OpenVINO uses it
        assert min(_scores(ours, reference)) >= 0.99
        own = service.decode(requests, own_weights=True)  # what selection chooses with: LiteMedSAM's own
        assert max(float(np.abs(a - b).max()) for a, b in zip(own, before)) < 1e-5
        assert max(float(np.abs(a - b).max()) for a, b in zip(service.decode(requests), ours)) < 1e-5  # tuned again
        other = dict(tuned)
        name = next(k for k in state if not k.startswith(HYPER) and state[k].dtype.is_floating_point)
        other[name] = state[name] + 0.01
        service.load_decoder_state(other)  # beyond what the converted graph takes: torch decodes
        assert service.decoder_runtime().name == "torch" and "tuned weights" in service.runtime_status
        assert service.decoder_runtime() is service.decoder_runtime()  # one torch decoder, not one per call
    finally:
        service.reset_decoder()
    assert service.decoder_runtime().name.startswith("openvino")
    again = service.decode(requests)
    assert max(float(np.abs(a - b).max()) for a, b in zip(again, before)) < 1e-5


def test_the_decoder_falls_back_to_torch_when_its_conversion_fails(prompter, service, requests_,
                                                                             monkeypatch):
    from napari_fewshot.core import sam_decoder

    monkeypatch.setattr(sam_decoder, "_convert", lambda ov, model, *graph: (_ for _ in ()).throw(RuntimeError("no")))
    monkeypatch.setattr(sam_decoder, "_intact", lambda folder, stem: False)  # as if nothing were cached
    third = LiteMedSAMService("cpu", 1 << 28, prompter_factory=lambda device: prompter, runtime="openvino",
                              model_dir=service._model_dir)  # the encoder's IR is cached; the decoder fails
    assert third.decoder_runtime().name == "torch" and "OpenVINO failed: RuntimeError" in third.runtime_status
    embedding, boxes, _ = requests_[0]
    assert third.decode([(embedding, boxes, None)])[0].shape == (len(boxes), *embedding.shape)
    torch_service = LiteMedSAMService("cpu", 1 << 28, prompter_factory=lambda device: prompter, runtime="torch")
    assert torch_service.decoder_runtime().name == "torch"
    assert "image encoder runs on torch" in torch_service.decoder_runtime().status


def test_bfloat16_is_asked_for_only_where_the_cpu_computes_it_natively():
    """Without AVX512-BF16/AMX OpenVINO honours a "bf16" hint by emulating it, ~10x slower than f32 (the decoder:
    0.89 against 0.085 CPU-s per box on an AVX-512 Xeon without AVX512-BF16); such a CPU must be given f32."""
    from napari_fewshot.core.sam_runtime import openvino_setup

    def fake_ov(capabilities):
        class Core:
            def get_property(self, device, name):
                assert device == "CPU" and name in ("OPTIMIZATION_CAPABILITIES", "SUPPORTED_PROPERTIES")
                return capabilities if name == "OPTIMIZATION_CAPABILITIES" else []  # an OpenVINO without pinning
        return type("ov", (), {"__version__": "2026.4.1-1", "Core": Core})

    without = openvino_setup(fake_ov(["WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]), "bf16")[3]
    native = openvino_setup(fake_ov(["FP32", "BF16", "INT8"]), "bf16")[3]
    assert without["INFERENCE_PRECISION_HINT"] == "f32" and native["INFERENCE_PRECISION_HINT"] == "bf16"
    assert openvino_setup(fake_ov(["FP32", "BF16"]), "f32")[3]["INFERENCE_PRECISION_HINT"] == "f32"
    assert "ENABLE_CPU_PINNING" not in native  # a property this OpenVINO lacks is not set (compiling would fail)


def test_openvino_leaves_its_threads_unpinned(tmp_path):
    """Pinned, every process puts its inference threads on the first cores, so a batch's two Dask workers (one thread
    each) run LiteMedSAM on the same core, one at a time (BENCHMARKS.md, session 28); the compiled encoder and
    decoder are asked not to pin."""
    from napari_fewshot.core.sam_runtime import PINNING, encoder_runtime, openvino_setup

    if PINNING not in openvino.Core().get_property("CPU", "SUPPORTED_PROPERTIES"):
        pytest.skip("this OpenVINO has no CPU pinning property")
    assert openvino_setup(openvino)[3][PINNING] is False
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4)).eval()
    runtime = encoder_runtime("openvino", module, torch.device("cpu"), tmp_path, "pinning", {})
    assert runtime.compiled.get_property(PINNING) is False
