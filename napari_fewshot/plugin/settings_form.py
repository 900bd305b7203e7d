"""The dock widget's settings as magicgui widgets built from the fields of the core's parameter dataclasses.

Each row names a field of :class:`~napari_fewshot.core.SegmentationParams` (or
:class:`~napari_fewshot.core.FineTuneParams`); its widget follows the field's type (a Literal: a list; bool: a
check box; ``bool | None``: automatic / always / never), starts at the field's default and explains it with
the field's ``help`` metadata (else its paragraph of the class docstring). Only the label, the range and the
wording of choices are chosen here. :meth:`SettingsForm.params` gives the dataclass back, so a setting added
to the core needs one row here to appear in the panel. A row's field may be a dotted path ("group.field")
into a nested dataclass.
"""

from __future__ import annotations

import re
import textwrap
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from types import UnionType
from typing import Any

from magicgui.widgets import ComboBox, Container, create_widget
from magicgui.widgets.bases import ValueWidget

from ..core.config import FineTuneParams, SegmentationParams

DEVICES = ("auto", "cpu", "cuda", "mps")
SUPPORT_MODES = (("painted slices are complete", "dense"), ("scribbles (background painted)", "scribble"))
MODALITIES = (("guess from the values", "auto"), ("CT (HU window)", "ct"), ("MR", "mr"), ("ultrasound", "us"),
              ("already 0 to 1", "none"))
AUTOMATIC_ALWAYS_NEVER = (("automatic", None), ("always", True), ("never", False))  # a `bool | None` field


@dataclass(frozen=True)
class Row:
    """One control: the dataclass field it sets, its label, and what the field's type cannot say.

    options: magicgui options (choices, min, max, step, widget_type); "value" is the shown start
             for a field whose default is None (used only when another setting asks for it).
    tooltip: overrides the field's help where the panel needs other words than the API.
    """

    path: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    tooltip: str | None = None


def _main_rows(encoders: list[str]) -> tuple[Row, ...]:
    return (
        Row("encoder", "Encoder", {"choices": tuple(encoders)},
            "The network that turns each slice into features (another one recomputes them)."),
        Row("device", "Device", {"choices": DEVICES}),
        Row("support_mode", "Support", {"choices": SUPPORT_MODES},
            "Complete: on a painted slice every unpainted pixel is background (paint whole organs).\n"
            "Scribbles: paint background with its own label; unpainted pixels are left to the model\n"
            "(needed for a single 2D image)."),
        Row("background_label", "Background label", {"value": 1, "min": 1, "max": 65535},
            "The label value you paint background with, in scribble mode."),
        Row("refine.enabled", "Refine (LiteMedSAM)", {},
            "Each predicted organ or lesion becomes a box for LiteMedSAM, which redraws its outline.\n"
            "Automatic: where it was measured to help at an acceptable cost\n"
            "(2D images and image sets; a volume only on a GPU)."),
    )


MORE_ROWS = (
    Row("modality", "Intensities", {"choices": MODALITIES}),
    Row("input_size", "Volume input (px)", {"min": 32, "max": 2048, "step": 32}),
    Row("image_input_size", "2D image input (px)", {"min": 32, "max": 2048, "step": 32}),
    Row("scale", "Similarity scale", {"min": 1.0, "max": 100.0, "step": 1.0}),
    Row("smooth_slices", "Smoothing (slices)", {"min": 0.0, "max": 10.0, "step": 0.1}),
    Row("postprocess", "3D clean-up"),
)
FINE_TUNE_ROWS = (
    Row("steps", "Steps", {"min": 1, "max": 10_000}),
    Row("learning_rate", "Learning rate", {"min": 1e-6, "max": 1.0, "step": 1e-5}),
)


