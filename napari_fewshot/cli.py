"""`napari-fewshot`: the engine without a window.

    napari-fewshot segment IMAGE --support SUPPORT --out OUT [--encoder NAME] [--device D]
                           [--fine-tune-steps N] [--heatmaps DIR]
    napari-fewshot evaluate busi DIR --shots K [--episodes E] [--fine-tune-steps N] [--seed S] --json OUT
    napari-fewshot evaluate volumes DIR --protocol within|across [--support-slices K] --json OUT
    napari-fewshot demo [--headless] [--out DIR]

User errors (missing file, shape mismatch, empty support, unknown encoder, unavailable weights)
exit with status 2 and one line on stderr; no traceback unless --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import FewShotError


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--encoder", default="efficientnet-lite0",
                       help="efficientnet-lite0 (default), efficientnet-lite2 or vgg16-panet")
    group.add_argument("--weights", default=None, help="local weights file (vgg16-panet offline)")
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    group.add_argument("--input-size", type=int, default=256,
                       help="longer side of a slice as the encoder sees it, in pixels (default 256)")
    group.add_argument("--prototypes", choices=("local", "global"), default="local",
                       help="local: every support feature cell is a prototype (default); global: PANet, one per class")
    group.add_argument("--scale", type=float, default=20.0, help="cosine similarity scale (default 20)")
    group.add_argument("--fine-tune-steps", type=int, default=0, help="fine-tune the encoder on the support first")
    group.add_argument("--learning-rate", type=float, default=1e-4, help="fine-tuning learning rate")


def _params(args):
    from .core import FineTuneParams, SegmentationParams

    params = SegmentationParams(encoder=args.encoder, device=args.device, input_size=args.input_size,
                                prototype_mode=args.prototypes, scale=args.scale,
                                seed=getattr(args, "seed", 0))
    tune = FineTuneParams(steps=args.fine_tune_steps, learning_rate=args.learning_rate) if args.fine_tune_steps else None
    return params, tune


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-fewshot", description="Few-shot segmentation of medical scans.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment a scan from a painted support label map")
    seg.add_argument("image", help="image: NIfTI, DICOM folder, TIFF, PNG/JPG or NPY")
    seg.add_argument("--support", required=True, help="label map of the image's shape; painted slices are support")
    seg.add_argument("--out", required=True, help="mask file; format from the extension (.nii.gz .tif .png .npy)")
    seg.add_argument("--heatmaps", default=None, help="folder for one similarity map per class")
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_model_options(seg)

    ev = commands.add_parser("evaluate", help="score the method on a labelled data set")
    which = ev.add_subparsers(dest="dataset", required=True)
    busi = which.add_parser("busi", help="breast ultrasound folder laid out like BUSI")
    busi.add_argument("dir")
    busi.add_argument("--shots", type=int, required=True)
    busi.add_argument("--episodes", type=int, default=50)
    busi.add_argument("--seed", type=int, default=0)
    busi.add_argument("--json", required=True)
    _add_model_options(busi)
    vol = which.add_parser("volumes", help="folder of image_*.nii.gz + label_*.nii.gz")
    vol.add_argument("dir")
    vol.add_argument("--protocol", choices=("within", "across"), required=True)
    vol.add_argument("--support-slices", type=int, default=3)
    vol.add_argument("--support-case", default=None, help="across: the case id used as support (default: first)")
    vol.add_argument("--classes", default=None,
                     help='classes to score and their names, e.g. "1:liver,2:kidney_right" (default: all labels)')
    vol.add_argument("--seed", type=int, default=0)
    vol.add_argument("--json", required=True)
    _add_model_options(vol)

    demo = commands.add_parser("demo", help="segment the shipped CT sample and report Dice")
    demo.add_argument("--headless", action="store_true", help="do not open napari even if a display exists")
    demo.add_argument("--out", default="demo_out", help="folder for masks and heatmaps (default demo_out)")
    _add_model_options(demo)
    return parser


def _parse_classes(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    try:
        pairs = [item.split(":", 1) for item in text.split(",")]
        return {int(k): (v or f"class {k}").strip() for k, v in pairs}
    except ValueError as err:
        raise FewShotError(f'--classes must look like "1:liver,2:spleen", not {text!r}.') from err


def _cmd_segment(args) -> None:
    import numpy as np

    from .core import run
    from .core.segmenter import FewShotSegmenter
    from .io import read_labels, read_volume, write_image, write_mask

    params, tune = _params(args)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FewShotError(f"{out} already exists; choose another name or pass --overwrite.")
    volume = read_volume(args.image)
    support = read_labels(args.support, like=volume)
    started = time.perf_counter()
    segmenter = FewShotSegmenter(params, weights_path=args.weights)
    segmenter.set_image(volume.data)
    support_set = segmenter.parse_support(support)
    print(f"image {args.image}: {volume.data.shape}, spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
    print(f"support: classes {support_set.class_ids} painted on {len(support_set.slice_indices)} slice(s) "
          f"{support_set.slice_indices[:10]}{' ...' if len(support_set.slice_indices) > 10 else ''}")
    print(f"encoder {segmenter.encoder.name} on {segmenter.device}")
    if tune is not None:
        losses = run(segmenter.fine_tune(support, tune))
        print(f"fine-tuned {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "fine-tune: no step")
    result = run(segmenter.segment(support, similarity=args.heatmaps is not None))
    written = write_mask(out, result.labels, like=volume, overwrite=args.overwrite)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    for c in result.class_ids:
        count = int((np.asarray(result.labels) == c).sum())
        print(f"  label {c}: {count} voxels, {count * voxel_ml:.1f} mL")
    if args.heatmaps:
        folder = Path(args.heatmaps)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".nii.gz" if volume.format in ("nifti", "dicom") else ".tif"
        for c, per_slice in result.similarity.items():
            heat = np.zeros(np.shape(result.labels), np.float32)
            for i, plane in per_slice.items():
                heat[i] = plane
            written += write_image(folder / f"heatmap_class_{c}{suffix}", heat, like=volume, overwrite=args.overwrite)
    print(f"segmented {len(result.segmented_slices)} slices in {time.perf_counter() - started:.1f} s; wrote "
          + ", ".join(str(p) for p in written[:5]) + (" ..." if len(written) > 5 else ""))


def _write_json(path: str, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1))


def _cmd_evaluate(args) -> None:
    params, tune = _params(args)
    if args.dataset == "busi":
        from .evaluation.busi import evaluate_busi

        report = evaluate_busi(args.dir, args.shots, args.episodes, args.seed, params, tune, log=print)
    else:
        from .evaluation.volumes import evaluate_volumes

        report = evaluate_volumes(args.dir, args.protocol, args.support_slices, params, tune,
                                  _parse_classes(args.classes), args.support_case, log=print)
    _write_json(args.json, report)
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in report["dice_per_class"].items())
    print(f"mean Dice {report['dice_mean']:.3f} ({per_class}) in {report['seconds']:.0f} s -> {args.json}")


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _cmd_demo(args) -> None:
    from .demo import run_demo

    params, _ = _params(args)
    outcome = run_demo(args.out, params)
    if args.headless or not _has_display():
        if not args.headless:
            print("no display found: results written, napari not opened")
        return
    from .plugin.demo_viewer import show_demo

    show_demo(outcome)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"segment": _cmd_segment, "evaluate": _cmd_evaluate, "demo": _cmd_demo}
    try:
        handlers[args.command](args)
    except FewShotError as err:
        print(f"napari-fewshot: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-fewshot: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so in one line, traceback on request
        if args.debug:
            raise
        print(f"napari-fewshot: unexpected error ({type(err).__name__}: {err}); rerun with --debug for details",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
