"""Which runtime runs LiteMedSAM's mask decoder: OpenVINO on the CPU beside OpenVINO's image encoder, else torch.

    runtime = decoder_runtime(encoder_name, model, device, model_dir, weights_id)
    logits, iou = runtime(image, sparse, dense, index, window)  # image, dense: (P, 256, 64, 64) float32
                                                  # embeddings and dense prompts, one row per distinct (plane,
                                                  # dense prompt); sparse: (M, T, 256) prompt tokens; index: (M,)
                                                  # int64, the row of each prompt (None: P == M, row m for prompt
                                                  # m); window: (r0, r1, c0, c1) cells of the 64 x 64 token grid
                                                  # (None: all) -> (M, 1, 4 (r1 - r0), 4 (c1 - c0)) logits
                                                  # (256 x 256 without a window), (M, 1) IoU estimates
    runtime.name, runtime.status         # "openvino-2026.4.1-bf16", one sentence for the user

After OpenVINO took the image encoder (core/sam_runtime.py), the torch mask decoder was a quarter of a refined
CT sample's time. Here the decoder's single-mask output (what refinement, the box tool and selection read)
is converted once to OpenVINO (a dynamic number of prompts M; f32 weights, run in bf16 where the CPU has it) and
kept beside the encoder's IR
(``model_dir/sam/openvino/<weights, openvino, package version, "decoder">/decoder.xml``, manifest, atomic
save, converted inside ``no_telemetry()``). The prompt encoder stays in torch (a few small layers: boxes to
two tokens, a coarse mask to a (256, 64, 64) dense prompt, added to the image embedding before the call).

The graph takes each image once (SharedImageGraph, graph 2; session 17): a box-only prompt's dense prompt is the
constant ``no_mask_embed``, so ``src = image + dense`` is the same for every box of a plane, and the first
transformer block's projections of the 4096 image tokens (token-to-image keys and values, image-to-token
queries: ~23 % of one box's multiply-adds) depend on the image only. They are computed once per row of `image`
and gathered for the prompts by `index`; the rest runs per prompt as before. A prompt with a mask prompt has a
row of its own (today's cost). ``NAPARI_FEWSHOT_DECODER_SPLIT=0`` converts graph 1 (SingleMaskGraph: a copy
of ``src`` per prompt, what ran before; for A/B benchmarks), ``=2`` graph 2.

Graph 3 (WindowGraph; session 18) is graph 2 whose output upscaling (two 2x2 stride-2 transposed convolutions,
per-pixel LayerNorm, GELUs: a quarter of a decode) and mask product run on a window of the token grid only: both
are per cell, so the window's logits are the whole grid's, cut out. Refinement reads a decode inside its box only
(core/refine.py), so it asks for the cells its boxes need (sam_prompt.box_cells); everyone else gets the planes'
resized part (the same logits as graph 2).

The hypernetwork MLP of the single mask (``output_hypernetworks_mlps.0``: what Fine-tune's decoder tuning
trains, core/decoder_tuning.py) is an input of the converted graph, not a constant: every call passes the
module's current weights, so tuned weights decode on OpenVINO too, exactly. Tuned weights elsewhere in the
decoder (not what this project trains) make :func:`usable` false: the service then decodes on torch and says so.
Any failure leaves torch decoding (float32), with a status sentence saying why.
"""

from __future__ import annotations

import logging
import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .sam_runtime import _intact, _save, ir_folder, no_telemetry, openvino_setup

