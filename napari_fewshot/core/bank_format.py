"""The ``.fewshot`` prototype-bank file, as plain dicts and arrays; a bank file is untrusted input.

A zip archive (schema :data:`SCHEMA_VERSION`) of:

    metadata.json            JSON: format, schema_version, package_version, created, encoder {name, weights_id,
                             feature_dim, fine_tuned}, params (SegmentationParams.to_dict()), normalization
                             {modality, input_size, image_input_size, input_mean, input_std (the encoder's
                             input normalisation), ct_window_hu; older banks have imagenet_mean and
                             imagenet_std instead of input_mean and input_std, always ImageNet's},
                             classes [{id, name, colour (RGBA in [0, 1] or null)}], prototypes {total, counts},
                             sources [...], tensors {entry name: {dtype, shape}} (every .npy entry below),
                             priors (schema 3, optional) {class id: {z [lo, hi], centre [y, x], spread [y, x],
                             area, slices, level (optional)}} (core/bank_priors.ClassPrior: where each class
                             was on its support)
    prototypes/vectors.npy   (P, C) float32, L2-normalised, C = encoder.feature_dim
    prototypes/owner.npy     (P,) int64: 0 background, k = class index (classes[k - 1])
    prototypes/is_global.npy (P,) bool: exactly one global prototype per class index 0..K
    encoder/<state key>.npy  the fine-tuned encoder's state_dict (only when encoder.fine_tuned)
    adapter/<key>.npy, decoder/<key>.npy  float32: Fine-tune's feature adapter and tuned LiteMedSAM decoder
                             weights (core/finetune.Adaptation.arrays), when it adapted them

    write_bank(path, metadata, arrays)          # atomically (io/atomic.py)
    metadata, arrays = read_bank(path)          # FewShotError (one sentence) unless every field is valid

Reading never trusts the archive: the file and every member are size-bounded before anything is
decompressed (a member may not be larger than its declared array), arrays are read with
``allow_pickle=False`` after their header matches the metadata, and every field is checked for type,
range and finiteness. Meaning (whether the encoder is registered, the normalisation) is checked by core/bank.py.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FewShotError
from .config import SegmentationParams, grouped_layout
from .settings import Setting, settings_of

FORMAT_NAME = "napari-fewshot-bank"
ADAPTED = ("adapter/", "decoder/", "calibration/")  # entries of Fine-tune's cheap methods (core/finetune.Adaptation.arrays)
SCHEMA_VERSION = 3  # 3: priors; 2: params grouped ("refine": {...}); 1: flat refine_* params; all still read
SUFFIX = ".fewshot"
METADATA = "metadata.json"
PROTOTYPE_ENTRIES = ("vectors", "owner", "is_global")
PROTOTYPE_DTYPES = {"vectors": "float32", "owner": "int64", "is_global": "bool"}
ENCODER_DTYPES = ("float32", "float16", "float64", "int64", "int32", "bool", "uint8")

MAX_FILE_BYTES = 1 << 30  # the whole bank: prototypes plus, when fine-tuned, an encoder's weights
MAX_METADATA_BYTES = 16 << 20
MAX_MEMBERS = 10_000
NPY_HEADER_BYTES = 1 << 16  # a .npy header is far smaller; bounds what a member may add to its array
MAX_CLASSES = 1_000
MAX_LABEL = 2**31 - 1
MAX_FEATURE_DIM = 16_384
MAX_NAME = 200


def _bad(name: str, what: str) -> FewShotError:
    return FewShotError(f"{name} is not a valid prototype bank ({what}).")


# -- writing ------------------------------------------------------------------------------------------
def write_bank(path: str | os.PathLike, metadata: dict[str, Any], arrays: dict[str, np.ndarray],
               overwrite: bool = True) -> Path:
    """Write `metadata` (its "tensors" list filled in here) and `arrays` (entry name -> array) to `path`
    atomically; FewShotError when it exists and not `overwrite`, or cannot be written."""
    from ..io.atomic import atomic_write

    path = Path(path)
    meta = dict(metadata, tensors={name: {"dtype": str(a.dtype), "shape": list(a.shape)} for name, a in arrays.items()})
    text = json.dumps(meta, indent=1, default=_json_default)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr(METADATA, text)
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, np.asarray(array), allow_pickle=False)
                archive.writestr(f"{name}.npy", buffer.getvalue())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, write, overwrite=overwrite)
    except FileExistsError as err:
        raise FewShotError(f"{path} already exists; choose another name or allow overwriting.") from err
    except OSError as err:
        raise FewShotError(f"Cannot write the prototype bank {path}: {err.strerror or err}.") from err


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# -- reading ------------------------------------------------------------------------------------------
def read_bank(source: str | os.PathLike | bytes, name: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a bank file (a path, or its bytes), every field checked; FewShotError otherwise.

    metadata is the JSON document with its fields validated ("classes" ids unique, "params" typed like
    SegmentationParams ...); arrays maps entry names ("prototypes/vectors", "encoder/<key>") to arrays.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "the prototype bank"
        if len(source) > MAX_FILE_BYTES:
            raise _bad(name, f"larger than {MAX_FILE_BYTES >> 30} GiB")
        opened = io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():  # a named pipe is never opened: reading it would wait for a writer
            raise FewShotError(f"The prototype bank {path} " + ("is not a regular file (a folder, named pipe or "
                               "device)." if path.exists() else "does not exist."))
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _bad(name, f"larger than {MAX_FILE_BYTES >> 30} GiB")
        opened = path
    try:
        with zipfile.ZipFile(opened) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise _bad(name, f"{len(members)} entries")
            infos = {info.filename: info for info in members}
            meta = check_metadata(_read_json(archive, infos, name), name)
            arrays = {entry: _read_array(archive, infos, entry, spec, name) for entry, spec in meta["tensors"].items()}
    except FewShotError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError, TypeError,
            NotImplementedError, RuntimeError, UnicodeDecodeError) as err:
        raise FewShotError(f"{name} is not a readable prototype bank (corrupt or truncated: "
                           f"{str(err).splitlines()[0] if str(err) else type(err).__name__}).") from err
    check_arrays(meta, arrays, name)
    return meta, arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, name: str) -> bytes:
    """The member's bytes, refused before decompressing when its declared size is over `limit`, and
    never more than `limit` bytes decompressed whatever the archive claims."""
    if info.file_size > limit:
        raise _bad(name, f"its entry {info.filename} unpacks to {info.file_size} bytes, more than the "
                         f"{limit} it may hold")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise _bad(name, f"its entry {info.filename} unpacks to more than it declares")
    return data


def _read_json(archive: zipfile.ZipFile, infos: dict, name: str) -> Any:
    if METADATA not in infos:
        raise FewShotError(f"{name} is not a prototype bank (it has no {METADATA}).")
    raw = _read_member(archive, infos[METADATA], MAX_METADATA_BYTES, name)
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise FewShotError(f"{name} is not a readable prototype bank (its {METADATA} is not valid JSON).") from err


def _no_constant(token: str):
    raise json.JSONDecodeError(f"{token} is not JSON", token, 0)


def _read_array(archive: zipfile.ZipFile, infos: dict, entry: str, spec: dict, name: str) -> np.ndarray:
    member = f"{entry}.npy"
    if member not in infos:
        raise _bad(name, f"the entry {entry} is missing")
    expected = int(np.prod(spec["shape"], dtype=object)) * np.dtype(spec["dtype"]).itemsize
    raw = _read_member(archive, infos[member], expected + NPY_HEADER_BYTES, name)
    buffer = io.BytesIO(raw)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    reader = readers.get(np.lib.format.read_magic(buffer))
    if reader is None:
        raise _bad(name, f"{entry} is not a NumPy array file this version reads")
    shape, _, dtype = reader(buffer)  # the header only: nothing is unpacked before it matches the metadata
    if list(shape) != list(spec["shape"]) or str(dtype) != spec["dtype"]:
        raise _bad(name, f"{entry} is {dtype} {tuple(shape)}, its metadata says {spec['dtype']} {tuple(spec['shape'])}")
    buffer.seek(0)
    return np.load(buffer, allow_pickle=False)


# -- field checks -------------------------------------------------------------------------------------
def _int(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short_text(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME


def check_metadata(meta: Any, name: str) -> dict[str, Any]:
    """Check every field of a bank's metadata document (see the module docstring); returns it."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FewShotError(f"{name} is not a napari-fewshot prototype bank.")
    version = meta.get("schema_version")
    if not _int(version, 1, 10**6):
        raise FewShotError(f"{name} has an invalid schema version {version!r}.")
    if version > SCHEMA_VERSION:
        raise FewShotError(f"{name} was written by a newer napari-fewshot (bank schema {version}; this version "
                           f"reads up to {SCHEMA_VERSION}); upgrade napari-fewshot to use it.")
    for key in ("package_version", "created"):
        if not _short_text(meta.get(key, "")):
            raise _bad(name, f"its {key} is not a short text")
    encoder = meta.get("encoder")
    if not isinstance(encoder, dict) or not _short_text(encoder.get("name")) or not encoder.get("name") \
            or not _short_text(encoder.get("weights_id")) or not isinstance(encoder.get("fine_tuned"), bool) \
            or not _int(encoder.get("feature_dim"), 1, MAX_FEATURE_DIM):
        raise _bad(name, "its encoder needs a name, a weights_id, a feature_dim from 1 to "
                         f"{MAX_FEATURE_DIM} and fine_tuned true or false")
    meta["params"] = check_params(meta.get("params"), name)
    _check_normalization(meta.get("normalization", {}), name)
    _check_classes(meta.get("classes"), name)
    prototypes = meta.get("prototypes", {})
    if not isinstance(prototypes, dict) or not isinstance(prototypes.get("counts", {}), dict) \
            or not all(isinstance(k, str) and _int(v, 0, 2**40) for k, v in prototypes.get("counts", {}).items()):
        raise _bad(name, "its prototype counts are not counts")
    if not isinstance(meta.get("sources", []), list) or not all(isinstance(s, dict) for s in meta.get("sources", [])):
        raise _bad(name, "its sources are not a list of records")
    _check_tensors(meta.get("tensors"), encoder["fine_tuned"], name)
    _check_priors(meta.get("priors", {}), {c["id"] for c in meta["classes"]}, name)
    return meta


