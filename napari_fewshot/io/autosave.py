"""Autosaved support paint on disk, keyed by the scan it was painted on (no napari, no Qt, no torch).

A save keeps only what carries paint: the indices of the painted planes (along axis 0 of an
(S, H, W) support; a 2D (H, W) support is one plane) and those planes, in a compressed ``.npz``
with a JSON header (format version, scan signature, layer name, time, shape, dtype). Files are
written with io.atomic (temporary file beside, fsync, rename), so a crash or a kill mid-write
leaves the previous save intact. Each (scan, layer name) keeps its ``keep`` newest
saves; a damaged file is skipped with a message, never raised.

Location: ``$NAPARI_FEWSHOT_AUTOSAVE_DIR``, else ``$XDG_CACHE_HOME/napari-fewshot/autosave``, else
``~/.cache/napari-fewshot/autosave`` (read at call time; an empty XDG_CACHE_HOME counts as unset).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import cache_folder
from .atomic import atomic_write

ENV = "NAPARI_FEWSHOT_AUTOSAVE_DIR"
FORMAT = 1
KEEP = 2  # saves kept per scan and layer name: the newest, and one to fall back on
MAX_AGE_S = 30 * 24 * 3600  # saves untouched this long are removed when anything is saved
logger = logging.getLogger(__name__)


def default_autosave_dir() -> Path:
    """$NAPARI_FEWSHOT_AUTOSAVE_DIR, else the user cache folder's ``napari-fewshot/autosave`` (see paths)."""
    return cache_folder("autosave", ENV)


def scan_signature(data) -> str:
    """blake2b-128 hex of the shape, dtype and every pixel of an image array (any shape), read one
    plane (along axis 0) at a time so a lazy array is never loaded whole. ~0.4 s for 512x512x600
    uint16; hashlib releases the GIL, so it can run in a thread while Qt paints."""
    shape = tuple(int(n) for n in data.shape)
    digest = hashlib.blake2b(repr((shape, str(np.dtype(data.dtype)))).encode(), digest_size=16)
    planes = [data] if len(shape) < 3 else (data[i] for i in range(shape[0]))
    for plane in planes:
        digest.update(np.ascontiguousarray(plane).data)
    return digest.hexdigest()


@dataclass
class Painted:
    """The painted part of a label array of ``shape``: ``planes[k]`` is plane ``indices[k]``.

    indices: (K,) int64, increasing. planes: (K, *plane_shape), the label dtype. A 2D (H, W)
    array has one plane, index 0.
    """

    shape: tuple[int, ...]
    indices: np.ndarray
    planes: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> Painted:
        """Copy the planes of ``labels`` ((S, H, W) or (H, W)) that hold any non-zero value (~10 ms for 600x512x512)."""
        labels = np.asarray(labels)
        stack = labels[None] if labels.ndim == 2 else labels
        flat = stack.reshape(len(stack), -1)
        indices = np.flatnonzero(flat.any(axis=1)) if flat.size else np.zeros(0, np.int64)
        return cls(tuple(labels.shape), indices.astype(np.int64), stack[indices].copy())

    def to_labels(self) -> np.ndarray:
        """The full label array (zeros where nothing was painted)."""
        plane_shape = self.shape[1:] if len(self.shape) > 2 else self.shape
        stack = np.zeros((1 if len(self.shape) == 2 else self.shape[0], *plane_shape), self.planes.dtype)
        stack[self.indices] = self.planes
        return stack.reshape(self.shape)

    def equals(self, other: Painted) -> bool:
        """Same shape, dtype and paint."""
        return (self.shape == other.shape and self.planes.dtype == other.planes.dtype
                and np.array_equal(self.indices, other.indices) and np.array_equal(self.planes, other.planes))


@dataclass
class Snapshot:
    """One autosave: the scan's signature, the layer's name, when (seconds since the epoch), the paint."""

    signature: str
    name: str
    saved_at: float
    painted: Painted
    path: Path


