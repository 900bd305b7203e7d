"""Prototype banks: what segmentation needs from a painted support, in one file, applied anywhere.

A bank holds the prototypes (global and local, per class) pooled from one or more painted scans,
the class names and colours, the encoder's name and weights signature, the fine-tuned encoder
weights when the encoder was fine-tuned, and the segmentation / normalisation settings. Applied to
a scan with no support at all, it segments that scan the way the scans it was built from were
painted (cross-patient segmentation, the literature's `across` protocol).

    from napari_fewshot.core.bank import PrototypeBank

    bank = PrototypeBank.build([(image_a, support_a), (image_b, support_b)], SegmentationParams(),
                               class_names={1: "liver"})
    bank.save("liver.fewshot")                     # one versioned zip, no pickle
    bank = PrototypeBank.load("liver.fewshot")     # FewShotError when corrupt / newer / not a bank
    result = bank.segment_volume(volume_data)      # (S, H, W) labels with the bank's class ids

In the napari widget (the current segmenter, its image and the painted support layer):

    bank = PrototypeBank.from_segmenter(segmenter, support, class_names=..., class_colours=...)
    bank.save(path)                                            # "Save prototypes..."
    bank = PrototypeBank.load(path)                            # "Load prototypes..."
    segmenter = bank.make_segmenter(device)                    # or bank.prepare(existing_segmenter)
    segmenter.set_image(image); result = run(bank.segment(segmenter))

The file format is core/bank_format.py (plain dicts and arrays; a bank file is untrusted input).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generator, Iterable, Sequence

import numpy as np
import torch

from ..errors import FewShotError
from . import bank_format, bank_io
from .bank_format import FORMAT_NAME, SCHEMA_VERSION, SUFFIX
from .config import SegmentationParams, machine_local_fields
from .training_config import FineTuneParams
from .bank_io import normalization_settings
from .bank_priors import ClassPrior, combine, measure, support_levels, with_levels
from .encoders import AUTO, encoder_spec
from .progress import Progress, run
from .prototypes import PrototypeSet, build_prototypes
from .settings import setting_values, with_settings

@dataclass
class PrototypeBank:
    """Prototypes plus everything needed to apply them to another scan.

    prototypes:    PrototypeSet on the CPU (vectors (P, C) normalised, owner (P,), is_global (P,), class_ids).
    params:        the SegmentationParams the prototypes were pooled with (encoder, input size, modality,
                   scale ...); `device` in it is only the device they were made on.
    encoder_name, encoder_weights_id: the encoder signature; another encoder is refused.
    feature_dim:   C.
    class_names:   class id -> name; class_colours: class id -> RGBA in [0, 1], for the classes the caller
                   gave a colour (the plugin picks the others).
    encoder_state: fine-tuned encoder weights (state_dict of CPU tensors), or None (the original weights).
    normalization: see :func:`normalization_settings`.
    sources:       provenance: one dict per scan the prototypes came from (image, shape, support slices ...).
    priors:        class id -> core/bank_priors.ClassPrior (where each class was on its support: along the
                   body, in the plane, its area), applied on a scan with no paint; None for a bank
                   written before priors (schema 2 or older), which segments as it did.
    adapted:       what Fine-tune's cheap methods adapted (core/finetune.Adaptation.arrays: "adapter/<key>",
                   "decoder/<key>" float32 arrays), or None; the prototypes were pooled through that adapter.
    """

    prototypes: PrototypeSet
    params: SegmentationParams
    encoder_name: str
    encoder_weights_id: str
    feature_dim: int
    class_names: dict[int, str] = field(default_factory=dict)
    class_colours: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    encoder_state: dict[str, torch.Tensor] | None = None
    normalization: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    package_version: str = ""
    schema_version: int = SCHEMA_VERSION
    priors: dict[int, ClassPrior] | None = None
    adapted: dict[str, np.ndarray] | None = None
    _token: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._token = uuid.uuid4().hex
        if self.params.encoder == AUTO:  # a bank names the encoder its prototypes came from
            self.params = replace(self.params, encoder=self.encoder_name)
        ids = list(self.prototypes.class_ids)
        self.class_names = {int(c): str(self.class_names.get(c) or f"label {c}") for c in ids}
        self.class_colours = {int(c): _colour(self.class_colours[c]) for c in ids
                              if self.class_colours.get(c) is not None}
        if not self.normalization:
            self.normalization = normalization_settings(self.params)
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.package_version:
            from .. import __version__

            self.package_version = __version__

    # -- what it is -----------------------------------------------------------------------
    @property
    def class_ids(self) -> list[int]:
        return list(self.prototypes.class_ids)

    @property
    def fine_tuned(self) -> bool:
        return self.encoder_state is not None

    @property
    def signature(self) -> str:
        """Short hash of the prototypes, encoder signature, fine-tuned weights and settings (a cache key)."""
        digest = hashlib.sha256(json.dumps(self._metadata(), sort_keys=True, default=str).encode())
        for name, array in self._arrays().items():
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        """One line for logs: classes, prototype counts, encoder."""
        classes = ", ".join(f"{c} {self.class_names[c]}" for c in self.class_ids)
        return (f"bank of {len(self.prototypes.vectors)} prototypes for {classes} "
                f"({len(self.sources)} scan(s)), encoder {self.encoder_name}"
                f"{' fine-tuned' if self.fine_tuned else ''}, input size {self.params.input_size}")

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_segmenter(cls, segmenter, support, class_names: dict[int, str] | None = None,
                       class_colours: dict[int, Sequence[float]] | None = None,
                       source: dict[str, Any] | None = None) -> "PrototypeBank":
        """Bank of the image currently set in `segmenter` and its painted `support` (the widget's Save).

        Uses the segmenter's cached features and its current (possibly fine-tuned) encoder weights.
        """
        support_set = segmenter.parse_support(support)
        run(segmenter.compute_features(support_set.slice_indices))
        prototypes = segmenter.prototypes(support_set)
        info = {"shape": list(np.shape(support)) if isinstance(support, np.ndarray) else len(support),
                "support_slices": support_set.slice_indices, "class_ids": support_set.class_ids}
        info.update(source or {})
        where = measure(segmenter.cache.stack, support_set.targets, support_set.class_ids)
        ids = support_set.slice_indices
        levels = support_levels(segmenter.slice_features(ids), [support_set.targets[i] for i in ids], ids, prototypes)
        return cls._from(segmenter, prototypes, class_names, class_colours, [info], [where], levels)

    @classmethod
    def build(cls, pairs: Iterable[tuple[Any, Any]], params: SegmentationParams | None = None,
              class_names: dict[int, str] | None = None, class_colours: dict[int, Sequence[float]] | None = None,
              fine_tune: FineTuneParams | None = None, segmenter=None,
              sources: Sequence[dict[str, Any]] | None = None, log=lambda _: None) -> "PrototypeBank":
        """Bank from one or more (image, support) pairs, e.g. support slices painted on patients A and B.

        image: (S, H, W) array or list of 2D images; support: its label map (painted slices are support).
        The global prototype of a class is the mean over every support slice of every pair that shows it
        (PANet's averaging over shots); local prototypes are pooled from all of them. A class may be
        painted in some pairs only. With `fine_tune`, the encoder is fine-tuned `fine_tune.steps` steps on
        each pair in turn before pooling, and the tuned weights go into the bank.
        """
        from .segmenter import FewShotSegmenter

        pairs = list(pairs)
        if not pairs:
            raise FewShotError("A prototype bank needs at least one image with its support.")
        own = segmenter is None
        segmenter = segmenter or FewShotSegmenter(params or SegmentationParams())
        if fine_tune is not None and fine_tune.steps > 0:
            for n, (image, support) in enumerate(pairs, start=1):
                segmenter.set_image(image)
                losses = run(segmenter.fine_tune(support, fine_tune))
                if losses:
                    log(f"fine-tuned on pair {n}: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        features, targets, infos, class_sets, where = [], [], [], [], []
        for n, (image, support) in enumerate(pairs):
            segmenter.set_image(image)
            support_set = segmenter.parse_support(support)
            run(segmenter.compute_features(support_set.slice_indices))
            class_sets.append(support_set)
            where.append(measure(segmenter.cache.stack, support_set.targets, support_set.class_ids))
            features.extend(segmenter.slice_features(support_set.slice_indices))
            info = {"shape": list(np.shape(image)), "support_slices": support_set.slice_indices,
                    "class_ids": support_set.class_ids}
            info.update(sources[n] if sources and n < len(sources) else {})
            infos.append(info)
        class_ids = sorted({c for s in class_sets for c in s.class_ids})
        for support_set in class_sets:  # class index k of this pair -> index in the union
            remap = np.array([0] + [class_ids.index(c) + 1 for c in support_set.class_ids], np.int64)
            for i in support_set.slice_indices:
                target = support_set.targets[i].astype(np.int64)
                targets.append(torch.from_numpy(np.where(target < 0, -1, remap[np.clip(target, 0, None)])))
        p = segmenter.params
        cap, seed, how = p.local_cap_for(segmenter.cache.stack)
        prototypes = build_prototypes(features, targets, class_ids, p.prototype_mode, p.local_grid,
                                      p.local_coverage, cap, seed, how)
        levels = support_levels(features, [t.numpy() for t in targets], range(len(features)), prototypes)
        if own:
            segmenter.release_image()  # free the features
        return cls._from(segmenter, prototypes, class_names, class_colours, infos, where, levels)

    @classmethod
    def _from(cls, segmenter, prototypes, class_names, class_colours, sources, where, levels) -> "PrototypeBank":
        encoder = segmenter.encoder
        state = None
        if segmenter.encoder_changed:  # the cheap Fine-tune methods leave the encoder alone: saved as `adapted`
            state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
        return cls(prototypes.to(torch.device("cpu")), SegmentationParams.from_dict(segmenter.params.to_dict()),
                   encoder.name, encoder.weights_id, int(encoder.feature_dim), dict(class_names or {}),
                   dict(class_colours or {}), state, sources=list(sources),
                   priors=with_levels(combine(where), levels) or None,
                   adapted=segmenter.adaptation.arrays() or None)

    # -- applying ---------------------------------------------------------------------------
    def check_encoder(self, encoder) -> None:
        """Refuse (FewShotError) an encoder other than the one the prototypes were pooled with (name, weights, C)."""
        if encoder.name != self.encoder_name:
            raise FewShotError(f"This prototype bank was made with the encoder {self.encoder_name}; it cannot run "
                               f"with {encoder.name} (rebuild the bank with that encoder, or use {self.encoder_name}).")
        if encoder.weights_id != self.encoder_weights_id:
            raise FewShotError(f"This prototype bank was made with {self.encoder_name} weights "
                               f"{self.encoder_weights_id!r} but this machine has {encoder.weights_id!r}; "
                               "rebuild the bank here.")
        grid = getattr(encoder, "grid", "native")
        if grid != self.params.feature_grid:
            raise FewShotError(f"This prototype bank was pooled on the {self.params.feature_grid!r} feature grid but this "
                               f"encoder gives the {grid!r} one; segment with the bank's own settings.")
        if int(encoder.feature_dim) != self.feature_dim:
            raise FewShotError(f"This prototype bank's prototypes have {self.feature_dim} features but the encoder "
                               f"{encoder.name} gives {encoder.feature_dim}, so they were not made with it.")

    def require_weights(self) -> None:
        """FewShotError when the bank's encoder weights are not installed here (never downloads them)."""
        missing = encoder_spec(self.encoder_name).weights_available()
        if missing:
            raise FewShotError(f"This prototype bank needs the encoder {self.encoder_name}, whose weights are "
                               f"not installed: {missing}")

    def segmentation_params(self, device: str | None = None, **machine: Any) -> SegmentationParams:
        """The bank's SegmentationParams for this machine: `device` (default "auto") and the other
        machine-local settings (cache folder, memory budget: this machine's defaults unless given in
        `machine`, by setting name) are not taken from the machine the bank was made on (core/config.py
        machine_local_fields)."""
        defaults = setting_values(SegmentationParams())
        local = {name: defaults[name] for name in machine_local_fields()}
        local.update({k: v for k, v in machine.items() if v is not None})
        local["device"] = device or "auto"
        return with_settings(self.params, local)

    def make_segmenter(self, device: str | None = None, encoder=None):
        """A FewShotSegmenter set up like the bank's (encoder checked, fine-tuned weights loaded).

        encoder: an already built encoder to use (checked); None builds the bank's encoder, which must
        be installed here (see :meth:`require_weights`).
        """
        from .segmenter import FewShotSegmenter

        if encoder is None:
            self.require_weights()
        segmenter = FewShotSegmenter(self.segmentation_params(device), encoder=encoder)
        return self.prepare(segmenter)

    def prepare(self, segmenter):
        """Make `segmenter`'s encoder weights the bank's: check the encoder, then load the bank's fine-tuned
        weights, or undo the segmenter's own fine-tuning when the bank was made with the original weights
        (features are recomputed). Returns the segmenter."""
        self.check_encoder(segmenter.encoder)
        if self.encoder_state is not None:
            segmenter.load_encoder_state(self.encoder_state, tag=self._token)
        elif segmenter.encoder_changed:
            segmenter.reset_weights()
        if self.adapted:
            segmenter.adaptation.load_arrays(segmenter, self.adapted, tag=self._token)
        elif segmenter.adaptation.changed:
            segmenter.adaptation.reset(segmenter)
        return segmenter

    def is_prepared(self, segmenter) -> bool:
        """Whether `segmenter`'s encoder weights are the bank's (nothing to load or undo) and its grid is the
        bank's (else :meth:`prepare` refuses the encoder)."""
        if segmenter.params.feature_grid != self.params.feature_grid:
            return False
        adapted = segmenter.adaptation.tag == self._token if self.adapted else not segmenter.adaptation.changed
        if self.encoder_state is not None:
            return segmenter.weights_tag == self._token and adapted
        return not segmenter.encoder_changed and adapted

    def segment(self, segmenter, indices: Sequence[int] | None = None, similarity: bool = False,
                ) -> Generator[Progress, None, Any]:
        """Segment the image set in `segmenter` with the bank's prototypes (all slices by default), finished
        like a segmentation from paint (FewShotSegmenter.segment_with: clean-up, heatmaps with `similarity`,
        uncertainty ranking), after the bank's priors (core/bank_priors.py: each class likelier where it was
        in the plane, removed far from there and, on the whole scan, far along the body).

        Calls :meth:`prepare` first unless the segmenter's weights are already the bank's. Yields Progress;
        returns a SegmentationResult whose labels carry the bank's class ids.
        """
        if not self.is_prepared(segmenter):
            self.prepare(segmenter)
        return (yield from segmenter.segment_with(self.prototypes.to(segmenter.device), indices, similarity,
                                                  priors=self.priors))

    def segment_volume(self, image, device: str | None = None, segmenter=None, report=None):
        """Segment one image (array or list of 2D images) with no support; returns a SegmentationResult."""
        segmenter = segmenter or self.make_segmenter(device)
        segmenter.set_image(image)
        try:
            return run(self.segment(segmenter), report)
        finally:
            segmenter.release_image()

    # -- the file (core/bank_io.py) -----------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        return bank_io.bank_arrays(self)

    def _metadata(self) -> dict[str, Any]:
        return bank_io.bank_metadata(self)

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the bank to `path` (``.fewshot`` appended when it has no suffix), atomically; returns the path.
        FewShotError when it exists and not `overwrite` (never replaced, even by a racing writer)."""
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(SUFFIX)
        return bank_format.write_bank(path, self._metadata(), self._arrays(), overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrototypeBank":
        """Read a bank written by :meth:`save`. FewShotError (one sentence) when the file is missing, corrupt,
        not a bank, invalid in any field, or written by a newer napari-fewshot (higher schema version)."""
        meta, arrays = bank_format.read_bank(path)
        return cls._from_parts(meta, arrays, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "the prototype bank") -> "PrototypeBank":
        """:meth:`load` from the file's bytes (e.g. sent to a worker)."""
        meta, arrays = bank_format.read_bank(data, name)
        return cls._from_parts(meta, arrays, name)

    @classmethod
    def _from_parts(cls, meta: dict, arrays: dict[str, np.ndarray], name: str) -> "PrototypeBank":
        """A bank from a checked (metadata, arrays) pair (bank_format.read_bank); see bank_io.bank_fields."""
        return cls(*bank_io.bank_fields(meta, arrays, name))


def _colour(value) -> tuple[float, float, float, float]:
    """RGB or RGBA, in [0, 1] or 0-255, as RGBA in [0, 1]."""
    values = [float(v) for v in value]
    if len(values) not in (3, 4) or not all(np.isfinite(values)):
        raise FewShotError(f"A class colour must be RGB or RGBA numbers, not {value!r}.")
    scale = 255.0 if max(values) > 1.0 else 1.0  # 0-255 colours
    values = [v / scale for v in values] + ([] if len(values) == 4 else [1.0])
    return tuple(min(max(v, 0.0), 1.0) for v in values)


__all__ = ["FORMAT_NAME", "PrototypeBank", "SCHEMA_VERSION", "SUFFIX", "normalization_settings"]
