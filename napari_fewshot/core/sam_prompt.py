"""LiteMedSAM's promptable decoder: a box (and optionally a coarse mask) on a 2D slice -> that object's mask.

    prompter = BoxPrompter()                    # loads the bundled LiteMedSAM weights (CPU unless told)
    embedding = prompter.embed(plane)           # plane: (H, W) or (H, W, 3) float in [0, 1]; once per slice
    probs = prompter.decode(embedding, boxes)   # boxes: (N, 4) x0, y0, x1, y1 in plane pixels -> (N, H, W)

As in MedSAM, the plane is resized so its longer side is 256, padded to 256 x 256 at the bottom/right, and
min-max normalised; the decoder's 256 x 256 logits are cropped to the unpadded part and resized back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .encoders.litemedsam import load_lite_medsam
from .sam_decoder import TorchDecoder

SIDE = 256  # LiteMedSAM's input side; its embedding is (256, 64, 64) and its mask logits 256 x 256


@dataclass
class PlaneEmbedding:
    """features: (1, 256, 64, 64) image embedding; shape: the plane's (H, W); scale: 256 / max(H, W)."""

    features: torch.Tensor
    shape: tuple[int, int]
    scale: float

    @property
    def resized(self) -> tuple[int, int]:
        """(h, w) of the plane inside the padded 256 x 256 input."""
        return max(1, round(self.shape[0] * self.scale)), max(1, round(self.shape[1] * self.scale))

    def in_float32(self) -> "PlaneEmbedding":
        """This embedding with float32 features (the cache keeps float16): what scoring and decoding read."""
        return PlaneEmbedding(self.features.float(), self.shape, self.scale)