LOG = logging.getLogger(__name__)
HYPER = "output_hypernetworks_mlps.0."  # the decoder's only weights passed at each call (decoder_tuning.TUNED)
GRAPH = 3  # the converted graph's version (part of the IR's folder name): 3 WindowGraph, 2 SharedImageGraph, 1 SingleMaskGraph
GRID = 64  # the decoder's token grid (64 x 64 cells, 4 x 4 pixels of the 256 x 256 frame each)
SPLIT_ENV = "NAPARI_FEWSHOT_DECODER_SPLIT"  # "0": graph 1 (a copy of the image per prompt), "2": graph 2 (A/B benchmarks)
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
                 index: torch.Tensor | None = None, window: tuple[int, int, int, int] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, dense (P, 256, 64, 64), sparse (M, T, 256), index (M,) row of each prompt (None: P == M),
        window (r0, r1, c0, c1) cells of the 64 x 64 grid (None: all) -> logits (M, 1, 4 (r1 - r0), 4 (c1 - c0))
        of that window (256 x 256 without one), iou (M, 1)."""
        if index is not None:
            image, dense = image[index], dense[index]
        logits, iou = self.model.mask_decoder(image_embeddings=image, image_pe=self.model.prompt_encoder.get_dense_pe(),
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=False)
        return cut(logits, window), iou


def cut(logits: torch.Tensor, window: tuple[int, int, int, int] | None) -> torch.Tensor:
    """(M, 1, 256, 256) logits -> those of `window` (r0, r1, c0, c1) cells of the 64 x 64 grid (None: all)."""
    if window is None:
        return logits
    r0, r1, c0, c1 = window
    return logits[:, :, 4 * r0:4 * r1, 4 * c0:4 * c1]


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
        iou_token, x, up = transformer_part(self.decoder, self.image_pe, src, sparse)  # up: (M, 32, 256, 256)
        return self._head(iou_token, x, up, weights)

    def _head(self, iou_token, x, up, weights):
        """The hypernetwork MLP (`weights`), its product with `up` and the IoU head -> logits, iou."""
        m = x.shape[0]
        for i in range(self.layers):
            x = F.linear(x, weights[2 * i], weights[2 * i + 1])
            x = F.relu(x) if i < self.layers - 1 else x
        x = torch.sigmoid(x) if self.sigmoid else x
        logits = torch.bmm(x[:, None, :], up.flatten(2)).reshape(m, 1, up.shape[2], up.shape[3])
        iou = self.decoder.iou_prediction_head(iou_token)[:, :1]
        return logits, iou


def _attend(attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's Attention.forward after its input projections: q (M, Nq, D), k and v (M, Nk, D) -> (M, Nq, 256)."""
    heads = attention.num_heads
    q, k, v = (attention._separate_heads(x, heads) for x in (q, k, v))
    attn = torch.softmax(q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return attention.out_proj(attention._recombine_heads(attn @ v))


def shared_transformer_part(decoder, image_pe: torch.Tensor, src: torch.Tensor, index: torch.Tensor,
                            sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`transformer_part` of ``src[index]``, with the image-only work done once per row of `src`.

    src (P, 256, 64, 64) image embedding plus dense prompt, one row per distinct pair; index (M,) int64, the row of
    each prompt; sparse (M, T, 256). The first TwoWayAttentionBlock's projections of the image tokens (its
    token-to-image keys and values, its image-to-token queries: (P, 4096, 128) each) are computed per row and
    gathered; the rest is SAM's TwoWayTransformer.forward, per prompt. Returns what transformer_part returns.
    """
    iou_token, mask_token, keys = shared_tokens_and_keys(decoder, image_pe, src, index, sparse)
    return iou_token, mask_token, decoder.output_upscaling(keys)


def shared_tokens_and_keys(decoder, image_pe: torch.Tensor, src: torch.Tensor, index: torch.Tensor,
                           sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`shared_transformer_part` before the output upscaling: ((M, 256) IoU token, (M, 256) single-mask token,
    (M, 256, 64, 64) image tokens after the transformer)."""
    m = sparse.shape[0]
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], 0)[None].expand(m, -1, -1)
    tokens = torch.cat([tokens, sparse], 1)  # (M, T + 2, 256): the queries' positional encoding too
    transformer, (c, h, w) = decoder.transformer, src.shape[1:]
    image = src.flatten(2).permute(0, 2, 1)  # (P, 4096, 256)
    pe = image_pe.flatten(2).permute(0, 2, 1)  # (1, 4096, 256)
    first = transformer.layers[0]  # skip_first_layer_pe: its self-attention has no residual
    to_image, to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    keyed = image + pe
    k1, v1 = to_image.k_proj(keyed)[index], to_image.v_proj(image)[index]  # (M, 4096, 128)
    q2 = to_token.q_proj(keyed)[index]
    queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
    queries = first.norm2(queries + _attend(to_image, to_image.q_proj(queries + tokens), k1, v1))
    queries = first.norm3(queries + first.mlp(queries))
    update = _attend(to_token, q2, to_token.k_proj(queries + tokens), to_token.v_proj(queries))
    keys = first.norm4(image[index] + update)  # (M, 4096, 256)
    for layer in transformer.layers[1:]:
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=pe)
    attn_out = transformer.final_attn_token_to_image(q=queries + tokens, k=keys + pe, v=keys)
    hs = transformer.norm_final_attn(queries + attn_out)
    return hs[:, 0, :], hs[:, 1, :], keys.transpose(1, 2).reshape(m, c, h, w)


class SharedImageGraph(SingleMaskGraph):
    """SingleMaskGraph with each image once: forward(src (P, 256, 64, 64), index (M,) int64, sparse (M, T, 256),
    w0, b0, w1, b1, ...) -> (M, 1, 256, 256) logits, (M, 1) iou of prompt m on row index[m] of src."""

    def forward(self, src, index, sparse, *weights):
        iou_token, x, up = shared_transformer_part(self.decoder, self.image_pe, src, index, sparse)
        return self._head(iou_token, x, up, weights)