class AutosaveStore:
    """Saves and finds support paint per scan signature in ``root`` (default: :func:`default_autosave_dir`)."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP):
        self._root = Path(root) if root is not None else None
        self.keep = max(1, int(keep))

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else default_autosave_dir()

    def save(self, signature: str, labels: np.ndarray | Painted, name: str = "support") -> Path | None:
        """Write ``labels`` (an (S, H, W) / (H, W) array, or its :class:`Painted` part) for the scan
        ``signature`` under the layer ``name``; returns the file, or None when nothing is painted
        (earlier saves are kept). Raises OSError when the folder cannot be written."""
        painted = labels if isinstance(labels, Painted) else Painted.from_labels(labels)
        if not len(painted.indices):
            return None
        now = time.time()
        header = {"format": FORMAT, "signature": signature, "name": name, "saved_at": now,
                  "shape": list(painted.shape), "dtype": str(painted.planes.dtype)}
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"{signature}-{_slot(name)}-{time.time_ns():020d}.npz"
        _write_atomic(target, {"header": np.array(json.dumps(header)), "indices": painted.indices,
                               "planes": painted.planes})
        self._prune(signature, _slot(name), now)
        return target

    def snapshots(self, signature: str, problems: list[str] | None = None) -> list[Snapshot]:
        """The newest readable save of each layer name painted on the scan ``signature``, newest first.

        Damaged files are skipped; a one-sentence message for each is logged and appended to ``problems``.
        """
        newest: dict[str, Snapshot] = {}
        for path in sorted(self._files(signature), reverse=True):  # newest first within each slot
            slot = path.name.rsplit("-", 2)[1]
            if slot in newest:
                continue
            try:
                newest[slot] = read_snapshot(path)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is skipped
                message = f"Ignored the damaged autosave file {path} ({type(exc).__name__}: {exc})."
                logger.warning(message)
                if problems is not None:
                    problems.append(" ".join(message.split()))
        return sorted(newest.values(), key=lambda s: s.saved_at, reverse=True)

    def latest(self, signature: str, problems: list[str] | None = None) -> Snapshot | None:
        """The newest readable save for the scan ``signature`` (any layer name), or None."""
        found = self.snapshots(signature, problems)
        return found[0] if found else None

    def load(self, signature: str, problems: list[str] | None = None) -> np.ndarray | None:
        """The newest saved support of the scan ``signature`` as a full label array, or None."""
        snapshot = self.latest(signature, problems)
        return snapshot.painted.to_labels() if snapshot is not None else None

    def discard(self, signature: str, name: str | None = None) -> int:
        """Delete the saves of the scan ``signature`` (only layer ``name``'s when given); returns how many."""
        files = [p for p in self._files(signature) if name is None or p.name.rsplit("-", 2)[1] == _slot(name)]
        for path in files:
            path.unlink(missing_ok=True)
        return len(files)

    def _files(self, signature: str) -> list[Path]:
        root = self.root
        return list(root.glob(f"{signature}-*-*.npz")) if root.is_dir() else []

    def _prune(self, signature: str, slot: str, now: float) -> None:
        """Keep the ``keep`` newest saves of this slot; drop any save (or stray temp file) older than MAX_AGE_S."""
        for path in sorted(self.root.glob(f"{signature}-{slot}-*.npz"), reverse=True)[self.keep:]:
            path.unlink(missing_ok=True)
        for path in self.root.glob("*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > MAX_AGE_S and path.suffix in (".npz", ".tmp"):
                    path.unlink()


def read_snapshot(path: str | os.PathLike) -> Snapshot:
    """Read and check one autosave file; ValueError / OSError / KeyError when it is damaged."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
        indices = np.asarray(npz["indices"], np.int64)
        planes = np.asarray(npz["planes"])
    if header.get("format") != FORMAT:
        raise ValueError(f"unknown autosave format {header.get('format')!r}")
    shape = tuple(int(n) for n in header["shape"])
    n_planes = 1 if len(shape) == 2 else shape[0]
    plane_shape = shape if len(shape) == 2 else shape[1:]
    if (planes.shape != (len(indices), *plane_shape) or str(planes.dtype) != header["dtype"]
            or (len(indices) and (indices.min() < 0 or indices.max() >= n_planes))):
        raise ValueError("its arrays do not match its header")
    return Snapshot(str(header["signature"]), str(header["name"]), float(header["saved_at"]),
                    Painted(shape, indices, planes), path)


def _slot(name: str) -> str:
    """File-name-safe key of a layer name."""
    return hashlib.blake2b(name.encode(), digest_size=6).hexdigest()


def _write_atomic(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed npz under ``target``, atomically (see io.atomic)."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.savez_compressed(file, **arrays)

    atomic_write(target, save)