def _check_priors(priors: Any, class_ids: set[int], name: str) -> None:
    """Each prior names one of the bank's classes and holds finite numbers of the right count (bank_priors)."""
    if not isinstance(priors, dict):
        raise _bad(name, "its priors are not a record")
    for key, prior in priors.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) in class_ids):
            raise _bad(name, f"it has priors for {key!r:.40}, which is not one of its classes")
        if not isinstance(prior, dict) or not _int(prior.get("slices"), 1, 10**7) \
                or not (_number(prior.get("area")) and 0 <= prior["area"] <= 1e3):
            raise _bad(name, f"the priors of class {key} need a slice count and an area")
        if prior.get("level") is not None and not (_number(prior["level"]) and abs(prior["level"]) <= 1e3):
            raise _bad(name, f"the level of class {key} is not a finite number")
        for field in ("z", "centre", "spread"):
            values = prior.get(field)
            if not isinstance(values, list) or len(values) != 2 \
                    or not all(_number(v) and abs(v) <= 1e3 for v in values):
                raise _bad(name, f"the priors of class {key} need {field} as 2 finite numbers")


def check_params(values: Any, name: str) -> dict[str, Any]:
    """SegmentationParams.to_dict() values (or the flat layout of schema 1), each typed like its setting and,
    unless machine-local (not applied from a bank), within the setting's range (core/config.py); returns the
    known ones in the grouped layout (unknown keys dropped)."""
    if not isinstance(values, dict):
        raise _bad(name, "its params are not a record")
    values = grouped_layout(values)
    out: dict[str, Any] = {}
    for setting in settings_of(SegmentationParams):
        *groups, key = setting.name.split(".")
        holder, target = values, out
        for group in groups:
            holder = holder.get(group) if isinstance(holder, dict) else None
            target = target.setdefault(group, {})
        if not isinstance(holder, dict) or key not in holder:
            continue
        value = holder[key]
        if not _typed_like(value, setting):
            raise _bad(name, f"its parameter {setting.name} is {value!r:.80}")
        low, high = setting.minimum, setting.maximum
        if value is not None and low is not None and not setting.machine_local and not low <= value <= high:
            raise _bad(name, f"its {setting.name} {value} is not from {low} to {high}")
        target[key] = value
    return out


