"""`napari-fewshot evaluate`: score the method on a labelled data set (BUSI-like folder or NIfTI volumes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_options import adapt_params, add_model_options, parse_classes, segmentation_params
from .core.config import SegmentationParams
from .core.settings import setting_named
from .errors import FewShotError


def _add_interactive_options(parser: argparse.ArgumentParser, rounds: int) -> None:
    group = parser.add_argument_group("interactive protocol")
    group.add_argument("--rounds", type=int, default=None,
                       help=f"corrections, one slice or image each, re-segmenting after each (default {rounds})")
    group.add_argument("--pick", default=None,
                       help="which one is corrected: suggested (the tool's ranking, default), worst (oracle: most "
                            "wrong pixels) or uniform (even spacing / a fixed seeded order)")


def _add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=setting_named(SegmentationParams, "seed").default,
                        help="seed of the episodes, the corrections and the model's random draws")


def add_evaluate_parser(commands) -> None:
    """The `evaluate busi` and `evaluate volumes` subcommands, under the CLI's subparsers `commands`."""
    ev = commands.add_parser("evaluate", help="score the method on a labelled data set")
    which = ev.add_subparsers(dest="dataset", required=True)
    busi = which.add_parser("busi", help="breast ultrasound folder laid out like BUSI")
    busi.add_argument("dir")
    busi.add_argument("--protocol", choices=("episodes", "interactive"), default="episodes",
                      help="episodes (default): K painted images segment one query per episode; interactive: "
                           "a clinician corrects one image per round (see --rounds, --pick)")
    busi.add_argument("--shots", type=int, default=None,
                      help="painted images (episodes: required; interactive: default 5)")
    busi.add_argument("--episodes", type=int, default=None, help="episodes protocol: queries (default 50)")
    busi.add_argument("--images", type=int, default=None,
                      help="interactive: size of the seeded pool of images (default 25, --shots of them painted)")
    _add_interactive_options(busi, 5)
    busi.add_argument("--correct", choices=("paint", "box"), default=None,
                      help="interactive: how an image is corrected: paint (its reference mask, default) or box (a "
                           "drag around the lesion, +10%% and +-5 px seeded jitter, through LiteMedSAM as the box "
                           "tool does; the first --shots images are boxed too; default 20 images, 3 shots, "
                           "10 rounds; evaluation/interactive_images.py)")
    busi.add_argument("--accept-above", type=float, default=None, metavar="DICE",
                      help="--correct box: a proposed image whose prediction already reaches this Dice is signed as "
                           "it is (Accept slice, one click, not a drag) instead of boxed")
    _add_seed(busi)
    busi.add_argument("--json", required=True)
    add_model_options(busi)
    vol = which.add_parser("volumes", help="folder of image_*.nii.gz + label_*.nii.gz")
    vol.add_argument("dir")
    vol.add_argument("--protocol", choices=("within", "across", "interactive"), required=True)
    vol.add_argument("--support-slices", type=int, default=None,
                     help="within: painted slices per class (default 3); interactive: slices painted before the "
                          "first correction (default 1)")
    _add_interactive_options(vol, 10)
    vol.add_argument("--support-case", default=None, help="across: the case id used as support (default: first)")
    vol.add_argument("--classes", default=None,
                     help='classes to score and their names, e.g. "1:liver,2:kidney_right" (default: all labels)')
    _add_seed(vol)
    vol.add_argument("--json", required=True)
    add_model_options(vol)


def _only_with(args, flags: dict[str, str], protocol: str) -> None:
    """One sentence when a flag of another protocol is given (flags: attribute -> option)."""
    given = [option for attr, option in flags.items() if getattr(args, attr) is not None]
    if given:
        raise FewShotError(f"{' and '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to "
                           f"--protocol {protocol}, not {args.protocol}.")