class SettingsForm:
    """The settings widgets in three magicgui Containers for the panel to place: ``main`` (encoder, device,
    support mode, background label, refine), ``more`` (the finer segmentation settings) and ``fine_tune``."""

    def __init__(self, encoders: list[str]):
        self.widgets: dict[str, ValueWidget] = {}  # row path -> its widget
        main_rows = _main_rows(encoders)
        self.main = self._container(SegmentationParams, main_rows)
        self.more = self._container(SegmentationParams, MORE_ROWS)
        self.fine_tune = self._container(FineTuneParams, FINE_TUNE_ROWS)
        self._segmentation = [row.path for row in (*main_rows, *MORE_ROWS)]
        self["support_mode"].changed.connect(self._show_background_label)
        self._show_background_label()

    def __getitem__(self, path: str) -> ValueWidget:
        return self.widgets[path]

    def params(self) -> SegmentationParams:
        """SegmentationParams from the controls (core defaults for the fields without one); the background
        label only in scribble mode."""
        values = {path: self[path].value for path in self._segmentation}
        if values["support_mode"] != "scribble":
            values["background_label"] = None
        return build(SegmentationParams, values)

    def fine_tune_params(self) -> FineTuneParams:
        return build(FineTuneParams, {row.path: self[row.path].value for row in FINE_TUNE_ROWS})

    def _container(self, owner: type, rows: tuple[Row, ...]) -> Container:
        container = Container()
        container.margins = (0, 0, 0, 0)  # the panel's group box has its own
        for row in rows:
            self.widgets[row.path] = field_widget(owner, row)
            container.append(self.widgets[row.path])  # appended after creation: magicgui aligns the labels
        return container

    def _show_background_label(self, *_) -> None:
        self["background_label"].visible = self["support_mode"].value == "scribble"


def field_widget(owner: type, row: Row) -> ValueWidget:
    """A magicgui widget for the field ``row.path`` of the dataclass ``owner``: by its type, at its default."""
    host, the_field, annotation = _field(owner, row.path)
    options = dict(row.options)
    default = the_field.default_factory() if the_field.default is MISSING else the_field.default
    value = options.pop("value", default)
    widget_type = options.pop("widget_type", None)
    base, optional = _without_none(annotation)
    if base is bool and optional:  # create_widget would add an empty choice for the value None
        widget = ComboBox(value=value, choices=options.pop("choices", AUTOMATIC_ALWAYS_NEVER), label=row.label,
                          name=row.path.replace(".", "_"), **options)
    else:
        widget = create_widget(value=value, annotation=base, label=row.label, name=row.path.replace(".", "_"),
                               widget_type=widget_type, options=options)
    widget.tooltip = row.tooltip or field_help(host, the_field)
    return widget


def field_help(owner: type, the_field: Field) -> str:
    """The field's ``help`` metadata, else its paragraph of ``owner``'s docstring, wrapped for a tooltip."""
    text = the_field.metadata.get("help") or _docstring_paragraph(owner.__doc__ or "", the_field.name)
    text = " ".join(text.split())
    return textwrap.fill(text[:1].upper() + text[1:], 80)


def build(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` with ``values`` (keys are field names, or dotted paths into nested dataclasses) over its defaults."""
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[path] = value
    hints = typing.get_type_hints(cls)
    for head, inner in nested.items():
        flat[head] = build(_without_none(hints[head])[0], inner)
    return cls(**flat)


def _field(owner: type, path: str) -> tuple[type, Field, Any]:
    """(the dataclass holding the field, the field, its resolved type) for a dotted ``path`` from ``owner``."""
    head, _, rest = path.partition(".")
    the_field = next(f for f in fields(owner) if f.name == head)
    annotation = typing.get_type_hints(owner)[head]
    if rest:
        inner = _without_none(annotation)[0]
        assert is_dataclass(inner), f"{owner.__name__}.{head} is not a dataclass"
        return _field(inner, rest)
    return owner, the_field, annotation


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed): ``int | None`` -> (int, True)."""
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(others) == 1:
            return others[0], len(others) < len(typing.get_args(annotation))
    return annotation, False


def _docstring_paragraph(doc: str, name: str) -> str:
    """The text after ``name:`` in a docstring that lists fields as ``name: text`` with indented continuations."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(\s*)([\w, ]+):\s+(.*)", line)
        if match and name in [n.strip() for n in match.group(2).split(",")]:
            indent, text = len(match.group(1)), [match.group(3)]
            for more in lines[i + 1:]:
                if not more.strip() or len(more) - len(more.lstrip()) <= indent:
                    break
                text.append(more.strip())
            return " ".join(text)
    return ""
