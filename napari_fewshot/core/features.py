"""Per-slice encoder features, computed once, lazily, in batches; kept in fp16.

Like segment-anything's predictor: the expensive encoder runs once per slice, and every later
question (a new stroke, another class, a heatmap) reuses what is cached. Fine-tuning changes the
encoder, so it must call :meth:`FeatureCache.invalidate`.

Two tiers. Memory holds the most recently used slices up to `memory_budget` bytes; beyond it the
least recently used slices move to disk (one `.npy` per slice, read back on demand). With a
`disk_dir`, every slice is also written there under a signature of (pixels, window, encoder,
weights, input size, package version), so reopening the same scan reuses its features and a
changed scan or encoder never does. Like micro-sam's embedding cache, but per slice and lazy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Iterable

import numpy as np
import torch

from .. import __version__
from ..io.atomic import atomic_write
from ..paths import cache_folder
from .encoders import Encoder
from .encoders.base import encoder_signature
from .memory import release_free_memory
from .normalization import to_encoder_input
from .progress import Progress
from .stack import ImageStack

CACHE_ENV = "NAPARI_FEWSHOT_CACHE_DIR"
DEFAULT_MEMORY_BUDGET = 4 * 1024**3


def default_cache_dir() -> Path:
    """$NAPARI_FEWSHOT_CACHE_DIR, else $XDG_CACHE_HOME/napari-fewshot, else ~/.cache/napari-fewshot (see
    paths.cache_folder: an empty XDG_CACHE_HOME counts as unset)."""
    return cache_folder(override_env=CACHE_ENV)


def feature_signature(stack: ImageStack, encoder_id: str, input_size: int | None) -> str:
    """Key of a stack's features: pixels and window, encoder and weights, input size, package version."""
    text = json.dumps([stack.signature(), encoder_id, input_size, __version__])
    return hashlib.sha1(text.encode()).hexdigest()[:20]


@dataclass
class SetAside:
    """Features taken out of a FeatureCache (see FeatureCache.set_aside): memory tensors, indices on disk,
    the spill folder holding those files (None: they are in persist_dir)."""

    memory: OrderedDict
    on_disk: set
    spill: tempfile.TemporaryDirectory | None
    persist_dir: Path | None


