"""The one-scan pipeline: read a scan, check it and its output, segment it, write the mask (read back)
and, if asked, the heatmaps. `napari-fewshot segment` (with --support or --bank), every task of `batch`
and the demo run this one function, so a scan is segmented the same way wherever it comes from.

    from napari_fewshot.pipeline import PaintedSupport, segment_file
    outcome = segment_file(PaintedSupport("painted.nii.gz"), segmenter, "scan.nii.gz", "mask.nii.gz")
    outcome = segment_file(bank, bank.make_segmenter("auto"), "scan.nii.gz", "mask.nii.gz", heatmaps="maps/")
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import FewShotError


@dataclass
class PaintedSupport:
    """Segment from paint instead of a bank: `labels` is a label-map file (read onto the scan's grid) or
    an array shaped like the scan. before(segmenter, labels, volume) runs once the scan is set and before
    its features are computed (the CLI reports, adapts and fine-tunes there)."""

    labels: Any
    before: Callable[[Any, Any], None] | None = None


class ProgressLine:
    """A text progress bar on a terminal (stderr by default) for the core's Progress reports, one line per
    stage ("features", "refined", ...), rewritten in place; nothing when the stream is not a terminal."""

    WIDTH = 30

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stage = None

    def __call__(self, p) -> None:
        if not self.enabled or p.total <= 0:
            return
        stage = (p.message.split() or ["working"])[0]
        if self._stage is not None and stage != self._stage:
            self.stream.write("\n")
        self._stage = stage
        filled = round(self.WIDTH * min(p.done, p.total) / p.total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {p.done}/{p.total} {p.message:<40}")
        if p.done >= p.total:
            self.stream.write("\n")
            self._stage = None
        self.stream.flush()


def refuse_unusable(volume, path) -> None:
    """FewShotError when a scan has nothing to segment: every pixel NaN or infinite."""
    import numpy as np

    data = volume.data
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).any():
        raise FewShotError(f"The scan {path} has no finite pixel value (every pixel is NaN or infinite), so there "
                           "is nothing to segment.")


def segment_file(source, segmenter, image_path: str | os.PathLike, out_path: str | os.PathLike,
                 overwrite: bool = False, heatmaps: str | os.PathLike | None = None,
                 heatmap_names: dict[int, str] | None = None, keep_result: bool = False,
                 explain: str | os.PathLike | None = None, progress: Callable | None = None) -> dict[str, Any]:
    """Read one scan, segment it, write the mask (read back to check it), optionally the heatmaps.

    source: a PrototypeBank (`segmenter` from ``bank.make_segmenter``) or a :class:`PaintedSupport`.
    image_path: the scan's file or folder (or a Volume already read).
    heatmaps: a folder for one similarity map per class (see :func:`write_heatmaps`).
    explain: a folder for the provenance maps (see :func:`write_provenance`), made before the scan is released.
    progress: called with each core Progress report (features, matching, LiteMedSAM refinement), e.g. a ProgressLine.
    Returns {"slices", "spacing", "voxel_ml", "volumes_ml": {class id: mL}, "seconds": {read, features,
    matching, write}, "written": [paths], "mask": the mask's file (a PNG set: its folder), "shape", "class_ids",
    "segmented_slices"} (+ "volume", "result", "support" with `keep_result`). The mask is written with the class
    names and colours of :func:`output_class_table` (inside a DICOM SEG, else ``STEM.labels.json`` beside it). Raises FewShotError on a bad scan or output; the segmenter forgets the scan after.
    """
    import numpy as np

    from .core import run
    from .core.metrics import class_volumes
    from .io import Volume, read_labels, read_volume, write_mask
    from .io.sidecar import sidecar_path
    from .io.targets import check_labels, check_target

    timings = {}
    t0 = time.perf_counter()
    volume = image_path if isinstance(image_path, Volume) else read_volume(image_path)
    refuse_unusable(volume, image_path)
    inputs = [p for p in (image_path, getattr(volume, "source", None), getattr(source, "labels", None))
              if isinstance(p, (str, os.PathLike))]
    classes = output_class_table(source)
    check_target(out_path, volume.data.shape[0], overwrite=overwrite, inputs=inputs, classes=bool(classes),
                 scan=volume)  # before any compute
    support = None
    if isinstance(source, PaintedSupport):
        support = source.labels
        if isinstance(support, (str, os.PathLike)):
            support = read_labels(support, like=volume)
    class_ids = output_classes(source, segmenter, support)
    check_labels(out_path, max(class_ids, default=0))
    for target in heatmap_targets(heatmaps, volume, class_ids, heatmap_names).values() if heatmaps is not None else ():
        check_target(target, kind="heatmap", overwrite=overwrite, inputs=inputs)
    for target in provenance_targets(explain, volume).values() if explain is not None else ():
        check_target(target, kind="heatmap", overwrite=overwrite, inputs=inputs)
    t1 = time.perf_counter()
    segmenter.set_image(volume.data)
    try:
        if support is not None and source.before is not None:
            source.before(segmenter, support, volume)
        run(segmenter.compute_features(), progress)
        t2 = time.perf_counter()
        if support is not None:
            result = run(segmenter.segment(support, similarity=heatmaps is not None), progress)
        else:
            result = run(source.segment(segmenter, similarity=heatmaps is not None), progress)
        provenance = run(provenance_maps(result)) if explain is not None else None
    finally:
        segmenter.release_image()  # free the features of this scan
    t3 = time.perf_counter()
    written = write_mask(out_path, result.labels, like=volume, overwrite=overwrite, classes=classes)
    mask_files = [p for p in written if p != sidecar_path(out_path)]
    if len(mask_files) == 1 and not np.array_equal(read_labels(mask_files[0], like=volume), result.labels):
        raise FewShotError(f"The mask {mask_files[0]} did not read back as written; check the disk.")
    if heatmaps is not None:
        written += write_heatmaps(heatmaps, result, volume, overwrite, heatmap_names)
    if provenance is not None:
        written += write_provenance(explain, provenance, volume, overwrite)
    t4 = time.perf_counter()
    volumes = class_volumes(result.labels, result.class_ids, volume.spacing)
    timings.update(read=t1 - t0, features=t2 - t1, matching=t3 - t2, write=t4 - t3)
    outcome = {"slices": int(np.shape(result.labels)[0]), "shape": list(volume.data.shape),
               "spacing": list(volume.spacing), "voxel_ml": float(np.prod(volume.spacing)) / 1000.0,
               "volumes_ml": {c: ml for c, (_, ml) in volumes.items()}, "class_ids": list(result.class_ids),
               "segmented_slices": len(result.segmented_slices),
               "seconds": timings, "written": [str(p) for p in written],
               "mask": str(mask_files[0] if len(mask_files) == 1 else mask_files[0].parent)}  # a PNG set: its folder
    if keep_result:
        outcome.update(volume=volume, result=result, support=support)
    return outcome


def write_heatmaps(folder: str | os.PathLike, result, volume, overwrite: bool = False,
                   names: dict[int, str] | None = None) -> list:
    """Write `folder`/``heatmap_classC_NAME.EXT`` (:func:`napari_fewshot.io.naming.heatmap_name`; NAME for
    classes in `names`) per class of a SegmentationResult with similarity maps, shaped and placed like the
    scan `volume`, in the heatmap format of its source (NIfTI for NIfTI/DICOM, NPY for NPY, else TIFF);
    returns the paths."""
    from .io import write_image

    Path(folder).mkdir(parents=True, exist_ok=True)
    written = []
    for c, target in heatmap_targets(folder, volume, list(result.similarity), names).items():
        written += write_image(target, result.similarity_volume(c), like=volume, overwrite=overwrite)
    return written


def heatmap_targets(folder: str | os.PathLike, volume, class_ids, names: dict[int, str] | None = None,
                    ) -> dict[int, Path]:
    """class id -> `folder`/``heatmap_classC_NAME.EXT``, EXT the heatmap format of the scan's source."""
    from .io.formats import format_for_source
    from .io.naming import heatmap_name, heatmap_prefix

    extension = format_for_source(volume.format, "heatmap").extension
    return {c: Path(folder) / heatmap_name(heatmap_prefix(), c, (names or {}).get(c), extension) for c in class_ids}


def output_class_table(source):
    """The class names and colours the mask is written with (:class:`napari_fewshot.io.class_table.ClassTable`):
    a bank's, or those kept beside a painted support's file (its ``STEM.labels.json``, or inside a DICOM
    SEG); None when nothing names the classes."""
    from .io.class_table import ClassTable
    from .io.sidecar import read_sidecar
    from .io.dicom_seg import seg_classes

    if not isinstance(source, PaintedSupport):
        return ClassTable(source.class_names, source.class_colours) or None
    if not isinstance(source.labels, (str, os.PathLike)):
        return None
    return read_sidecar(source.labels) or seg_classes(source.labels)


def provenance_maps(result):
    """Generator (yields Progress) returning {"slice": (S, H, W) float32, the support slice whose prototype
    explains each predicted voxel (-1: background, copied support, or no origin), "similarity": (S, H, W)
    float32 to that prototype} for a volume's SegmentationResult (core/provenance.py)."""
    import numpy as np

    from .core.provenance import NO_SLICE

    shape = np.shape(result.labels)
    maps = {"slice": np.full(shape, NO_SLICE, np.float32), "similarity": np.zeros(shape, np.float32)}
    predicted = [z for z in result.segmented_slices if z not in set(result.support_slices)]
    explained = yield from result.explainer.volume_maps(result.labels, predicted)
    for z, (support, similarity) in explained.items():
        maps["slice"][z], maps["similarity"][z] = support, similarity
    return maps


def provenance_targets(folder: str | os.PathLike, volume) -> dict[str, Path]:
    """map name -> `folder`/``provenance_NAME.EXT`` (io/naming.py), EXT the scan's heatmap format."""
    from .io.formats import format_for_source
    from .io.naming import PROVENANCE_MAPS, provenance_name

    extension = format_for_source(volume.format, "heatmap").extension
    return {what: Path(folder) / provenance_name(what, extension) for what in PROVENANCE_MAPS}


def write_provenance(folder: str | os.PathLike, maps: dict, volume, overwrite: bool = False) -> list:
    """Write :func:`provenance_maps` as `folder`/``provenance_slice.EXT`` and ``provenance_similarity.EXT``,
    shaped, placed and formatted like the heatmaps (:func:`write_heatmaps`); returns the paths."""
    from .io import write_image

    Path(folder).mkdir(parents=True, exist_ok=True)
    written = []
    for what, target in provenance_targets(folder, volume).items():
        written += write_image(target, maps[what], like=volume, overwrite=overwrite)
    return written


def output_classes(source, segmenter, support) -> list[int]:
    """The class ids a segmentation will label and map, known before any compute: the bank's classes, or
    the classes painted on the support (its semantics from the segmenter's params: scribble mode's
    background label is no class)."""
    if support is None:
        return [int(c) for c in source.class_ids]
    from .core.support import parse_support

    params = segmenter.params
    return [int(c) for c in parse_support(support, params.support_mode, params.background_label).class_ids]