def _typed_like(value: Any, setting: Setting) -> bool:
    """Whether a JSON value fits a setting's type (an int fits a float setting, a bool only a bool one)."""
    if value is None:
        return setting.optional
    if isinstance(value, bool):
        return setting.kind is bool
    if isinstance(value, int):
        return setting.kind in (int, float)
    if isinstance(value, float):
        return setting.kind is float and math.isfinite(value)
    return isinstance(value, str) and setting.kind is str


def _check_normalization(values: Any, name: str) -> None:
    if not isinstance(values, dict):
        raise _bad(name, "its normalization is not a record")
    for key, n in (("input_mean", 3), ("input_std", 3), ("ct_window_hu", 2), ("imagenet_mean", 3), ("imagenet_std", 3)):
        if key in values and (not isinstance(values[key], list) or len(values[key]) != n
                              or not all(_number(v) for v in values[key])):
            raise _bad(name, f"its normalization {key} is not {n} finite numbers")


def _check_classes(classes: Any, name: str) -> None:
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise _bad(name, f"it needs a list of 1 to {MAX_CLASSES} classes")
    for c in classes:
        if not isinstance(c, dict) or not _int(c.get("id"), 1, MAX_LABEL):
            raise _bad(name, f"a class id is not a label value from 1 to {MAX_LABEL}: {c!r:.80}")
        if c.get("name") is not None and not _short_text(c["name"]):
            raise _bad(name, f"the name of class {c['id']} is not a short text")
        colour = c.get("colour")
        if colour is not None and (not isinstance(colour, list) or len(colour) not in (3, 4)
                                   or not all(_number(v) and 0 <= v <= 255 for v in colour)):
            raise _bad(name, f"the colour of class {c['id']} is not 3 or 4 numbers from 0 to 255")
    ids = [c["id"] for c in classes]
    if len(set(ids)) != len(ids):
        raise _bad(name, f"its class ids {ids} repeat")


