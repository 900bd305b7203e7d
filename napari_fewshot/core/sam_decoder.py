"""Which runtime runs LiteMedSAM's mask decoder: OpenVINO on the CPU beside OpenVINO's image encoder, else torch.

    runtime = decoder_runtime(encoder_name, model, device, model_dir, weights_id)
    logits, iou = runtime(image, sparse, dense)   # image, dense: (M, 256, 64, 64) float32 embedding and
                                                  # dense prompt; sparse: (M, T, 256) prompt tokens
                                                  # -> (M, 1, 256, 256) logits, (M, 1) IoU estimates
    runtime.name, runtime.status         # "openvino-2026.4.1-bf16", one sentence for the user

After OpenVINO took the image encoder (core/sam_runtime.py), the torch mask decoder was a quarter of a refined
CT sample's time. Here the decoder's single-mask output (what refinement, the box tool and selection read)
is converted once to OpenVINO (a dynamic number of prompts M; f32 weights, run in bf16 where the CPU has it) and
kept beside the encoder's IR
(``model_dir/sam/openvino/<weights, openvino, package version, "decoder">/decoder.xml``, manifest, atomic
save, converted inside ``no_telemetry()``). The prompt encoder stays in torch (a few small layers: boxes to
two tokens, a coarse mask to a (256, 64, 64) dense prompt, added to the image embedding before the call).

The hypernetwork MLP of the single mask (``output_hypernetworks_mlps.0``: what Fine-tune's decoder tuning
trains, core/decoder_tuning.py) is an input of the converted graph, not a constant: every call passes the
module's current weights, so tuned weights decode on OpenVINO too, exactly. Tuned weights elsewhere in the
decoder (not what this project trains) make :func:`usable` false: the service then decodes on torch and says so.
Any failure leaves torch decoding (float32), with a status sentence saying why.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F

from .sam_runtime import _intact, _save, ir_folder, no_telemetry, openvino_setup

LOG = logging.getLogger(__name__)
HYPER = "output_hypernetworks_mlps.0."  # the decoder's only weights passed at each call (decoder_tuning.TUNED)
GRAPH = 1  # the converted graph's version (part of the IR's folder name)
# Unlike the image encoder's (sam_runtime.PRECISION), the decoder's masks keep to float32's in bfloat16: Dice
# >= 0.99 against torch float32 on every CT and BUSI mask measured, at half the CPU time (BENCHMARKS.md, session
# 11). Asked for only where the CPU has bfloat16 natively, else f32 (sam_runtime.openvino_setup: OpenVINO would
# emulate it ~10x slower); the runtime's name says which ran.
PRECISION = "bf16"


class TorchDecoder:
    """LiteMedSAM's torch mask decoder, single-mask output (float32, or whatever autocast the caller set)."""

    def __init__(self, model, reason: str = ""):
        self.model = model
        self.name = "torch"
        self.status = "LiteMedSAM mask decoder: torch" + (f" ({reason})" if reason else "")

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, dense (M, 256, 64, 64), sparse (M, T, 256) -> logits (M, 1, 256, 256), iou (M, 1)."""
        return self.model.mask_decoder(image_embeddings=image, image_pe=self.model.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)


def transformer_part(decoder, image_pe: torch.Tensor, src: torch.Tensor, sparse: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mask decoder up to its hypernetwork (MaskDecoder.predict_masks' first half), for M prompts.

    decoder: SAM's MaskDecoder; image_pe (1, 256, 64, 64) the prompt encoder's dense positional encoding;
    src (M, 256, 64, 64) the image embedding plus the dense prompt; sparse (M, T, 256) the prompt tokens.
    Returns ((M, 256) IoU token, (M, 256) single-mask token, (M, 32, 256, 256) upscaled embedding). What the
    converted graph (SingleMaskGraph) and Fine-tune's cached activations (core/decoder_tuning.py) both run.
    """
    m = src.shape[0]
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], 0)[None].expand(m, -1, -1)
    tokens = torch.cat([tokens, sparse], 1)
    pos = image_pe.expand(m, -1, -1, -1)
    hs, out = decoder.transformer(src, pos, tokens)
    c, h, w = src.shape[1:]
    up = decoder.output_upscaling(out.transpose(1, 2).reshape(m, c, h, w))
    return hs[:, 0, :], hs[:, 1, :], up


class SingleMaskGraph(torch.nn.Module):
    """The mask decoder's single-mask path with the hypernetwork MLP's weights as inputs (what is converted).

    forward(src (M, 256, 64, 64), sparse (M, T, 256), w0, b0, w1, b1, ...) -> (M, 1, 256, 256) logits, (M, 1) iou
    """

    def __init__(self, model):
        super().__init__()
        decoder = model.mask_decoder
        self.decoder = decoder
        self.register_buffer("image_pe", model.prompt_encoder.get_dense_pe().detach().clone())
        mlp = decoder.output_hypernetworks_mlps[0]
        self.layers, self.sigmoid = len(mlp.layers), bool(getattr(mlp, "sigmoid_output", False))

    def forward(self, src, sparse, *weights):
        d = self.decoder
        m = src.shape[0]
        iou_token, x, up = transformer_part(d, self.image_pe, src, sparse)  # up: (M, 32, 256, 256)
        for i in range(self.layers):
            x = F.linear(x, weights[2 * i], weights[2 * i + 1])
            x = F.relu(x) if i < self.layers - 1 else x
        x = torch.sigmoid(x) if self.sigmoid else x
        logits = torch.bmm(x[:, None, :], up.flatten(2)).reshape(m, 1, up.shape[2], up.shape[3])
        iou = d.iou_prediction_head(iou_token)[:, :1]
        return logits, iou