class BoxPrompter:
    """LiteMedSAM's image encoder, prompt encoder and mask decoder, for box prompts. Not thread-safe."""

    def __init__(self, device: str | torch.device = "cpu", model=None):
        self.device = torch.device(device)
        self.model = (model if model is not None else load_lite_medsam()).to(self.device).eval()
        self.weights_id = getattr(self.model, "weights_id", "lite_medsam")

    def to_input(self, plane: np.ndarray) -> tuple[torch.Tensor, float]:
        """(H, W) or (H, W, 3) float plane -> ((1, 3, 256, 256) float32 input on the device, scale)."""
        x = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))
        x = x[None].expand(3, -1, -1) if x.ndim == 2 else x[..., :3].permute(2, 0, 1)
        height, width = x.shape[-2:]
        scale = SIDE / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        low, high = x.min(), x.max()
        x = (x - low) / torch.clamp(high - low, min=1e-8)
        x = F.pad(x, (0, SIDE - size[1], 0, SIDE - size[0]))
        return x.to(self.device), scale

    @torch.no_grad()
    def embed(self, plane: np.ndarray) -> PlaneEmbedding:
        """The image embedding of one plane ((H, W) or (H, W, 3), float in [0, 1])."""
        x, scale = self.to_input(plane)
        return PlaneEmbedding(self.model.image_encoder(x), tuple(plane.shape[:2]), scale)

    def decode(self, embedding: PlaneEmbedding, boxes: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """Object probabilities for each box.

        boxes: (N, 4) float, x0, y0, x1, y1 in the plane's pixels (inclusive corners).
        masks: optional (N, H, W) coarse masks (bool or probabilities) given to the decoder as dense prompts.
        Returns (N, H, W) float32 probabilities in [0, 1].
        """
        return self.decode_with_quality(embedding, boxes, masks)[0]

    def decode_with_quality(self, embedding: PlaneEmbedding, boxes: np.ndarray,
                            masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`decode`, and the decoder's own estimate of each mask's IoU with the object: (N,) float32."""
        return self.decode_batch([(embedding, boxes, masks)])[0]

    @torch.no_grad()
    def decode_batch(self, requests: list, max_prompts: int = 32, low_res: bool = False, decoder=None,
                     inside: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`decode_with_quality` of several planes' boxes, `max_prompts` boxes per decoder call.

        requests: [(PlaneEmbedding, (N_i, 4) boxes, optional (N_i, H_i, W_i) masks)]; embeddings may be float16.
        Returns [((N_i, H_i, W_i) probabilities, (N_i,) IoU estimates)] in the order of `requests`; with
        `low_res`, the decoder's own output, not resized: (N_i, h_i, w_i), (h_i, w_i) = embedding.resized.
        inside: only each box's pixels are wanted (box_region; refinement reads nothing else): the decoder
                upscales only the cells of the token grid they need (one call per plane), probabilities are exact
                there and 0 outside the box. With `low_res` (selection's candidates, read inside their boxes and,
                resized to the plane, one pixel around them): exact in each box's cells grown by LOW_RES_SPARE
                pixels, 0 beyond; a plane's boxes are grouped into calls whose windows overlap most (low_res_calls).
        decoder: the mask decoder's runtime (core/sam_decoder.py: (P, 256, 64, 64) embeddings and dense prompts,
                 (M, T, 256) sparse prompts, (M,) row of each prompt, window of the 64 x 64 grid -> (M, 1, 4R, 4C)
                 logits of the window, (M, 1) IoU); None: torch's.
        """
        decoder = decoder if decoder is not None else TorchDecoder(self.model)
        prompts = []  # (request, box (4,), mask (H, W) or None), flattened
        for r, (embedding, boxes, masks) in enumerate(requests):
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            for n, box in enumerate(boxes):
                prompts.append((r, box, None if masks is None else np.asarray(masks[n], np.float32)))
        probs: list[list[np.ndarray]] = [[] for _ in requests]
        quality: list[list[float]] = [[] for _ in requests]
        if inside and low_res:
            probs, quality = self._decode_windows(requests, prompts, max_prompts, decoder)
            prompts = []
        for start in range(0, len(prompts), max_prompts):
            chunk = prompts[start:start + max_prompts]
            calls = [chunk]
            if inside and not low_res:  # one call per plane, each with the window its boxes need
                calls = [[chunk[k] for k in plane] for plane in by_plane(requests, chunk)]
            for call in calls:
                for (r, _, _), p, q in zip(call, *self._decode_chunk(requests, call, low_res, decoder,
                                                                     inside and not low_res)):
                    probs[r].append(p)
                    quality[r].append(q)
        out = []
        for (embedding, _, _), p, q in zip(requests, probs, quality):
            empty = np.zeros((0, *(embedding.resized if low_res else embedding.shape)), np.float32)
            out.append((np.stack(p) if p else empty, np.asarray(q, np.float32)))
        return out

    def _decode_windows(self, requests: list, prompts: list, max_prompts: int, decoder
                        ) -> tuple[list[list[np.ndarray]], list[list[float]]]:
        """decode_batch's `low_res` with `inside`: each plane's prompts in calls of <= `max_prompts` grouped by
        low_res_calls, each call upscaling its boxes' low_res_cells only. prompts: [(request, (4,) box, mask)]."""
        probs: list[dict[int, np.ndarray]] = [{} for _ in requests]
        quality: list[dict[int, float]] = [{} for _ in requests]
        for plane in by_plane(requests, prompts):
            members = [(n, prompts[n]) for n in plane]
            embedding = requests[members[0][1][0]][0]
            for group in low_res_calls([box for _, (_, box, _) in members], embedding, max_prompts):
                call = [members[g][1] for g in group]
                window = low_res_cells([box for _, box, _ in call], embedding)
                for g, p, q in zip(group, *self._decode_chunk(requests, call, True, decoder, window=window)):
                    n, (r, _, _) = members[g]
                    probs[r][n], quality[r][n] = p, q
        return ([[d[n] for n in sorted(d)] for d in probs], [[d[n] for n in sorted(d)] for d in quality])

    def _decode_chunk(self, requests: list, chunk: list, low_res: bool, decoder, inside: bool = False,
                      window: tuple[int, int, int, int] | None = None) -> tuple[list[np.ndarray], list[float]]:
        """One decoder call for `chunk` [(request index, (4,) box, (H, W) mask or None)]: the box-only prompts on
        one embedding share its row of the decoder's image input (computed once, core/sam_decoder.py), each prompt
        with a mask has a row of its own. The decoder upscales the window of the token grid read: the planes'
        resized part, or (`inside`, one plane) the cells its boxes' pixels read, or the given `window` (one plane,
        r0, r1, c0, c1 cells; logits outside it are -1e4, probabilities 0)."""
        features, sparse, dense, index = [], [], [], []
        rows: dict[int, int] = {}  # id(embedding) -> its row, box-only prompts
        for r, box, mask in chunk:
            embedding = requests[r][0]
            prompt = torch.from_numpy(box[None] * embedding.scale).to(self.device)[:, None, :]
            m = None if mask is None else self._mask_prompt(mask[None], embedding)
            s, d = self.model.prompt_encoder(points=None, boxes=prompt, masks=m)  # d: (1, 256, 64, 64)
            sparse.append(s)
            row = rows.get(id(embedding)) if m is None else None
            if row is None:
                row = len(features)
                features.append(embedding.features.float())
                dense.append(d)
                if m is None:
                    rows[id(embedding)] = row
            index.append(row)
        index = torch.tensor(index, dtype=torch.int64, device=self.device)
        framed = inside or window is not None
        if inside:
            window = box_cells([box for _, box, _ in chunk], requests[chunk[0][0]][0])
        elif window is None:
            cells = [(-(-h // 4), -(-w // 4)) for h, w in (requests[r][0].resized for r, _, _ in chunk)]
            window = (0, max(c[0] for c in cells), 0, max(c[1] for c in cells))
        logits, iou = decoder(torch.cat(features), torch.cat(sparse), torch.cat(dense), index, window)
        probs = []
        for (r, box, _), logit in zip(chunk, logits):  # logit: (1, 4R, 4C) of the window
            embedding = requests[r][0]
            h, w = embedding.resized
            if framed:
                r0, c0 = 4 * window[0], 4 * window[2]
                frame = torch.full((1, h, w), -1e4, dtype=logit.dtype, device=logit.device)
                frame[:, r0:r0 + logit.shape[1], c0:c0 + logit.shape[2]] = logit[:, :h - r0, :w - c0]
                logit = frame
            up = logit[None, :, :h, :w]
            if not low_res:
                up = F.interpolate(up, size=embedding.shape, mode="bilinear", align_corners=False)
            p = torch.sigmoid(up[0, 0]).float().cpu().numpy()
            probs.append(np.where(box_region(box, p.shape), p, 0).astype(np.float32) if inside else p)
        return probs, iou.reshape(-1).float().cpu().tolist()

    def _mask_prompt(self, masks: np.ndarray, embedding: PlaneEmbedding) -> torch.Tensor:
        """(N, H, W) masks -> (N, 1, 256, 256) logits-like dense prompts in the padded input frame."""
        m = torch.from_numpy(masks)[:, None]
        h, w = embedding.resized
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        m = F.pad(m, (0, SIDE - w, 0, SIDE - h))
        return ((m - 0.5) * 8.0).to(self.device)  # probabilities -> logits the decoder was trained to read


def box_of(mask: np.ndarray, margin: float = 0.1) -> np.ndarray | None:
    """(H, W) bool mask -> (4,) x0, y0, x1, y1 of its bounding box grown by `margin` of its size on each
    side (clipped to the plane), or None when the mask is empty."""
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))  # rows and columns that hold the mask
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys[0], ys[-1], xs[0], xs[-1]
    dy, dx = margin * (y1 - y0 + 1), margin * (x1 - x0 + 1)
    h, w = mask.shape
    return np.array([max(0, x0 - dx), max(0, y0 - dy), min(w - 1, x1 + dx), min(h - 1, y1 + dy)], np.float32)


def by_plane(requests: list, prompts: list) -> list[list[int]]:
    """Indices of `prompts` [(request index, box, mask)] grouped by the plane (PlaneEmbedding) of their request,
    planes in order of first appearance, each group in the prompts' order."""
    planes: dict[int, list[int]] = {}
    for n, prompt in enumerate(prompts):
        planes.setdefault(id(requests[prompt[0]][0]), []).append(n)
    return list(planes.values())


def box_region(box, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie inside the (inclusive) box x0, y0, x1, y1."""
    x0, y0, x1, y1 = (float(v) for v in box)
    rows, cols = np.arange(shape[0]), np.arange(shape[1])
    inside_rows = (rows >= np.floor(y0)) & (rows <= np.ceil(y1))
    inside_cols = (cols >= np.floor(x0)) & (cols <= np.ceil(x1))
    return inside_rows[:, None] & inside_cols[None, :]


def box_cells(boxes: list, embedding: PlaneEmbedding) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the cells of the decoder's 64 x 64 token grid whose upscaled logits the plane pixels of
    `boxes` ((4,) x0, y0, x1, y1 each, box_region's pixels) read through the bilinear resize to the plane (4 x 4
    pixels of the 256 x 256 frame per cell), with one cell to spare on each side."""
    (height, width), (h, w) = embedding.shape, embedding.resized
    out = []
    for low, high, size, resized in ((min(b[1] for b in boxes), max(b[3] for b in boxes), height, h),
                                     (min(b[0] for b in boxes), max(b[2] for b in boxes), width, w)):
        ratio = resized / size  # F.interpolate's source coordinate: (y + 0.5) * ratio - 0.5, clamped at 0
        first = max(0.0, (np.floor(low) + 0.5) * ratio - 0.5)
        last = max(0.0, (np.ceil(high) + 0.5) * ratio - 0.5)
        cells = -(-resized // 4)
        out += [max(0, int(np.floor(first)) // 4 - 1), min(cells, (int(np.floor(last)) + 1) // 4 + 2)]
    return out[0], out[1], out[2], out[3]


LOW_RES_SPARE = 3  # low-resolution pixels around a box whose probabilities low_res_cells keeps exact


def low_res_cells(boxes: list, embedding: PlaneEmbedding) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the cells of the decoder's 64 x 64 token grid (4 x 4 pixels of its low-resolution
    output each) holding every pixel of `boxes` ((4,) x0, y0, x1, y1 in the plane's pixels) at the decoder's own
    size, grown by LOW_RES_SPARE pixels: what selection reads of a low-resolution candidate (its box; resized to
    the plane, the pixels one beyond it), with the rounding of the plane's scale to spare."""
    h, w = embedding.resized
    out = []
    for low, high, resized in ((min(b[1] for b in boxes), max(b[3] for b in boxes), h),
                               (min(b[0] for b in boxes), max(b[2] for b in boxes), w)):
        first = int(np.floor(low * embedding.scale)) - LOW_RES_SPARE
        last = int(np.ceil(high * embedding.scale)) + LOW_RES_SPARE
        out += [max(0, first // 4), min(-(-resized // 4), last // 4 + 1)]
    return out[0], out[1], out[2], out[3]


def low_res_calls(boxes: list, embedding: PlaneEmbedding, size: int) -> list[list[int]]:
    """Indices of `boxes` ((4,) each, one plane) in groups of <= `size`, one decoder call each, whose shared
    windows (low_res_cells) stay small: the largest box left opens a group, which takes the boxes that grow its
    window least (a component's boxes at three margins, a peak's three sizes are nested: one window)."""
    cells = [low_res_cells([b], embedding) for b in boxes]
    area = [(c[1] - c[0]) * (c[3] - c[2]) for c in cells]
    left = sorted(range(len(boxes)), key=lambda n: (-area[n], n))
    groups = []
    while left:
        group = [left.pop(0)]
        window = cells[group[0]]
        while left and len(group) < size:
            grown = [(max(window[1], cells[n][1]) - min(window[0], cells[n][0]))
                     * (max(window[3], cells[n][3]) - min(window[2], cells[n][2])) for n in left]
            n = left.pop(int(np.argmin(grown)))
            group.append(n)
            window = (min(window[0], cells[n][0]), max(window[1], cells[n][1]),
                      min(window[2], cells[n][2]), max(window[3], cells[n][3]))
        groups.append(sorted(group))
    return groups