class WindowGraph(SingleMaskGraph):
    """SharedImageGraph whose upscaling and mask product run on a window of the 64 x 64 token grid only:
    forward(src (P, 256, 64, 64), index (M,), sparse (M, T, 256), rows (R,) int64, cols (C,) int64 consecutive
    cells, w0, b0, ...) -> (M, 1, 4R, 4C) logits of the 256 x 256 frame's rows 4 rows[0] .. 4 rows[-1] + 3 (and
    columns alike), (M, 1) iou. Exact: the upscaling (two 2x2 stride-2 transposed convolutions, a per-pixel
    LayerNorm, GELUs) and the product with the mask token are per cell, so a window's logits are the whole
    grid's, cut out. All 64 rows and columns: SharedImageGraph's output (graph 3; session 18)."""

    def forward(self, src, index, sparse, rows, cols, *weights):
        iou_token, x, keys = shared_tokens_and_keys(self.decoder, self.image_pe, src, index, sparse)
        keys = keys.index_select(2, rows).index_select(3, cols)
        return self._head(iou_token, x, self.decoder.output_upscaling(keys), weights)


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

    def __init__(self, compiled, model, version: str, threads: int, source: str, graph: int = GRAPH):
        self.compiled = compiled
        self.model = model
        self.graph = graph  # 3: 2 with a window, 2: each image once (SharedImageGraph), 1: a copy per prompt
        precision = "bf16" if "bfloat16" in str(compiled.get_property("INFERENCE_PRECISION_HINT")) else "f32"
        self.name = f"openvino-{version}-{precision}"
        self.status = f"LiteMedSAM mask decoder: OpenVINO {version} on cpu ({precision}, {threads} threads, {source})"

    def __call__(self, image: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                 index: torch.Tensor | None = None, window: tuple[int, int, int, int] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, dense (P, 256, 64, 64), sparse (M, T, 256) float32 CPU, index (M,) row of each prompt (None:
        P == M), window (r0, r1, c0, c1) cells of the 64 x 64 grid (None: all) -> logits (M, 1, 4 (r1 - r0),
        4 (c1 - c0)) of that window (256 x 256 without one), iou (M, 1); graph 3 upscales the window only."""
        src = image.detach().float() + dense.detach().float()  # as the torch decoder adds them
        if index is None:
            index = torch.arange(len(src))
        if self.graph == 1:
            src, index = src[index], None
        inputs = [src.contiguous().numpy()]
        inputs += [] if index is None else [index.to(torch.int64).contiguous().numpy()]
        inputs += [sparse.detach().float().contiguous().numpy()]
        if self.graph == 3:
            r0, r1, c0, c1 = window if window is not None else (0, GRID, 0, GRID)
            inputs += [np.arange(r0, r1, dtype=np.int64), np.arange(c0, c1, dtype=np.int64)]
        inputs += [w.numpy() for w in hyper_weights(self.model)]
        out = self.compiled(inputs)
        logits = torch.from_numpy(out[0])
        return (logits if self.graph == 3 else cut(logits, window)), torch.from_numpy(out[1])


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
    graph = {"0": 1, "2": 2}.get(os.environ.get(SPLIT_ENV, ""), GRAPH)
    folder = None
    if model_dir is not None:
        folder = ir_folder(ov, model_dir, [weights_id, ov.__version__, __version__, "decoder", graph])
        try:
            if _intact(folder, "decoder"):
                compiled = core.compile_model(str(folder / "decoder.xml"), "CPU", config)
                return OpenVINODecoder(compiled, model, version, threads, "cached IR", graph)
        except Exception:  # unreadable despite its manifest: converted again below
            LOG.debug("cached OpenVINO decoder IR unusable", exc_info=True)
    converted = _convert(ov, model, graph)
    stats["decoder_conversions"] = stats.get("decoder_conversions", 0) + 1
    if folder is not None:
        _save(ov, converted, folder, "decoder")
    return OpenVINODecoder(core.compile_model(converted, "CPU", config), model, version, threads,
                           "converted from torch", graph)


def _convert(ov, model, graph: int = GRAPH):
    """ov.Model of WindowGraph (graph 3; SharedImageGraph: 2; SingleMaskGraph: 1) with dynamic numbers of images,
    prompts, prompt tokens and window cells."""
    weights = hyper_weights(model)
    if graph == 1:
        module = SingleMaskGraph(model).eval()
        example = (torch.zeros(2, 256, 64, 64), torch.zeros(2, 2, 256), *weights)
        shapes = [[-1, 256, 64, 64], [-1, -1, 256]] + [list(w.shape) for w in weights]
    elif graph == 2:
        module = SharedImageGraph(model).eval()
        example = (torch.zeros(2, 256, 64, 64), torch.tensor([0, 1, 1]), torch.zeros(3, 2, 256), *weights)
        shapes = [[-1, 256, 64, 64], [-1], [-1, -1, 256]] + [list(w.shape) for w in weights]
    else:
        module = WindowGraph(model).eval()
        example = (torch.zeros(2, 256, 64, 64), torch.tensor([0, 1, 1]), torch.zeros(3, 2, 256),
                   torch.arange(3, 9), torch.arange(5, 12), *weights)
        shapes = [[-1, 256, 64, 64], [-1], [-1, -1, 256], [-1], [-1]] + [list(w.shape) for w in weights]
    was_training = model.mask_decoder.training
    model.mask_decoder.eval()
    try:
        with warnings.catch_warnings(), no_telemetry(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings: not the user's
            return ov.convert_model(module, example_input=example, input=shapes)
    finally:
        model.mask_decoder.train(was_training)