def hyper_weights(model) -> list[torch.Tensor]:
    """The hypernetwork MLP's current weights and biases, float32 CPU: [w0, b0, w1, b1, ...]."""
    mlp = model.mask_decoder.output_hypernetworks_mlps[0]
    out = []
    for layer in mlp.layers:
        out += [layer.weight.detach().float().cpu(), layer.bias.detach().float().cpu()]
    return out


def usable(state: dict[str, torch.Tensor], original: dict[str, torch.Tensor] | None) -> bool:
    """Whether the converted graph decodes with the weights `state`: only the hypernetwork MLP may differ from
    `original` (LiteMedSAM's own decoder weights; None: never tuned)."""
    if original is None:
        return True
    return all(k.startswith(HYPER) or torch.equal(v.cpu(), original[k].cpu()) for k, v in state.items())


class OpenVINODecoder:
    """The single-mask decoder compiled by OpenVINO for the CPU (bf16 where native, else f32); the hypernetwork
    weights come from `model` at each call (tuned weights included)."""

    def __init__(self, compiled, model, version: str, threads: int, source: str):
        self.compiled = compiled
        self.model = model
        precision = "bf16" if "bfloat16" in str(compiled.get_property("INFERENCE_PRECISION_HINT")) else "f32"
        self.name = f"openvino-{version}-{precision}"
        self.status = f"LiteMedSAM mask decoder: OpenVINO {version} on cpu ({precision}, {threads} threads, {source})"

    def __call__(self, image: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, dense (M, 256, 64, 64), sparse (M, T, 256) float32 CPU -> logits (M, 1, 256, 256), iou (M, 1)."""
        src = image.detach().float() + dense.detach().float()  # as the torch decoder adds them
        inputs = [src.contiguous().numpy(), sparse.detach().float().contiguous().numpy()]
        inputs += [w.numpy() for w in hyper_weights(self.model)]
        out = self.compiled(inputs)
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])


def decoder_runtime(encoder_name: str, model, device: torch.device, model_dir, weights_id: str,
                    stats: dict | None = None):
    """OpenVINODecoder where the image encoder runs on OpenVINO (`encoder_name` "openvino-..."), else TorchDecoder.

    model: LiteMedSAM (its mask decoder holding LiteMedSAM's own weights, but for the hypernetwork MLP).
    model_dir: folder for the converted IR (None: converted in memory). stats["decoder_conversions"] counts.
    """
    if not encoder_name.startswith("openvino"):
        return TorchDecoder(model, "the image encoder runs on torch")
    if device.type != "cpu":
        return TorchDecoder(model, f"OpenVINO is used on the CPU only, this runs on {device.type}")
    try:
        import openvino

        return _openvino_decoder(openvino, model, model_dir, weights_id, stats if stats is not None else {})
    except Exception as err:  # conversion or compilation failed: torch still decodes
        LOG.debug("OpenVINO decoder conversion failed", exc_info=True)
        return TorchDecoder(model, f"OpenVINO failed: {err.__class__.__name__}: {str(err)[:120]}")


def _openvino_decoder(ov, model, model_dir, weights_id: str, stats: dict) -> OpenVINODecoder:
    from .. import __version__

    version, threads, core, config = openvino_setup(ov, PRECISION)
    folder = None
    if model_dir is not None:
        folder = ir_folder(ov, model_dir, [weights_id, ov.__version__, __version__, "decoder", GRAPH])
        try:
            if _intact(folder, "decoder"):
                compiled = core.compile_model(str(folder / "decoder.xml"), "CPU", config)
                return OpenVINODecoder(compiled, model, version, threads, "cached IR")
        except Exception:  # unreadable despite its manifest: converted again below
            LOG.debug("cached OpenVINO decoder IR unusable", exc_info=True)
    converted = _convert(ov, model)
    stats["decoder_conversions"] = stats.get("decoder_conversions", 0) + 1
    if folder is not None:
        _save(ov, converted, folder, "decoder")
    return OpenVINODecoder(core.compile_model(converted, "CPU", config), model, version, threads,
                           "converted from torch")


def _convert(ov, model):
    """ov.Model of SingleMaskGraph with a dynamic number of prompts (and of prompt tokens)."""
    graph = SingleMaskGraph(model).eval()
    weights = hyper_weights(model)
    example = (torch.zeros(2, 256, 64, 64), torch.zeros(2, 2, 256), *weights)
    shapes = [[-1, 256, 64, 64], [-1, -1, 256]] + [list(w.shape) for w in weights]
    was_training = model.mask_decoder.training
    model.mask_decoder.eval()
    try:
        with warnings.catch_warnings(), no_telemetry(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings: not the user's
            return ov.convert_model(graph, example_input=example, input=shapes)
    finally:
        model.mask_decoder.train(was_training)