def cmd_evaluate(args) -> None:
    params, tune = segmentation_params(args)
    if getattr(args, "accept_above", None) is not None and getattr(args, "correct", None) != "box":
        raise FewShotError("--accept-above only applies to --protocol interactive --correct box.")
    if args.dataset == "busi" and args.correct == "box":
        _evaluate_busi_boxes(args, params, tune)
        return
    if getattr(args, "correct", None) is not None and args.protocol != "interactive":
        raise FewShotError(f"--correct only applies to --protocol interactive, not {args.protocol}.")
    interactive = args.protocol == "interactive"
    if not interactive:
        _only_with(args, {"rounds": "--rounds", "pick": "--pick"}, "interactive")
    options = {"rounds": args.rounds if args.rounds is not None else (5 if args.dataset == "busi" else 10),
               "pick": args.pick or "suggested"} if interactive else {}
    if args.dataset == "busi":
        from .evaluation.busi import evaluate_busi

        if interactive:
            _only_with(args, {"episodes": "--episodes"}, "episodes")
            options["images"] = 25 if args.images is None else args.images
        else:
            _only_with(args, {"images": "--images"}, "interactive")
            if args.shots is None:
                raise FewShotError("evaluate busi --protocol episodes needs --shots K (painted images per episode).")
        shots = args.shots if args.shots is not None else 5
        report = evaluate_busi(args.dir, shots, 50 if args.episodes is None else args.episodes, args.seed, params,
                               tune, adapt_params(args), log=print, protocol=args.protocol, **options)
    else:
        from .evaluation.volumes import evaluate_volumes

        k = args.support_slices if args.support_slices is not None else (1 if interactive else 3)
        report = evaluate_volumes(args.dir, args.protocol, k, params, tune, parse_classes(args.classes),
                                  args.support_case, adapt_params(args), log=print, **options)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in report["dice_per_class"].items())
    if interactive:
        curve = " ".join(f"{d:.3f}" for d in report["dice_per_round"])
        print(f"Dice per round ({report['config']['pick']}): {curve}; NoC@0.90 {report['noc_90']} "
              f"(per case mean {report['noc_90_mean']:.2f})")
    print(f"mean Dice {report['dice_mean']:.3f} ({per_class}) in {report['seconds']:.0f} s -> {args.json}")
    if "hit_rate" in report:  # evaluate busi: finding the lesion and drawing it, told apart
        on_hits = "none" if report["dice_on_hits"] is None else f"{report['dice_on_hits']:.3f}"
        print(f"lesion found in {report['hit_rate']:.0%} of the queries, Dice on those {on_hits}, "
              f"{report['false_positive_px']:.0f} px drawn on average where it was missed")


def _evaluate_busi_boxes(args, params, tune) -> None:
    """`evaluate busi --protocol interactive --correct box`: the simulated box-correction loop."""
    from .evaluation.interactive_images import evaluate_busi_boxes

    if args.protocol != "interactive":
        raise FewShotError(f"--correct box only applies to --protocol interactive, not {args.protocol}.")
    _only_with(args, {"episodes": "--episodes"}, "episodes")
    if tune is not None and tune.steps > 0:
        raise FewShotError("--fine-tune-steps is not available with --protocol interactive.")
    report = evaluate_busi_boxes(args.dir, 10 if args.rounds is None else args.rounds, args.pick or "suggested",
                                 3 if args.shots is None else args.shots, 20 if args.images is None else args.images,
                                 args.seed, params, adapt_params(args), log=print, accept_above=args.accept_above)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    curve = " ".join(f"{d}:{v:.3f}" for d, v in report["dice_per_drag"].items())
    accepted = "" if report["accepts"] is None else f" and {report['accepts']} accepted"
    print(f"mean Dice per drag ({report['config']['pick']}): {curve}; NoC@0.85 {report['noc_85']} drags{accepted}; "
          f"every image boxed: {report['box_every_image']:.3f} in {report['seconds']:.0f} s -> {args.json}")
