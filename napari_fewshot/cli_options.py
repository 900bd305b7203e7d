"""The command line's model and support options, built from the settings of core/config.py (flag, default
and help come from each setting's field metadata; the encoders and their descriptions from the encoder
registry), and the params they make."""

from __future__ import annotations

import argparse

from .core.config import SegmentationParams
from .core.training_config import FINE_TUNE_METHODS, AdaptParams, FineTuneParams
from .core.settings import Setting, setting_named, settings_of, with_settings
from .errors import FewShotError

SUPPORT_SETTINGS = ("background_label",)  # in the "support" group, with --scribble


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(setting: Setting, text: str | None = None) -> str:
    """The setting's help (or `text`) with its default appended unless it says it; % escaped for argparse."""
    text = text or setting.help
    if setting.default is not None and "default" not in text:
        text += f" (default {_default_text(setting.default)})"
    return text.replace("%", "%%")


def add_setting(group, setting: Setting, help: str | None = None) -> None:
    """The option of one setting: its flag, type (a yes/no flag pair for a bool), choices, default and help;
    the parsed value lands in args under the setting's dotted name."""
    options = {"dest": setting.name, "default": setting.default, "help": _help(setting, help)}
    if setting.kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif setting.choices:
        options["choices"] = setting.choices
    else:
        options["type"] = setting.kind
    if setting.metavar:
        options["metavar"] = setting.metavar
    group.add_argument(setting.flag, **options)


def encoder_help() -> str:
    """The encoder choices with their descriptions, the default first, for --encoder."""
    from .core.encoders import AUTO, AUTO_FOR_IMAGES, AUTO_FOR_VOLUMES, ENCODERS

    described = {AUTO: f"{AUTO_FOR_VOLUMES} for volumes, {AUTO_FOR_IMAGES} for 2D images and image sets"}
    described |= {name: spec.description for name, spec in ENCODERS.items()}
    default = setting_named(SegmentationParams, "encoder").default
    names = [default] + [name for name in described if name != default]
    return "; ".join(f"{name}{' (default)' if name == default else ''}: {described[name]}" for name in names)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--encoder, --weights, the segmentation settings that have a flag, fine-tuning and adaptation."""
    group = parser.add_argument_group("model")
    for setting in settings_of(SegmentationParams):
        if not setting.flag or setting.name in SUPPORT_SETTINGS:
            continue
        add_setting(group, setting, encoder_help() if setting.name == "encoder" else None)
        if setting.name == "encoder":
            group.add_argument("--weights", default=None, help="local weights file (vgg16-panet offline)")
    group.add_argument("--fine-tune-steps", type=int, default=0,
                       help=f"fine-tune the encoder on the support first (e.g. {FineTuneParams().steps} steps)")
    add_setting(group, setting_named(FineTuneParams, "learning_rate"))
    group.add_argument("--fine-tune", nargs="?", const=FineTuneParams().method, default=None,
                       choices=FINE_TUNE_METHODS, metavar="WHAT",
                       help="what the Fine-tune button runs, with its default budget, on the signed slices first "
                            f"(WHAT: {', '.join(FINE_TUNE_METHODS)}; default {FineTuneParams().method}, which on a "
                            "volume adapts nothing: the decoder lowered CHAOS-T2 Dice there)")
    group.add_argument("--adapt-steps", type=int, default=0,
                       help="'Adapt to this scan' first: self-supervised superpixel steps on the scan being "
                            f"segmented, no labels needed (e.g. {AdaptParams().steps}; ~0.5 s per step on a "
                            "2-core CPU)")


def add_support_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("support")
    group.add_argument("--scribble", action="store_true",
                       help="scribble mode: background is painted with its own label (--background-label) and "
                            "unpainted pixels are left to the model, also on painted slices (default: a painted "
                            "slice is complete, its unpainted pixels are background)")
    for name in SUPPORT_SETTINGS:
        add_setting(group, setting_named(SegmentationParams, name))


def _support_mode(args) -> dict:
    """SegmentationParams' support_mode / background_label from --scribble / --background-label."""
    scribble = getattr(args, "scribble", False)
    label = getattr(args, "background_label", None)
    if label is not None and not scribble:
        raise FewShotError("--background-label only applies with --scribble.")
    if not scribble:
        return {}
    if label is None:
        # No default: a guessed background label that is really an organ's would erase that organ.
        raise FewShotError("--scribble needs --background-label N, the label you painted background with.")
    return {"support_mode": "scribble", "background_label": label}


def check_range(setting: Setting, value) -> None:
    """FewShotError (one sentence, naming the flag) when an option's number is outside its setting's range."""
    low, high = setting.minimum, setting.maximum
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if (low is not None and not value >= low) or (high is not None and not value <= high):
        span = f"from {_default_text(low)} to {_default_text(high)}" if low is not None and high is not None \
            else f"at least {_default_text(low)}" if low is not None else f"at most {_default_text(high)}"
        raise FewShotError(f"{setting.flag or setting.name} must be {span}, not {_default_text(value)}.")


def segmentation_params(args) -> tuple[SegmentationParams, FineTuneParams | None]:
    """The SegmentationParams of the parsed options (config defaults for what the command has no option for),
    and FineTuneParams when --fine-tune-steps asks for fine-tuning."""
    changes = {s.name: getattr(args, s.name) for s in settings_of(SegmentationParams)
               if s.flag and s.name not in SUPPORT_SETTINGS and hasattr(args, s.name)}
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    for name, value in changes.items():
        check_range(setting_named(SegmentationParams, name), value)
    if args.fine_tune_steps:
        check_range(setting_named(FineTuneParams, "learning_rate"), args.learning_rate)
    params = with_settings(SegmentationParams(), {**changes, **_support_mode(args)})
    tune = None
    if getattr(args, "fine_tune", None) is not None and args.fine_tune_steps:
        raise FewShotError("--fine-tune-steps (the whole encoder) and --fine-tune are two ways to ask; give one.")
    if getattr(args, "fine_tune", None) is not None:
        tune = FineTuneParams(method=args.fine_tune)
    elif args.fine_tune_steps:
        tune = FineTuneParams(method="encoder", steps=args.fine_tune_steps, learning_rate=args.learning_rate)
    return params, tune


def adapt_params(args) -> AdaptParams | None:
    """AdaptParams from --adapt-steps (None when 0)."""
    seed = {"seed": args.seed} if getattr(args, "seed", None) is not None else {}
    return AdaptParams(steps=args.adapt_steps, **seed) if args.adapt_steps else None


def parse_classes(text: str | None) -> dict[int, str] | None:
    """--classes "1:liver,4:spleen" as {1: "liver", 4: "spleen"} (None when not given)."""
    if not text:
        return None
    try:
        pairs = [item.split(":", 1) for item in text.split(",")]
        return {int(k): (v or f"class {k}").strip() for k, v in pairs}
    except ValueError as err:
        raise FewShotError(f'--classes must look like "1:liver,2:spleen", not {text!r}.') from err
