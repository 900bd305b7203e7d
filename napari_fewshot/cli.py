"""`napari-fewshot`: the engine without a window.

    napari-fewshot segment IMAGE --support SUPPORT --out OUT [--encoder NAME] [--device D]
                           [--fine-tune [WHAT] | --fine-tune-steps N] [--adapt-steps N] [--heatmaps DIR] [--explain DIR]
                           [--scribble [--background-label N]]
    napari-fewshot segment IMAGE --bank BANK --out OUT [--device D]
    napari-fewshot bank IMAGE --support SUPPORT [IMAGE --support SUPPORT ...] --out BANK
                        [--pair IMAGE SUPPORT ...] [--encoder NAME] [--fine-tune-steps N] [--classes 1:liver,...]
    napari-fewshot batch BANK INPUT_DIR OUTPUT_DIR [--scheduler ADDRESS] [--workers N] [--device D] [--overwrite]
    napari-fewshot evaluate busi DIR --shots K [--episodes E] [--fine-tune-steps N] [--seed S] --json OUT
    napari-fewshot evaluate busi DIR --protocol interactive [--rounds N] [--pick suggested|worst|uniform] --json OUT
    napari-fewshot evaluate volumes DIR --protocol within|across|interactive [--support-slices K]
                           [--rounds N] [--pick suggested|worst|uniform] --json OUT
    napari-fewshot demo [--headless] [--out DIR]

User errors (missing file, shape mismatch, empty support, unknown encoder, unavailable weights, an
output that cannot be written: checked before any compute) exit with status 2 and one line on stderr;
no traceback unless --debug. `batch` exits with status 3 when some scans failed (the others are
written; see results.csv), Ctrl-C with 130 and SIGTERM with 143 after one line (workers closed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import __version__
from .cli_evaluate import add_evaluate_parser, cmd_evaluate
from .cli_options import (adapt_params, add_model_options, add_support_options, parse_classes,
                          segmentation_params)
from .core.config import SegmentationParams
from .core.settings import setting_named
from .errors import FewShotError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-fewshot", description="Few-shot segmentation of medical scans.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment a scan from a painted support label map")
    seg.add_argument("image", help="image: NIfTI, DICOM folder, TIFF, PNG/JPG or NPY")
    seg.add_argument("--support", default=None,
                     help="label map of the image's shape; painted slices are support (this or --bank)")
    seg.add_argument("--bank", default=None,
                     help="prototype bank (.fewshot, from `napari-fewshot bank`) to segment with, no support needed; "
                          "the bank's encoder and settings are used")
    from .io.formats import extensions_help

    seg.add_argument("--out", required=True, help=f"mask file; format from the extension ({extensions_help('mask')})")
    seg.add_argument("--heatmaps", default=None, help="folder for one similarity map per class")
    seg.add_argument("--explain", default=None,
                     help="folder for the provenance maps: per voxel, the support slice whose painting explains "
                          "its prediction (provenance_slice, -1 for none) and the similarity to it")
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_support_options(seg)
    add_model_options(seg)
    seg.set_defaults(encoder=None)  # None: the config's default encoder, or the bank's encoder with --bank

    bank = commands.add_parser(
        "bank", help="save the prototypes of painted scans as a prototype bank (.fewshot)",
        usage="%(prog)s IMAGE --support SUPPORT [IMAGE --support SUPPORT ...] --out BANK [options]",
        description="Pool prototypes from one or more painted scans into one bank file. Pairs: the k-th IMAGE goes "
                    "with the k-th --support; --pair IMAGE SUPPORT adds a pair explicitly.")
    bank.add_argument("image", nargs="?", default=None, help="image: NIfTI, DICOM folder, TIFF, PNG/JPG or NPY")
    bank.add_argument("--support", action="append", default=[], help="label map of the IMAGE before it")
    bank.add_argument("--pair", nargs=2, action="append", default=[], metavar=("IMAGE", "SUPPORT"),
                      help="one more image with its support (repeatable)")
    bank.add_argument("--out", required=True, help="bank file to write (.fewshot)")
    bank.add_argument("--classes", default=None,
                      help='classes to keep and their names, e.g. "1:liver,4:spleen" (default: every painted label)')
    bank.add_argument("--overwrite", action="store_true", help="replace an existing bank file")
    add_support_options(bank)
    add_model_options(bank)

    batch = commands.add_parser("batch", help="segment every scan of a folder with a bank on dask.distributed")
    batch.add_argument("bank", help="prototype bank (.fewshot)")
    batch.add_argument("input_dir", help="folder of scans (NIfTI files, DICOM folders, TIFF, NPY, PNG), searched recursively")
    batch.add_argument("output_dir", help="folder for the masks (same relative paths) and results.csv")
    batch.add_argument("--scheduler", default=None,
                       help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786 (default: an embedded LocalCluster)")
    batch.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    device = setting_named(SegmentationParams, "device")
    batch.add_argument("--device", default=device.default,
                       help=f"torch device on the workers: {device.help} (default {device.default})")
    batch.add_argument("--torch-threads", type=int, default=None,
                       help="torch threads per worker (default with a LocalCluster: CPU cores / workers)")
    batch.add_argument("--overwrite", action="store_true",
                       help="replace the masks this batch wrote with another bank (never a mask edited since, "
                            "never a file it did not write)")
    batch.add_argument("--dicom-seg", action="store_true",
                       help="write each DICOM scan's mask as a DICOM SEG (NAME.dcm, referring to the scan's images) "
                            "instead of NIfTI")
    add_evaluate_parser(commands)

    demo = commands.add_parser("demo", help="segment the shipped CT sample and report Dice")
    demo.add_argument("--headless", action="store_true", help="do not open napari even if a display exists")
    demo.add_argument("--out", default="demo_out", help="folder for masks and heatmaps (default demo_out)")
    add_model_options(demo)
    return parser


def _cmd_segment(args) -> None:
    from .pipeline import PaintedSupport, ProgressLine, segment_file
    from .core import run
    from .core.segmenter import FewShotSegmenter

    if (args.support is None) == (args.bank is None):
        raise FewShotError("Give either --support (a painted label map) or --bank (a prototype bank), not "
                           + ("both." if args.support else "neither."))
    _check_segment_outputs(args)
    if args.bank is not None:
        _segment_with_bank(args)
        return
    if args.encoder is None:
        args.encoder = setting_named(SegmentationParams, "encoder").default
    params, tune = segmentation_params(args)
    adapt = adapt_params(args)
    started = time.perf_counter()
    segmenter = FewShotSegmenter(params, weights_path=args.weights)

    def before(segmenter, support, volume) -> None:
        """Report what was painted, then adapt / fine-tune (before the scan's features are computed)."""
        support_set = segmenter.parse_support(support)
        print(f"image {args.image}: {volume.data.shape}, spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
        print(f"support: classes {support_set.class_ids} painted on {len(support_set.slice_indices)} slice(s) "
              f"{support_set.slice_indices[:10]}{' ...' if len(support_set.slice_indices) > 10 else ''}")
        print(f"encoder {segmenter.encoder.name} on {segmenter.device}")
        if adapt is not None:
            losses = run(segmenter.adapt(adapt))
            print(f"adapted to this scan: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
                  if losses else "adapt: no usable superpixel")
        if tune is not None:
            losses = run(segmenter.fine_tune(support, tune))
            if tune.method != "encoder":  # what the Fine-tune button runs (core/finetune.py Adaptation)
                print(f"{segmenter.adaptation.summary} in {segmenter.adaptation.seconds:.1f} s")
            else:
                print(f"fine-tuned {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses
                      else "fine-tune: no step")

    outcome = segment_file(PaintedSupport(args.support, before), segmenter, args.image, args.out,
                           overwrite=args.overwrite, heatmaps=args.heatmaps, explain=args.explain,
                           progress=ProgressLine())
    for c, ml in outcome["volumes_ml"].items():
        print(f"  label {c}: {round(ml / outcome['voxel_ml'])} voxels, {ml:.1f} mL")
    _print_written(outcome, started)


def _print_written(outcome: dict, started: float) -> None:
    print(f"segmented {outcome['segmented_slices']} slices in {time.perf_counter() - started:.1f} s; wrote "
          + ", ".join(outcome["written"][:5]) + (" ..." if len(outcome["written"]) > 5 else ""))


def _check_segment_outputs(args) -> None:
    """--out (and the --heatmaps folder) can be written: checked before anything is read or computed
    (a PNG set's folder, the heatmap files and the labels a format holds once the scan is read, still
    before compute: pipeline.segment_file)."""
    from .io.targets import check_target, check_writable

    inputs = [p for p in (args.image, args.support, args.bank) if p is not None]
    check_target(args.out, 1, overwrite=args.overwrite, inputs=inputs)
    for option, folder in (("--heatmaps", args.heatmaps), ("--explain", args.explain)):
        if folder:
            folder = Path(folder)
            if folder.exists() and not folder.is_dir():
                raise FewShotError(f"{option} {folder} is a file; give a folder for the maps.")
            check_writable(folder / "heatmap")


def _segment_with_bank(args) -> None:
    from .pipeline import ProgressLine, segment_file
    from .core.bank import PrototypeBank
    from .core.encoders import AUTO

    if args.fine_tune_steps or args.adapt_steps or getattr(args, "fine_tune", None):
        raise FewShotError("--fine-tune(-steps) and --adapt-steps need a painted support; fine-tune when building "
                           "the bank instead.")
    if getattr(args, "scribble", False) or getattr(args, "background_label", None) is not None:
        raise FewShotError("--scribble and --background-label describe a painted support; a bank needs neither.")
    bank = PrototypeBank.load(args.bank)
    if args.encoder not in (None, AUTO, bank.encoder_name):
        raise FewShotError(f"The bank {args.bank} was made with the encoder {bank.encoder_name}; it cannot run "
                           f"with {args.encoder} (leave out --encoder or rebuild the bank).")
    started = time.perf_counter()
    segmenter = bank.make_segmenter(args.device)
    print(bank.describe())
    print(f"encoder {segmenter.encoder.name} on {segmenter.device}")
    outcome = segment_file(bank, segmenter, args.image, args.out, overwrite=args.overwrite, heatmaps=args.heatmaps,
                           explain=args.explain, progress=ProgressLine())
    for c, ml in outcome["volumes_ml"].items():
        print(f"  label {c} ({bank.class_names[c]}): {round(ml / outcome['voxel_ml'])} voxels, {ml:.1f} mL")
    _print_written(outcome, started)


def _bank_pairs(args, extra: list[str]) -> list[tuple[str, str]]:
    """(image, support) pairs of `bank`: the k-th image (positional) with the k-th --support, then --pair."""
    images = ([args.image] if args.image is not None else []) + list(extra)
    if len(images) != len(args.support):
        raise FewShotError(f"{len(images)} image(s) but {len(args.support)} --support; give each IMAGE its "
                           "--support SUPPORT (or use --pair IMAGE SUPPORT).")
    pairs = list(zip(images, args.support)) + [tuple(p) for p in args.pair]
    if not pairs:
        raise FewShotError("Give at least one IMAGE --support SUPPORT (or --pair IMAGE SUPPORT).")
    return pairs


def _cmd_bank(args, extra: list[str]) -> None:
    import numpy as np

    from .core.bank import PrototypeBank
    from .io import read_labels, read_volume

    from .io.targets import check_target

    pairs = _bank_pairs(args, extra)
    out = Path(args.out)
    if not out.suffix:
        out = out.with_suffix(".fewshot")
    check_target(out, kind=None, overwrite=args.overwrite, inputs=[p for pair in pairs for p in pair])
    params, tune = segmentation_params(args)
    if tune is not None and tune.method != "encoder" and len(pairs) > 1:
        raise FewShotError("Fine-tune's adapter is trained on one scan's signed slices; build a bank from one "
                           "--pair with it, or use --fine-tune encoder (or --fine-tune-steps N) with several.")
    if args.adapt_steps:
        raise FewShotError("--adapt-steps adapts to the scan being segmented; use it with `segment`, not `bank`.")
    classes = parse_classes(args.classes)
    started = time.perf_counter()
    loaded, sources = [], []
    for image_path, support_path in pairs:
        volume = read_volume(image_path)
        support = read_labels(support_path, like=volume)
        if classes is not None:
            support = np.where(np.isin(support, list(classes)), support, 0).astype(support.dtype)
        loaded.append((volume.data, support))
        sources.append({"image": str(image_path), "support": str(support_path),
                        "spacing": [round(s, 4) for s in volume.spacing]})
        print(f"image {image_path}: {volume.data.shape}, support {support_path}")
    from .core.segmenter import FewShotSegmenter

    segmenter = FewShotSegmenter(params, weights_path=args.weights)
    bank = PrototypeBank.build(loaded, params, class_names=classes, fine_tune=tune, segmenter=segmenter,
                               sources=sources, log=print)
    path = bank.save(out)
    print(f"{bank.describe()}; built in {time.perf_counter() - started:.1f} s -> {path}")


def _cmd_batch(args) -> int:
    from .batch import run_batch
    from .batch_signals import Terminated

    try:
        report = run_batch(args.bank, args.input_dir, args.output_dir, scheduler=args.scheduler, workers=args.workers,
                           device=args.device, torch_threads=args.torch_threads, overwrite=args.overwrite,
                           dicom_seg=args.dicom_seg,
                           log=lambda line: print(line, flush=True))
    except Terminated as err:  # SIGTERM: like Ctrl-C, with the exit status a shell gives a job ended by it
        print(f"napari-fewshot: terminated{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return Terminated.exit_status
    if report.failed:
        print(f"napari-fewshot: {len(report.failed)} of {report.total} scan(s) failed ("
              f"{', '.join(report.failed[:3])}{' ...' if len(report.failed) > 3 else ''}); see {report.csv}",
              file=sys.stderr)
        return 3
    return 0


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _cmd_demo(args) -> None:
    from .demo import run_demo

    params, _ = segmentation_params(args)
    outcome = run_demo(args.out, params)
    if args.headless or not _has_display():
        if not args.headless:
            print("no display found: results written, napari not opened")
        return
    from .plugin.demo_viewer import show_demo

    show_demo(outcome)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bank":  # `bank IMAGE --support S IMAGE --support S`: the later images
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "bank" and any(e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(e for e in extra if e.startswith('-'))}")
    handlers = {"segment": _cmd_segment, "evaluate": cmd_evaluate, "demo": _cmd_demo, "batch": _cmd_batch,
                "bank": lambda a: _cmd_bank(a, extra)}
    try:
        return handlers[args.command](args) or 0
    except FewShotError as err:
        print(f"napari-fewshot: error: {in_cli_words(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"napari-fewshot: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so in one line, traceback on request
        if args.debug:
            raise
        print(f"napari-fewshot: unexpected error ({type(err).__name__}: {err}); rerun with --debug for details",
              file=sys.stderr)
        return 1


# Messages written for the Python API that name its arguments, and what the command line says instead.
_CLI_WORDS = (
    ("pass overwrite=True to replace it", "pass --overwrite to replace it"),
    ("pick one with read_dicom_series(folder, series_uid=...)", "give each series a folder of its own"),
    ("use scribble mode", "use scribble mode (--scribble, background painted with --background-label)"),
    ("for a folder of 2D images use list_images", "a folder of 2D images is not one scan"),
)


def in_cli_words(message: str) -> str:
    """`message` with Python API wording (``overwrite=True``, ``series_uid=...``) replaced by the CLI's flags."""
    for api, cli in _CLI_WORDS:
        message = message.replace(api, cli)
    return message

if __name__ == "__main__":
    sys.exit(main())
