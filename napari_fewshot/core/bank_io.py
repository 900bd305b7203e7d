"""A PrototypeBank as the plain metadata and arrays of its file (core/bank_format.py), and back.

    arrays = bank_arrays(bank); meta = bank_metadata(bank)         # what PrototypeBank.save writes
    bank = PrototypeBank(*bank_fields(meta, arrays, name))         # what PrototypeBank.load reads

bank_fields checks what the fields mean (a registered encoder, the params it names, this version's
intensity normalisation); bank_format checks their types and ranges. A bank of schema 2 or older has
no priors (core/bank_priors.py): it loads with none and segments as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import FewShotError
from . import bank_format
from .bank_format import FORMAT_NAME, SCHEMA_VERSION
from .bank_priors import ClassPrior
from .config import SegmentationParams
from .encoders import available_encoders, encoder_spec
from .normalization import CT_WINDOW_HU, IMAGENET
from .prototypes import PrototypeSet


def normalization_settings(params: SegmentationParams) -> dict[str, Any]:
    """How pixels become encoder input with `params` (stored in a bank, checked when it is loaded):
    input_mean / input_std are the encoder's own input normalisation (its registry entry's)."""
    encoder_input = encoder_spec(params.encoder).normalization
    return {"modality": params.modality, "input_size": params.input_size,
            "image_input_size": params.image_input_size, "input_mean": list(encoder_input.mean),
            "input_std": list(encoder_input.std), "ct_window_hu": list(CT_WINDOW_HU)}


# What banks written before encoders declared their input stored (never written now): every encoder's
# input was ImageNet-normalised first (LiteMedSAM undid it inside), so these keys always meant ImageNet's.
LEGACY_NORMALIZATION = {"imagenet_mean": list(IMAGENET.mean), "imagenet_std": list(IMAGENET.std)}


def bank_arrays(bank) -> dict[str, np.ndarray]:
    """Entry name -> array: the prototypes and, when fine-tuned, the encoder's weights and Fine-tune's adapter /
    decoder weights (bank.adapted)."""
    p = bank.prototypes
    arrays = {"prototypes/vectors": p.vectors.detach().cpu().float().numpy(),
              "prototypes/owner": p.owner.detach().cpu().long().numpy(),
              "prototypes/is_global": p.is_global.detach().cpu().bool().numpy()}
    for key, tensor in (bank.encoder_state or {}).items():
        t = tensor.detach().cpu()
        arrays[f"encoder/{key}"] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    arrays.update({k: np.asarray(v, np.float32) for k, v in (bank.adapted or {}).items()})
    return arrays


def bank_metadata(bank) -> dict[str, Any]:
    """The JSON document of the bank's file (bank_format's module docstring lists its fields)."""
    meta = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "package_version": bank.package_version,
        "created": bank.created,
        "encoder": {"name": bank.encoder_name, "weights_id": bank.encoder_weights_id,
                    "feature_dim": bank.feature_dim, "fine_tuned": bank.fine_tuned},
        "params": bank.params.to_dict(),
        "normalization": bank.normalization,
        "classes": [{"id": c, "name": bank.class_names[c],
                     "colour": list(bank.class_colours[c]) if c in bank.class_colours else None}
                    for c in bank.class_ids],
        "prototypes": {"total": int(len(bank.prototypes.vectors)),
                       "counts": {str(k): int(v) for k, v in bank.prototypes.counts.items()}},
        "sources": bank.sources,
    }
    if bank.priors:
        meta["priors"] = {str(c): prior.to_dict() for c, prior in sorted(bank.priors.items())}
    return meta


def bank_fields(meta: dict, arrays: dict[str, np.ndarray], name: str) -> tuple:
    """PrototypeBank's constructor arguments, in order, from a checked (metadata, arrays) pair
    (bank_format.read_bank); FewShotError when a field means something this version cannot use."""
    encoder = meta["encoder"]
    if encoder["name"] not in available_encoders():
        raise FewShotError(f"{name} was made with the encoder {encoder['name']!r}, which this napari-fewshot does "
                           f"not have (it has {', '.join(available_encoders())}).")
    declared = encoder_spec(encoder["name"]).feature_dim
    if declared is not None and encoder["feature_dim"] != declared:
        raise FewShotError(f"{name} is not a valid prototype bank (its prototypes have {encoder['feature_dim']} "
                           f"features but the encoder {encoder['name']} gives {declared}).")
    if meta["params"].get("encoder", encoder["name"]) != encoder["name"]:
        raise FewShotError(f"{name} is not a valid prototype bank (its params name the encoder "
                           f"{meta['params']['encoder']!r}, its encoder is {encoder['name']!r}).")
    try:
        params = SegmentationParams.from_dict(meta["params"])
    except FewShotError as err:
        raise FewShotError(f"{name} is not a valid prototype bank ({str(err).rstrip('.')}).") from err
    normalization = meta.get("normalization") or {}
    expected = normalization_settings(params) | LEGACY_NORMALIZATION
    for key in ("input_mean", "input_std", "ct_window_hu", *LEGACY_NORMALIZATION):
        if key in normalization and [round(float(v), 6) for v in normalization[key]] != \
                [round(float(v), 6) for v in expected[key]]:
            raise FewShotError(f"{name} was made with another intensity normalisation ({key} "
                               f"{normalization[key]} instead of {expected[key]}); rebuild it with this version.")
    vectors, owner, is_global = (torch.from_numpy(arrays[f"prototypes/{k}"].copy())
                                 for k in bank_format.PROTOTYPE_ENTRIES)
    classes = meta["classes"]
    class_ids = [int(c["id"]) for c in classes]
    counts = {k: int((owner == k).sum()) for k in range(len(class_ids) + 1)}
    state = None
    if encoder["fine_tuned"]:
        state = {k[len("encoder/"):]: torch.from_numpy(a.copy()) for k, a in arrays.items() if k.startswith("encoder/")}
    priors = {int(c): ClassPrior.from_dict(p) for c, p in meta.get("priors", {}).items() if int(c) in class_ids}
    adapted = {k: a.copy() for k, a in arrays.items() if k.startswith(bank_format.ADAPTED)}
    return (PrototypeSet(vectors.float(), owner.long(), is_global.bool(), class_ids, counts), params,
            encoder["name"], encoder["weights_id"], encoder["feature_dim"],
            {c["id"]: c.get("name") or f"label {c['id']}" for c in classes},
            {c["id"]: c.get("colour") for c in classes}, state, normalization,
            list(meta.get("sources", [])), meta.get("created", ""), meta.get("package_version", ""),
            meta["schema_version"], priors or None, adapted or None)
