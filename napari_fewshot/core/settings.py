"""What a setting is: the field metadata of the params dataclasses (core/config.py), and params read and
changed by setting name.

A params dataclass declares each field with :func:`setting`; :func:`settings_of` reads the fields back as
:class:`Setting` records named by dotted path ("input_size", "refine.margin": a field whose type is itself a
params dataclass is a group of settings). The CLI builds its options from these records, a form can build
its widgets from them, and the prototype-bank reader checks a bank's params against them.
"""

from __future__ import annotations

import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints


def setting(default: Any = MISSING, *, label: str, help: str, factory: Any = MISSING,
            affects_features: bool = True, machine_local: bool = False, flag: str | None = None,
            metavar: str | None = None, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A dataclass field with the metadata that says what the setting is.

    label, help:       a few words and one line for people (form labels, tooltips, CLI help).
    factory:           default_factory instead of `default` (a group of settings, e.g. RefineParams).
    affects_features:  False when the setting only changes how features are used (cached features stay valid);
                       on a group, it holds for every setting of the group.
    machine_local:     it describes this machine (device, folders, memory): not carried by a prototype bank.
    flag, metavar:     the command-line option, where the setting is one.
    minimum, maximum:  the inclusive range a form offers and a bank file may hold; every value in it passes
                       the dataclass's __post_init__ (which may allow more).
    """
    metadata = {"label": label, "help": help, "affects_features": affects_features, "machine_local": machine_local,
                "flag": flag, "metavar": metavar, "minimum": minimum, "maximum": maximum}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def params_from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of the params dataclass `cls` from a dict (nested dicts for groups; unknown keys dropped),
    validated by its __post_init__."""
    hints = get_type_hints(cls)
    known = {}
    for f in fields(cls):
        if f.name in values:
            value = values[f.name]
            group = _is_group(hints[f.name]) and isinstance(value, dict)
            known[f.name] = params_from_dict(hints[f.name], value) if group else value
    return cls(**known)


def _is_group(hint: Any) -> bool:
    return isinstance(hint, type) and is_dataclass(hint)


@dataclass(frozen=True)
class Setting:
    """One setting of a params dataclass, as its field's metadata (see :func:`setting`) describes it.

    name:      dotted path from the params class ("input_size", "refine.margin").
    kind:      the value type: bool, int, float or str; optional: None is allowed too.
    choices:   the allowed values of a Literal setting (e.g. modality), else ().
    The other fields are :func:`setting`'s arguments.
    """

    name: str
    label: str
    help: str
    default: Any
    kind: type
    optional: bool
    choices: tuple
    affects_features: bool
    machine_local: bool
    flag: str | None
    metavar: str | None
    minimum: float | None
    maximum: float | None


def settings_of(cls: type) -> tuple[Setting, ...]:
    """Every setting of the params dataclass `cls` (SegmentationParams, FineTuneParams, AdaptParams), in field
    order, a group's settings in its place (named "group.field")."""
    return tuple(_walk(cls, "", True, False))


def _walk(cls: type, prefix: str, affects_features: bool, machine_local: bool):
    hints = get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        affects = affects_features and meta.get("affects_features", True)
        local = machine_local or meta.get("machine_local", False)
        if _is_group(hints[f.name]):
            yield from _walk(hints[f.name], f"{prefix}{f.name}.", affects, local)
            continue
        kind, optional, choices = _kind(hints[f.name])
        yield Setting(f"{prefix}{f.name}", meta.get("label", f.name), meta.get("help", ""), f.default, kind, optional,
                      choices, affects, local, meta.get("flag"), meta.get("metavar"), meta.get("minimum"),
                      meta.get("maximum"))


def _kind(hint: Any) -> tuple[type, bool, tuple]:
    """(value type, None allowed, Literal choices) of a field's type hint."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional, hint = len(args) < len(get_args(hint)), args[0]
    if get_origin(hint) is Literal:
        return str, optional, get_args(hint)
    return hint, optional, ()


def setting_named(cls: type, name: str) -> Setting:
    """The setting called `name` (dotted path) of `cls`; KeyError when there is none."""
    found = [s for s in settings_of(cls) if s.name == name]
    if not found:
        raise KeyError(name)
    return found[0]


def setting_values(params: Any) -> dict[str, Any]:
    """Dotted setting name -> value of a params instance (groups flattened: {"refine.margin": 0.1, ...})."""
    values = {}
    for s in settings_of(type(params)):
        value = params
        for part in s.name.split("."):
            value = getattr(value, part)
        values[s.name] = value
    return values


def with_settings(params: Any, changes: Mapping[str, Any]) -> Any:
    """A copy of a params instance with the settings in `changes` (dotted name -> value) replaced, validated
    like a new one; FewShotError (one sentence) for a name that is no setting."""
    from ..errors import FewShotError

    known = {s.name for s in settings_of(type(params))}
    unknown = [name for name in changes if name not in known]
    if unknown:
        raise FewShotError(f"{type(params).__name__} has no setting {unknown[0]!r} "
                           f"(it has {', '.join(sorted(known))}).")
    values = asdict(params)
    for name, value in changes.items():
        *groups, last = name.split(".")
        target = values
        for group in groups:
            target = target[group]
        target[last] = value
    return params_from_dict(type(params), values)