class FeatureCache:
    """Features of every slice of `stack`: get(i) -> (C, h, w) float32 on the cache's device.

    memory_budget: bytes of fp16 features kept in memory; the rest spill to disk.
    disk_dir:      persistent cache root (None: nothing persists; spills go to a temporary folder).
    encoder_id:    names the encoder's weights for the signature (fine-tuned weights: don't persist).
    `notices` collects sentences a UI should show (e.g. a GPU that ran out of memory).
    """

    def __init__(self, encoder: Encoder, stack: ImageStack, device: torch.device, input_size: int | None,
                 batch_size: int = 8, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 disk_dir: str | os.PathLike | None = None, encoder_id: str | None = None):
        self.encoder = encoder
        self.stack = stack
        self.device = device
        self.input_size = input_size
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.notices: list[str] = []
        self.generation = 0  # bumped whenever features are forgotten, so derived results can tell
        self.adapter: torch.nn.Module | None = None  # core/feature_adapter.py, applied by get(); None: raw
        self._memory: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._on_disk: set[int] = set()
        self._spill: tempfile.TemporaryDirectory | None = None
        self._persist_dir: Path | None = None
        self.set_persistence(disk_dir, encoder_id or encoder_signature(encoder))

    # -- bookkeeping -------------------------------------------------------------------------
    def __contains__(self, index: int) -> bool:
        return index in self._memory or index in self._on_disk

    def __len__(self) -> int:
        return len(self._memory.keys() | self._on_disk)

    @property
    def nbytes(self) -> int:
        """Bytes of features held in memory (disk not counted)."""
        return sum(t.numel() * t.element_size() for t in self._memory.values())

    @property
    def persist_dir(self) -> Path | None:
        return self._persist_dir

    def set_persistence(self, disk_dir: str | os.PathLike | None, encoder_id: str | None) -> None:
        """Persist features under disk_dir/<signature> (None or encoder_id None: don't persist)."""
        self._persist_dir = None
        if disk_dir is not None and encoder_id is not None:
            self.signature = feature_signature(self.stack, encoder_id, self.input_size)
            self._persist_dir = Path(disk_dir) / "features" / self.signature
            self._adopt_disk_cache()

    def invalidate(self, disk_dir: str | os.PathLike | None = None, encoder_id: str | None = None) -> None:
        """Forget every feature map (the encoder changed); persist again only under a new encoder_id."""
        self.generation += 1
        self._memory.clear()
        self._on_disk.clear()
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None
        self.set_persistence(disk_dir, encoder_id)

    def set_aside(self) -> "SetAside":
        """Move every feature map out of the cache, as it is (memory tensors; files of a spill folder or a
        persistent folder stay where they are), for :meth:`restore` after the encoder comes back to the
        weights they were computed with (Reset weights). The cache is empty afterwards."""
        aside = SetAside(self._memory, set(self._on_disk), self._spill, self._persist_dir)
        if self.nbytes > self.memory_budget // 2:  # do not hold two full tiers in memory while fine-tuned
            for index, tensor in list(aside.memory.items()):
                if index not in self._on_disk:
                    self._write(index, tensor)
                    aside.on_disk.add(index)
            aside.spill = self._spill
            aside.memory = OrderedDict()
        self._memory, self._on_disk, self._spill = OrderedDict(), set(), None
        self.generation += 1
        return aside

    def restore(self, aside: "SetAside") -> None:
        """Put back what :meth:`set_aside` took (the encoder has its original weights again)."""
        self.generation += 1
        if aside.spill is not None:
            if self._spill is not None and self._spill is not aside.spill:
                self._spill.cleanup()
            self._spill = aside.spill
        if aside.spill is not None or aside.persist_dir == self._persist_dir:
            self._on_disk |= aside.on_disk
        for index, tensor in aside.memory.items():
            self._remember(index, tensor.to(self.device), write=False)

    def set_adapter(self, adapter: torch.nn.Module | None) -> None:
        """Apply `adapter` ((C, h, w) -> (C, h, w), e.g. feature_adapter.FeatureAdapter) to what get() returns
        from now on (None: the raw features again). The cached features stay; `generation` is bumped."""
        self.adapter = None if adapter is None else adapter.to(self.device).eval()
        self.generation += 1

    # -- access ------------------------------------------------------------------------------
    def get(self, index: int) -> torch.Tensor:
        """(C, h, w) float32 features of slice `index`, through the adapter when one is set."""
        features = self.get_raw(index)
        if self.adapter is None:
            return features
        with torch.no_grad():
            return self.adapter(features)

    def get_raw(self, index: int) -> torch.Tensor:
        """(C, h, w) float32 features of slice `index` as the encoder made them (no adapter)."""
        if index in self._memory:
            self._memory.move_to_end(index)
        elif index in self._on_disk:
            array = np.load(self._slice_path(index))
            self._remember(index, torch.from_numpy(array).to(self.device), write=False)
        else:
            for _ in self.compute([index]):
                pass
        return self._memory[index].float()

    def compute(self, indices: Iterable[int] | None = None, first: Iterable[int] = ()) -> Generator[Progress, None, None]:
        """Compute the missing features of `indices` (all slices by default), `first` before the rest.

        Yields a Progress after each batch. Slices are batched only with slices of the same size.
        """
        wanted = list(range(len(self.stack))) if indices is None else list(indices)
        order = list(dict.fromkeys([i for i in first if i in set(wanted)] + wanted))
        todo = [i for i in order if i not in self]
        total, done = len(todo), 0
        while todo:
            shape = self.stack.shape_of(todo[0])
            batch = [i for i in todo if self.stack.shape_of(i) == shape][: self.batch_size]
            self._encode(batch)
            release_free_memory()  # the encoder's activations are freed between batches (see memory.py)
            todo = [i for i in todo if i not in self]
            done += len(batch)
            yield Progress(done, total, f"features of slice {batch[-1] + 1} of {len(self.stack)}")

    # -- encoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, batch: list[int]) -> None:
        pixels = np.stack([self.stack.slice(i) for i in batch])
        x = to_encoder_input(pixels, self.input_size, self.encoder.normalization)
        try:
            features = self.encoder(x.to(self.device)).to(torch.float16)
        except torch.OutOfMemoryError:
            self._recover_from_oom(batch)
            return
        for i, f in zip(batch, features):
            self._remember(i, f.clone(), write=True)

    def _recover_from_oom(self, batch: list[int]) -> None:
        """Halve the batch and retry; at one slice, fall back to the CPU for the rest of the session."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) > 1:
            self.batch_size = max(1, len(batch) // 2)
            self.notices.append(f"The GPU ran out of memory; computing {self.batch_size} slices at a time.")
            for start in range(0, len(batch), self.batch_size):
                self._encode(batch[start:start + self.batch_size])
            return
        if self.device.type == "cpu":
            raise MemoryError("Not enough memory to compute the features of one slice; lower the input size.")
        self.notices.append("The GPU ran out of memory even for one slice; continuing on the CPU (slower).")
        self.device = torch.device("cpu")
        self.encoder.to(self.device)
        self._memory = OrderedDict((i, t.cpu()) for i, t in self._memory.items())
        self._encode(batch)

    # -- tiers -------------------------------------------------------------------------------
    def _remember(self, index: int, features: torch.Tensor, write: bool) -> None:
        self._memory[index] = features
        self._memory.move_to_end(index)
        if write and self._persist_dir is not None:
            self._write(index, features)
        while self.nbytes > self.memory_budget and len(self._memory) > 1:
            old, tensor = self._memory.popitem(last=False)
            if old not in self._on_disk:
                self._write(old, tensor)

    def _slice_path(self, index: int) -> Path:
        return self._folder() / f"slice_{index:05d}.npy"

    def _folder(self) -> Path:
        if self._persist_dir is not None:
            return self._persist_dir
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="napari-fewshot-spill-")
        return Path(self._spill.name)

    def _write(self, index: int, features: torch.Tensor) -> None:
        target = self._slice_path(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        array = features.cpu().numpy()
        atomic_write(target, lambda tmp: np.save(tmp, array))  # never a half-written slice under the real name
        self._on_disk.add(index)
        if self._persist_dir is not None and not (self._persist_dir / "meta.json").exists():
            meta = {"signature": self.signature, "version": __version__, "encoder": self.encoder.name,
                    "input_size": self.input_size, "slices": len(self.stack)}
            atomic_write(self._persist_dir / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta)))

    def _adopt_disk_cache(self) -> None:
        """Index the slices a previous session left under this signature (checked, not trusted blindly)."""
        meta_path = self._persist_dir / "meta.json"
        if not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("signature") != self.signature or meta.get("slices") != len(self.stack):
            shutil.rmtree(self._persist_dir, ignore_errors=True)
            return
        for path in self._persist_dir.glob("slice_*.npy"):
            if not path.name.endswith(".tmp.npy"):  # left by versions before io.atomic
                index = int(path.stem.split("_")[1])
                if index < len(self.stack):
                    self._on_disk.add(index)
