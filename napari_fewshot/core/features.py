"""Per-slice encoder features, computed once, lazily, in batches; kept in fp16.

Like segment-anything's predictor: the expensive encoder runs once per slice, and every later
question (a new stroke, another class, a heatmap) reuses what is cached. Fine-tuning changes the
encoder, so it must call :meth:`FeatureCache.invalidate`.
"""

from __future__ import annotations

from typing import Generator, Iterable

import torch

from .encoders import Encoder
from .normalization import to_encoder_input
from .progress import Progress
from .stack import ImageStack


class FeatureCache:
    """Features of every slice of `stack`: get(i) -> (C, h, w) float32 on `device`.

    Stored as fp16 on the device they were computed on (halves memory; cosine similarity does not
    notice the precision).
    """

    def __init__(self, encoder: Encoder, stack: ImageStack, device: torch.device,
                 input_size: int | None, batch_size: int = 8):
        self.encoder = encoder
        self.stack = stack
        self.device = device
        self.input_size = input_size
        self.batch_size = batch_size
        self._features: dict[int, torch.Tensor] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._features

    def __len__(self) -> int:
        return len(self._features)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._features.values())

    def invalidate(self) -> None:
        """Forget every feature map (the encoder changed)."""
        self._features.clear()

    def get(self, index: int) -> torch.Tensor:
        if index not in self._features:
            for _ in self.compute([index]):
                pass
        return self._features[index].float()

    def compute(self, indices: Iterable[int] | None = None, first: Iterable[int] = ()) -> Generator[Progress, None, None]:
        """Compute the missing features of `indices` (all slices by default), `first` before the rest.

        Yields a Progress after each batch. Slices are batched only with slices of the same size.
        """
        wanted = list(range(len(self.stack))) if indices is None else list(indices)
        order = list(dict.fromkeys([i for i in first if i in set(wanted)] + wanted))
        todo = [i for i in order if i not in self._features]
        total, done = len(todo), 0
        while todo:
            shape = self.stack.shape_of(todo[0])
            batch = [i for i in todo if self.stack.shape_of(i) == shape][: self.batch_size]
            self._encode(batch)
            todo = [i for i in todo if i not in self._features]
            done += len(batch)
            yield Progress(done, total, f"features of slice {batch[-1] + 1} of {len(self.stack)}")

    @torch.no_grad()
    def _encode(self, batch: list[int]) -> None:
        import numpy as np

        pixels = np.stack([self.stack.slice(i) for i in batch])
        x = to_encoder_input(pixels, self.input_size).to(self.device)
        features = self.encoder(x).to(torch.float16)
        for i, f in zip(batch, features):
            self._features[i] = f.clone()
