"""One LiteMedSAM for everyone: the model, its image embeddings and its mask decoder, in one object.

    sam = LiteMedSAMService(device="cpu", budget_bytes=256 << 20, disk_dir=cache_dir)
    embedding = sam.embedding(plane)                    # (H, W[, 3]) float plane in [0, 1] -> PlaneEmbedding
    probs = sam.decode([(embedding, boxes, masks)])     # one decoder call for every box of every plane

Refinement (core/refine.py), the box tool (core/box_to_mask.py, plugin/box_tool.py) and the ``litemedsam``
feature encoder (core/encoders/litemedsam.py) all go through the service their FewShotSegmenter owns
(``segmenter.sam``), so LiteMedSAM is loaded once per segmenter, on its device, on first use, and a slice's
embedding is computed once whoever asks for it first.

Embeddings are keyed by the plane's pixels (after the intensity window: what the encoder sees), the image
encoder's weights and the package version; the mask decoder's weights are not part of the key, so loading
tuned decoder weights (:meth:`load_decoder_state`, e.g. core/decoder_tuning.py) keeps every embedding and
only bumps :attr:`decoder_version` (refinements remembered by a Refiner are then decoded again). They are
kept in memory within a byte budget (least recently used dropped first) and, when there is a cache folder,
under ``disk_dir/sam/<weights signature>/<plane digest>.npy``. Thread-safe: one lock serialises the model.

The image encoder runs on OpenVINO on the CPU where it imports, else on torch (core/sam_runtime.py; `runtime`
"auto" | "openvino" | "torch"), and so does the mask decoder (core/sam_decoder.py: OpenVINO where the encoder
is, with the hypernetwork weights Fine-tune tunes passed at each call); :attr:`runtime_status` says which. The runtime is part of the embeddings'
signature (its embeddings differ from torch's in the last bits). OpenVINO's converted encoder is kept under
``model_dir`` (default: the user's cache folder, features.default_cache_dir, also when a scan's features go
elsewhere: it is a property of this installation, converted once, not of a scan).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .devices import native_autocast
from .sam_decoder import TorchDecoder, decoder_runtime, usable
from .sam_prompt import BoxPrompter, PlaneEmbedding
from .sam_runtime import TorchEncoder, choose, encoder_runtime
from .stack import ImageStack

EMBEDDING_BYTES = 256 * 64 * 64 * 2  # one plane's (1, 256, 64, 64) float16 embedding
MAX_PROMPTS = 32  # prompts per decoder call (each needs ~10 MB of activations)
LOW_RES_PROMPTS = 4  # per call at low resolution
LOW_RES_INSIDE = True
"""`inside` at low resolution (selection's candidates, Check next's one box): each call upscales only its boxes'
cells (sam_prompt.low_res_cells), a plane's boxes grouped by overlap; False: the planes' whole resized part, as
before session 19 (A/B benchmarks). The same masks: what is read is exact (BENCHMARKS.md, session 19 "cost")."""

LOG = logging.getLogger(__name__)
DecodeRequest = tuple  # (PlaneEmbedding, (N, 4) boxes, optional (N, H, W) mask prompts)


class LiteMedSAMService:
    """LiteMedSAM (loaded lazily by `prompter_factory(device)`, a BoxPrompter by default), one embedding
    cache and the decode API. `loads` and `computed` count model loads and embeddings computed, and
    ``runtime_stats["conversions"]`` the image encoder's conversions to OpenVINO (tests, benchmarks).

    runtime: "auto" | "openvino" | "torch", the image encoder's runtime (core/sam_runtime.py).
    model_dir: folder for the converted encoder (None: features.default_cache_dir()).
    """

    def __init__(self, device: torch.device | str = "cpu", budget_bytes: int = 256 << 20,
                 disk_dir: str | Path | None = None,
                 prompter_factory: Callable[[torch.device], BoxPrompter] = BoxPrompter,
                 runtime: str = "auto", model_dir: str | Path | None = None):
        self.device = torch.device(device)
        self.runtime = choose(runtime)  # a wrong name fails here, in one sentence
        self._model_dir = model_dir
        self._encoder = None  # the image encoder's runtime, made with the model
        self._decoder = None  # the mask decoder's runtime (core/sam_decoder.py), made on the first decode
        self._decoder_exotic = False  # tuned weights outside the hypernetwork MLP: torch decodes
        self._exotic: TorchDecoder | None = None  # the torch decoder used meanwhile
        # whether tuned decoder weights also draw the candidates selection chooses among (core/select_objects.py);
        # False: LiteMedSAM's own weights choose the object, the tuned ones draw it (BENCHMARKS.md, session 11 "ft")
        self.tuned_chooses = False
        self.runtime_stats: dict[str, int] = {}
        self.capacity = max(1, budget_bytes // EMBEDDING_BYTES)
        self.disk_dir = None if disk_dir is None else Path(disk_dir)
        self._factory = prompter_factory
        self._prompter: BoxPrompter | None = None
        self._lock = threading.RLock()
        self._planes: OrderedDict[str, PlaneEmbedding] = OrderedDict()  # plane digest -> float16 embedding
        self._digests: dict[tuple[str, int], str] = {}  # (stack signature, slice) -> plane digest
        self._original_decoder: dict[str, torch.Tensor] | None = None
        self.decoder_version = 0  # bumped by every change of the mask decoder's weights
        self.loads = 0
        self.computed = 0

    # -- the model -------------------------------------------------------------------------------
    @property
    def prompter(self) -> BoxPrompter:
        """The BoxPrompter (LiteMedSAM loaded on first use, once)."""
        with self._lock:
            if self._prompter is None:
                self._prompter = self._factory(self.device)
                self.loads += 1
            return self._prompter

    @property
    def runtime_status(self) -> str:
        """One sentence saying which runtime runs the image encoder (what is asked for before the model loads)."""
        if self._encoder is None:
            return f"LiteMedSAM image encoder: {self.runtime} (not loaded yet)"
        if self._decoder is None:
            return self._encoder.status
        return f"{self._encoder.status}; {self.decoder_runtime().status}"

    def decoder_runtime(self):
        """The mask decoder's runtime (core/sam_decoder.py), made on first use: OpenVINO where the image encoder
        runs on it, else torch; torch while the decoder holds tuned weights outside the hypernetwork MLP."""
        with self._lock:
            prompter = self.prompter
            if self._decoder_exotic:  # one torch decoder while they are loaded (it reads the model's weights)
                if self._exotic is None:
                    self._exotic = TorchDecoder(prompter.model, "tuned weights outside the part OpenVINO takes as "
                                                "inputs")
                return self._exotic
            if self._decoder is None:
                if isinstance(prompter, BoxPrompter):
                    self._decoder = decoder_runtime(self.encoder_runtime().name, prompter.model, self.device,
                                                    self._runtime_dir(), prompter.weights_id, self.runtime_stats)
                else:
                    self._decoder = TorchDecoder(getattr(prompter, "model", None), "the prompter's own decode")
                LOG.info(self._decoder.status)
            return self._decoder

    @property
    def runtime_name(self) -> str:
        """The image encoder's runtime, e.g. "openvino-2026.4.1-f32" or "torch-bfloat16" (made if need be)."""
        return self.encoder_runtime().name

    def encoder_runtime(self):
        """The image encoder's runtime (core/sam_runtime.py), made on first use: the first embedding, not the
        model's loading (the ``litemedsam`` feature encoder and the decoder never need it)."""
        with self._lock:
            if self._encoder is None:
                prompter = self.prompter
                if isinstance(prompter, BoxPrompter):
                    self._encoder = encoder_runtime(self.runtime, prompter.model.image_encoder, self.device,
                                                    self._runtime_dir(), prompter.weights_id, self.runtime_stats)
                else:  # a prompter of its own (e.g. a test's) embeds planes itself
                    self._encoder = TorchEncoder(None, self.device, "the prompter's own embed")
                LOG.info(self._encoder.status)
            return self._encoder

    def _runtime_dir(self) -> Path:
        if self._model_dir is not None:
            return Path(self._model_dir)
        from .features import default_cache_dir

        return default_cache_dir()

    @property
    def loaded(self) -> bool:
        return self._prompter is not None

    @property
    def model(self):
        """The whole LiteMedSAM (image encoder, prompt encoder, mask decoder) on :attr:`device`."""
        return self.prompter.model

    @property
    def weights_id(self) -> str:
        return self.prompter.weights_id

    # -- embeddings --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._planes)

    def embedding(self, plane: np.ndarray) -> PlaneEmbedding:
        """The (float16) embedding of `plane` ((H, W) or (H, W, 3) float in [0, 1]): from memory, from the
        cache folder, or computed (bfloat16 autocast where the hardware does it natively)."""
        return self._embedding(plane_digest(plane), lambda: plane, tuple(plane.shape[:2]))

    def embedding_of(self, stack: ImageStack, index: int) -> PlaneEmbedding:
        """The embedding of slice `index` of `stack` (windowed as the features are); the same entry as
        :meth:`embedding` of ``stack.slice(index)``."""
        digest, plane = self._digest_of(stack, index)
        if plane is not None:
            return self._embedding(digest, lambda: plane, tuple(plane.shape[:2]))
        return self._embedding(digest, lambda: stack.slice(index), stack.shape_of(index))

    def has_embedding_of(self, stack: ImageStack, index: int) -> bool:
        """True when slice `index` of `stack` has its embedding in memory or in the cache folder (none computed)."""
        digest, _ = self._digest_of(stack, index)
        path = self._path(digest)
        return digest in self._planes or (path is not None and path.is_file())

    def _digest_of(self, stack: ImageStack, index: int) -> tuple[str, np.ndarray | None]:
        """The digest naming slice `index` of `stack`'s embedding, and the slice when it had to be read for it
        (the first time), else None."""
        key = (stack.signature(), index)
        digest = self._digests.get(key)
        if digest is not None:
            return digest, None
        plane = stack.slice(index)
        digest = self._digests[key] = plane_digest(plane)
        return digest, plane

    def is_cached(self, plane: np.ndarray) -> bool:
        """True when `plane`'s embedding is in memory (a box on it runs the decoder only)."""
        return plane_digest(plane) in self._planes

    def clear(self) -> None:
        """Forget the embeddings kept in memory (those in the cache folder stay)."""
        with self._lock:
            self._planes.clear()
            self._digests.clear()

    def _embedding(self, digest: str, plane: Callable[[], np.ndarray], shape: tuple[int, int]) -> PlaneEmbedding:
        with self._lock:
            embedding = self._planes.get(digest)
            if embedding is not None:
                self._planes.move_to_end(digest)
                return embedding
            embedding = self._read(digest, shape) or self._compute(digest, plane())
            self._planes[digest] = embedding
            while len(self._planes) > self.capacity:
                self._planes.popitem(last=False)
            return embedding

    def _compute(self, digest: str, plane: np.ndarray) -> PlaneEmbedding:
        prompter, encoder = self.prompter, self.encoder_runtime()
        if isinstance(prompter, BoxPrompter):
            x, scale = prompter.to_input(plane)
            embedding = PlaneEmbedding(encoder(x), tuple(plane.shape[:2]), scale)
        else:
            embedding = prompter.embed(plane)
        embedding.features = embedding.features.to(self.device, torch.float16)
        self.computed += 1
        if self.disk_dir is not None:
            self._write(digest, embedding)
        return embedding

    def _folder(self) -> Path:
        from .. import __version__

        text = json.dumps([self.weights_id, __version__, self.runtime_name])
        return self.disk_dir / "sam" / hashlib.sha1(text.encode()).hexdigest()[:20]

    def _path(self, digest: str) -> Path | None:
        """The cache folder's file of the embedding named `digest`; None without a cache folder."""
        return None if self.disk_dir is None else self._folder() / f"{digest}.npy"

    def _read(self, digest: str, shape: tuple[int, int]) -> PlaneEmbedding | None:
        path = self._path(digest)
        if path is None or not path.is_file():
            return None
        try:
            array = np.load(path)
        except (OSError, ValueError):
            return None  # a damaged file is computed again (and rewritten)
        if array.shape != (1, 256, 64, 64) or array.dtype != np.float16:
            return None
        return PlaneEmbedding(torch.from_numpy(array).to(self.device), shape, 256 / max(shape))

    def _write(self, digest: str, embedding: PlaneEmbedding) -> None:
        from ..io.atomic import atomic_write

        path = self._path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = embedding.features.cpu().numpy()
            atomic_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False), suffix=".npy")
        except OSError:
            pass  # the cache folder is a speed-up only: a full or read-only disk costs time, not results

    # -- decoding ------------------------------------------------------------------------------------
    def decode(self, requests: Sequence[DecodeRequest], max_prompts: int = MAX_PROMPTS,
               low_res: bool = False, own_weights: bool = False, inside: bool = False) -> list[np.ndarray]:
        """Probabilities for every box of every request, decoded together (`max_prompts` per decoder call).

        requests: [(PlaneEmbedding, (N_i, 4) boxes x0, y0, x1, y1 in that plane's pixels, optional (N_i, H_i, W_i)
                  mask prompts)].
        Returns [(N_i, H_i, W_i) float32 probabilities in [0, 1]] in the order of `requests`; with `low_res`,
        the decoder's output at its own size, (N_i, h_i, w_i) with (h_i, w_i) = embedding.resized (no resize:
        many candidates cost a fraction, core/select_objects.py). `own_weights`: decoded with LiteMedSAM's own
        decoder weights even while tuned ones are loaded (selection chooses with them, BENCHMARKS.md, session 11 "ft").
        `inside`: only each box's own pixels are read (refinement): 0 outside the box, and the decoder upscales only
        the part of its token grid they need (sam_prompt.BoxPrompter.decode_batch; ~25 % of a decode saved). With
        `low_res` (:data:`LOW_RES_INSIDE`): exact in the box's cells and a few pixels around it, 0 beyond.
        """
        with self._lock, (self._own_weights() if own_weights else contextlib.nullcontext()):
            return [probs for probs, _ in self.decode_with_quality(requests, max_prompts, low_res, inside)]

    @contextlib.contextmanager
    def _own_weights(self):
        """Within: the mask decoder holds LiteMedSAM's own weights (the tuned ones come back after; hold the lock)."""
        if self._original_decoder is None:
            yield
            return
        tuned = self.decoder_state()
        self.mask_decoder.load_state_dict(self._original_decoder)
        try:
            yield
        finally:
            self.mask_decoder.load_state_dict(tuned)

    def decode_with_quality(self, requests: Sequence[DecodeRequest], max_prompts: int = MAX_PROMPTS,
                            low_res: bool = False, inside: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`decode`, with the decoder's IoU estimate of each mask: [((N_i, H_i, W_i), (N_i,))]."""
        with self._lock:
            prompter = self.prompter
            own = not isinstance(prompter, BoxPrompter)  # a prompter of its own (tests) decodes itself
            decoder = {} if own else {"decoder": self.decoder_runtime(), "inside": inside}
            if not low_res:
                return prompter.decode_batch(list(requests), max_prompts, **decoder)
            # Candidates to score, not outlines to keep: few prompts per call (the decoder is memory-bound). On
            # torch, bfloat16 where native (28 boxes: 4.6 -> 2.3 CPU-s, masks within Dice 0.96 of float32's);
            # OpenVINO's float32 is faster than that already (BENCHMARKS.md, ovdec).
            bf16 = not own and not decoder["decoder"].name.startswith("openvino")
            with native_autocast(self.device) if bf16 else contextlib.nullcontext():
                if not own:
                    decoder["inside"] = inside and LOW_RES_INSIDE
                return prompter.decode_batch(list(requests), min(max_prompts, LOW_RES_PROMPTS), low_res=True,
                                             **decoder)

    # -- the mask decoder's weights (e.g. tuned by core/decoder_tuning.py) ---------------------------
    @property
    def mask_decoder(self) -> torch.nn.Module:
        """LiteMedSAM's mask decoder (train a copy of it; load the result with :meth:`load_decoder_state`)."""
        return self.model.mask_decoder

    def decoder_state(self) -> dict[str, torch.Tensor]:
        """A copy (on the CPU) of the mask decoder's current weights."""
        return {k: v.detach().cpu().clone() for k, v in self.mask_decoder.state_dict().items()}

    @property
    def decoder_tuned(self) -> bool:
        """Whether the mask decoder's weights differ from LiteMedSAM's own."""
        return self._original_decoder is not None

    def load_decoder_state(self, state: dict[str, torch.Tensor]) -> None:
        """Decode with `state` (a mask decoder state dict) from now on; embeddings stay valid."""
        with self._lock:
            if self._original_decoder is None:
                self._original_decoder = self.decoder_state()
            self.mask_decoder.load_state_dict(copy.deepcopy(state))
            self._decoder_exotic = not usable(self.decoder_state(), self._original_decoder)
            self.decoder_version += 1

    def reset_decoder(self) -> None:
        """Back to LiteMedSAM's own mask decoder weights (nothing happens when they were never changed)."""
        with self._lock:
            if self._original_decoder is None:
                return
            self.mask_decoder.load_state_dict(self._original_decoder)
            self._original_decoder = None
            self._decoder_exotic = False
            self.decoder_version += 1


def plane_digest(plane: np.ndarray) -> str:
    """A digest of a plane's pixels, shape and dtype (what names its embedding)."""
    plane = np.ascontiguousarray(plane)
    digest = hashlib.blake2b(repr((plane.shape, plane.dtype.str)).encode(), digest_size=16)
    digest.update(memoryview(plane).cast("B"))
    return digest.hexdigest()