def _check_tensors(tensors: Any, fine_tuned: bool, name: str) -> None:
    if not isinstance(tensors, dict):
        raise _bad(name, "its tensor list is missing")
    total = 0
    for entry, spec in tensors.items():
        if entry.startswith("prototypes/"):
            dtypes = (PROTOTYPE_DTYPES.get(entry[len("prototypes/"):]),)
        elif entry.startswith("encoder/") and fine_tuned and len(entry) <= MAX_NAME:
            dtypes = ENCODER_DTYPES
        elif entry.startswith(ADAPTED) and len(entry) <= MAX_NAME:  # Fine-tune's adapter / decoder weights
            dtypes = ("float32",)
        else:
            raise _bad(name, f"it lists an unexpected entry {entry[:MAX_NAME]!r}")
        if not isinstance(spec, dict) or spec.get("dtype") not in dtypes or not isinstance(spec.get("shape"), list) \
                or len(spec["shape"]) > 8 or not all(_int(n, 0, MAX_FILE_BYTES) for n in spec["shape"]):
            raise _bad(name, f"the entry {entry} has no valid dtype and shape")
        total += int(np.prod(spec["shape"], dtype=object)) * np.dtype(spec["dtype"]).itemsize
        if total > MAX_FILE_BYTES:
            raise _bad(name, f"its arrays would take more than {MAX_FILE_BYTES >> 30} GiB")
    missing = [k for k in PROTOTYPE_ENTRIES if f"prototypes/{k}" not in tensors]
    if missing:
        raise _bad(name, f"the entry prototypes/{missing[0]} is missing")
    if fine_tuned and not any(k.startswith("encoder/") for k in tensors):
        raise _bad(name, "it says its encoder was fine-tuned but holds no encoder weights")


def check_arrays(meta: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> None:
    """The prototype arrays fit the classes and the encoder: (P, C) finite unit vectors, owners 0..K with
    exactly one global prototype each, counts as the metadata says; finite encoder weights."""
    vectors, owner, is_global = (arrays[f"prototypes/{k}"] for k in PROTOTYPE_ENTRIES)
    n_classes = len(meta["classes"])
    if vectors.ndim != 2 or vectors.shape[1] != meta["encoder"]["feature_dim"] or len(vectors) < n_classes + 1 \
            or owner.shape != (len(vectors),) or is_global.shape != (len(vectors),):
        raise _bad(name, "its prototype arrays do not fit its classes or encoder")
    if not np.isfinite(vectors).all():
        raise _bad(name, "its prototype vectors hold NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if np.abs(norms - 1.0).max() > 1e-3:
        raise _bad(name, "its prototype vectors are not unit length")
    if owner.min() < 0 or owner.max() > n_classes:
        raise _bad(name, f"a prototype belongs to no class (owners must be 0 to {n_classes})")
    if not np.array_equal(np.bincount(owner[is_global], minlength=n_classes + 1), np.ones(n_classes + 1)):
        raise _bad(name, "background and every class need exactly one global prototype")
    declared = meta.get("prototypes", {}).get("counts", {})
    actual = np.bincount(owner, minlength=n_classes + 1)
    if declared and {str(k): int(v) for k, v in enumerate(actual)} != declared:
        raise _bad(name, "its prototype counts do not match its arrays")
    for entry, array in arrays.items():
        if entry.startswith(("encoder/", *ADAPTED)) and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise _bad(name, f"its encoder weights {entry[len('encoder/'):]} hold NaN or infinite values")


__all__ = ["FORMAT_NAME", "SCHEMA_VERSION", "SUFFIX", "check_metadata", "read_bank", "write_bank"]
