"""Autosaved support paint on disk, keyed by the scan it was painted on (no napari, no Qt, no torch).

A save keeps only what carries paint: the indices of the painted planes (along axis 0 of an
(S, H, W) support; a 2D (H, W) support is one plane) and those planes, in a compressed ``.npz``
with a JSON header (format version, scan signature, layer name, time, shape, dtype). Files are
written with io.atomic (temporary file beside, fsync, rename), so a crash or a kill mid-write
leaves the previous save intact. A damaged file is skipped with a message, never raised.

What a save may delete (the folder may be one the user keeps other files in):
- Only files the tool wrote: the name ``<signature>-<slot>-<time_ns>.npz`` (or atomic_write's
  temporary ``.<that name>.<random>.npz``) AND a header, read from the file's first zip member, that
  names the same signature and layer slot. A file with our name but not our header is never touched.
- Each (scan, layer name) keeps its ``keep`` newest saves that read back; the new save itself is read
  back first, and when it does not read back the save fails and deletes nothing else. Its own files
  beyond those (older, or damaged) are removed.
- The tool's files of other scans and layers untouched for MAX_AGE_S are removed.

A save of another scan, layer or shape than asked for (a copied file, an older version of the scan)
is passed over, so it never hides an older save that fits.

Location: ``$NAPARI_FEWSHOT_AUTOSAVE_DIR``, else ``$XDG_CACHE_HOME/napari-fewshot/autosave``, else
``~/.cache/napari-fewshot/autosave`` (read at call time; an empty XDG_CACHE_HOME counts as unset).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import cache_folder
from .atomic import atomic_write

ENV = "NAPARI_FEWSHOT_AUTOSAVE_DIR"
FORMAT = 1
KEEP = 2  # saves kept per scan and layer name: the newest, and one to fall back on
MAX_AGE_S = 30 * 24 * 3600  # saves untouched this long are removed when anything is saved
SAVE_NAME = re.compile(r"(?P<signature>.+)-(?P<slot>[0-9a-f]{12})-(?P<time_ns>\d{20})\.npz")
TEMP_NAME = re.compile(r"\.(?P<save>.+\.npz)\.[a-z0-9_]+\.npz")  # atomic_write's temporary file of a save
HEADER_BYTES = 1 << 16  # the header member is read from this much of the file's start
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
        try:
            if not read_snapshot(target).painted.equals(painted):
                raise ValueError("its paint differs from what was written")
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, the older saves must stay
            target.unlink(missing_ok=True)
            raise OSError(f"the file written does not read back ({type(exc).__name__}: {exc})") from exc
        with contextlib.suppress(OSError, MemoryError):  # the save stands; clean-up waits for the next one
            self._prune(signature, _slot(name), now, fresh=target)
        return target

    def snapshots(self, signature: str, problems: list[str] | None = None,
                  shape: tuple[int, ...] | None = None) -> list[Snapshot]:
        """The newest fitting save of each layer name painted on the scan ``signature``, newest first.

        A save fits when its header names this signature and the layer its file name says, and, when
        ``shape`` is given, its paint has that shape (the image's (S, H, W) or (H, W)); a save that does
        not fit is passed over for the next older one. Damaged files are skipped; a one-sentence message
        for each is logged and appended to ``problems``.
        """
        newest: dict[str, Snapshot] = {}
        for match, path in self._saves(signature):
            slot = match["slot"]
            if slot in newest:
                continue
            try:
                snapshot = read_snapshot(path)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is skipped
                message = f"Ignored the damaged autosave file {path} ({type(exc).__name__}: {exc})."
                logger.warning(message)
                if problems is not None:
                    problems.append(" ".join(message.split()))
                continue
            if _fits(snapshot, match, shape):
                newest[slot] = snapshot
            else:
                logger.info("Passed over the autosave %s: it is %s of '%s' for scan %s.", path,
                            snapshot.painted.shape, snapshot.name, snapshot.signature)
        return sorted(newest.values(), key=lambda s: s.saved_at, reverse=True)

    def latest(self, signature: str, problems: list[str] | None = None,
               shape: tuple[int, ...] | None = None) -> Snapshot | None:
        """The newest fitting save for the scan ``signature`` (any layer name; see :meth:`snapshots`), or None."""
        found = self.snapshots(signature, problems, shape)
        return found[0] if found else None

    def load(self, signature: str, problems: list[str] | None = None,
             shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The newest fitting saved support of the scan ``signature`` as a full label array, or None."""
        snapshot = self.latest(signature, problems, shape)
        return snapshot.painted.to_labels() if snapshot is not None else None

    def discard(self, signature: str, name: str | None = None) -> int:
        """Delete the tool's saves of the scan ``signature`` (only layer ``name``'s when given); returns how many."""
        removed = 0
        for match, path in self._saves(signature):
            if (name is None or match["slot"] == _slot(name)) and _written_by_us(path, match):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def _saves(self, signature: str) -> list[tuple[re.Match, Path]]:
        """(name match, path) of the files named as saves of ``signature``, newest first."""
        root = self.root
        if not root.is_dir():
            return []
        named = [(SAVE_NAME.fullmatch(path.name), path) for path in root.iterdir()]
        found = [(m, path) for m, path in named if m is not None and m["signature"] == signature]
        return sorted(found, key=lambda item: item[0]["time_ns"], reverse=True)

    def _prune(self, signature: str, slot: str, now: float, fresh: Path) -> None:
        """Remove the tool's files that are no longer needed (see the module docstring); ``fresh``: the
        save just written and read back. OSError (the folder) and MemoryError (reading a save back)
        propagate, with nothing deleted on their account."""
        readable = 0
        for match, path in self._saves(signature):
            if match["slot"] != slot:
                continue
            if readable < self.keep and (path == fresh or _reads_back(path, match)):
                readable += 1
            elif _written_by_us(path, match):
                with contextlib.suppress(OSError):
                    path.unlink()
        for path in self.root.iterdir():
            temp = TEMP_NAME.fullmatch(path.name)
            match = SAVE_NAME.fullmatch(temp["save"] if temp else path.name)
            if match is None or (not temp and (match["signature"], match["slot"]) == (signature, slot)):
                continue  # not ours by name, or the slot just pruned by count
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > MAX_AGE_S and _written_by_us(path, match):
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


def _fits(snapshot: Snapshot, match: re.Match, shape: tuple[int, ...] | None) -> bool:
    """Whether a save read from a file named ``match`` is what its name says, in ``shape`` when given."""
    return (snapshot.signature == match["signature"] and _slot(snapshot.name) == match["slot"]
            and (shape is None or snapshot.painted.shape == tuple(int(n) for n in shape)))


def _reads_back(path: Path, match: re.Match) -> bool:
    """Whether ``path`` reads back whole and is the save its name says."""
    try:
        return _fits(read_snapshot(path), match, None)
    except MemoryError:
        raise  # says nothing about the file: it must not be deleted as damaged
    except Exception:  # noqa: BLE001 - any other failure means it would not restore
        return False


def _written_by_us(path: Path, match: re.Match) -> bool:
    """Whether a file named like a save (``match``) carries the tool's header naming the same scan and
    layer slot; read from its first zip member, so a truncated save or temporary file still shows it."""
    header = _first_member_header(path)
    return (header is not None and header.get("signature") == match["signature"]
            and _slot(str(header.get("name"))) == match["slot"])


def _first_member_header(path: Path) -> dict | None:
    """The JSON header a save stores as its first zip member (``header.npy``), read from the file's first
    HEADER_BYTES without the zip's central directory (missing from a cut-off file); None when absent."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_BYTES)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return None
        (method,) = struct.unpack_from("<H", head, 8)
        name_length, extra_length = struct.unpack_from("<HH", head, 26)
        if head[30:30 + name_length] != b"header.npy":
            return None
        body = head[30 + name_length + extra_length:]
        if method == zipfile.ZIP_DEFLATED:
            body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, HEADER_BYTES)  # (no zip bomb)
        header = json.loads(str(np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)))
    except Exception:  # noqa: BLE001 - whatever it holds, it is not a header we can vouch for
        return None
    return header if isinstance(header, dict) else None


def _slot(name: str) -> str:
    """File-name-safe key of a layer name."""
    return hashlib.blake2b(name.encode(), digest_size=6).hexdigest()


def _write_atomic(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed npz under ``target``, atomically (see io.atomic)."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.savez_compressed(file, **arrays)

    atomic_write(target, save)
