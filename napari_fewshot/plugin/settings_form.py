"""The dock widget's settings as magicgui widgets built from the settings of the core's parameter dataclasses.

Each row names a setting of :class:`~napari_fewshot.core.SegmentationParams` (or
:class:`~napari_fewshot.core.FineTuneParams`) by its dotted name ("input_size", "refine.enabled"); what the
setting is comes from core/settings.py (:func:`~napari_fewshot.core.settings.setting_named`): its label, its help
as the tooltip, its range, its choices, its type (a list for choices; bool: a check box; ``bool | None``:
automatic / always / never) and its default. A row holds only what is the panel's own: which container shows
the setting, the wording of choices, a step, a start value where the default is None, and a tooltip where the
panel needs other words than the API. :meth:`SettingsForm.params` gives the dataclass back, so a setting added
to the core needs one row here to appear in the panel.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, create_widget
from magicgui.widgets.bases import ValueWidget

from ..core.config import SegmentationParams
from ..core.training_config import FINE_TUNE_METHODS, FineTuneParams
from ..core.settings import Setting, setting_named, with_settings

DEVICES = ("auto", "cpu", "cuda", "mps")  # config.py's device is any torch device string; these are offered
AUTOMATIC_ALWAYS_NEVER = (("automatic", None), ("always", True), ("never", False))  # a `bool | None` setting


@dataclass(frozen=True)
class Row:
    """One control: the setting it sets (dotted name) and what the panel says or offers differently.

    options: magicgui options: "step"; "choices" for a setting without Literal choices (encoder, device);
             "min"/"max" only to narrow the core's range for the panel; "value", the shown start of a setting
             whose default is None (used only when another setting asks for it).
    words:   the panel's wording of a setting's choices, value -> text (a choice without one shows its value).
    tooltip: replaces the setting's help where the panel needs other words than the API.
    methods: for a Fine-tune setting, the methods it applies to (the row is hidden for the others).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    words: dict[Any, str] = field(default_factory=dict)
    tooltip: str | None = None
    methods: tuple[str, ...] = ()  # a Fine-tune row: shown only for these FineTuneParams.method values (all: empty)


def _main_rows(encoders: list[str]) -> tuple[Row, ...]:
    return (
        Row("encoder", {"choices": tuple(encoders)},
            tooltip="The network that turns each slice into features (another one recomputes them)."),
        Row("device", {"choices": DEVICES}),
        Row("support_mode",
            words={"dense": "painted slices are complete", "scribble": "scribbles (background painted)"},
            tooltip="Complete: on a painted slice every unpainted pixel is background (paint whole organs).\n"
                    "Scribbles: paint background with its own label; unpainted pixels are left to the model\n"
                    "(needed for a single 2D image)."),
        Row("background_label", {"value": 1, "min": 1, "max": 65535}),  # the core sets no range for a label value
        Row("refine.enabled",
            tooltip="Each predicted organ or lesion becomes a box for LiteMedSAM, which redraws its outline.\n"
                    "Automatic: on (measured to help on volumes and 2D images); a volume shows its\n"
                    "coarse result first, and the refined slices replace it as they arrive."),
    )


MORE_ROWS = (
    Row("modality", words={"auto": "guess from the values", "ct": "CT (HU window)", "mr": "MR", "us": "ultrasound",
                           "none": "already 0 to 1"}),
    Row("input_size", {"step": 32}),
    Row("image_input_size", {"step": 32}),
    Row("scale", {"step": 1.0}),
    Row("smooth_slices", {"step": 0.1}),
    Row("support_reach", words={"nearest": "the painted slices next to it", "all": "every painted slice"},
        tooltip="Volumes: which painted slices each slice is matched against. Next to it: for each organ the\n"
                "nearest painted slice above and below (anatomy changes along the body; a correction then\n"
                "re-matches only the slices between its neighbours). Every painted slice: as earlier releases did."),
    Row("postprocess"),
    Row("postprocess_grow"),
    Row("postprocess_detach", {"step": 0.5},
        tooltip="Beyond the painted slices, a slice ends the organ when the object found there is more than\n"
                "this many times its part that continues the previous slice (a larger neighbour took over).\n"
                "0: off, e.g. for an organ that widens quickly away from the painted slices."),
    Row("refine.select",
        tooltip="2D images: LiteMedSAM draws many candidate outlines and the most distinct one is kept\n"
                "(BUSI 5-shot 0.48 -> 0.62). On organ slices saved as images it can pick another organ:\n"
                "untick it there."),
)
_DECODER = ("decoder", "adapter+decoder")
FINE_TUNE_ROWS = (
    Row("method", {"choices": FINE_TUNE_METHODS},  # decoder (default), adapter+decoder, adapter, encoder
        words={"decoder": "LiteMedSAM decoder (fast)", "adapter": "feature adapter",
               "adapter+decoder": "feature adapter + decoder", "encoder": "whole encoder (minutes)",
               "calibrate": "class offsets (seconds)"},
        tooltip="What Fine-tune adapts to the signed slices or images. LiteMedSAM decoder: a few of the weights\n"
                "that draw its outlines, trained on cached decoder outputs (no encoder pass; times in BENCHMARKS.md).\n"
                "Whole encoder: every encoder weight, with forward and backward passes (minutes).\n"
                "Class offsets: one offset per class on the prototype scores, chosen by predicting each signed\n"
                "slice from the others (needs 2 signed slices showing a class; with one it does nothing)."),
    Row("decoder_tuned", {"choices": ("bias", "last", "mlp")}, words={"bias": "bias (32)", "last": "last layer (8,224)", "mlp": "hypernetwork (139,808)"},
        methods=_DECODER),
    Row("decoder_steps", {"min": 1}, methods=_DECODER),
    Row("decoder_on_volumes", methods=_DECODER),
    Row("adapter_steps", {"min": 1}, methods=("adapter", "adapter+decoder")),
    Row("steps", {"min": 1}, methods=("encoder",)),  # the button is the switch: 0 steps would do nothing
    Row("learning_rate", {"step": 1e-5}, methods=("encoder",)),
)


class SettingsForm:
    """The settings widgets in three magicgui Containers for the panel to place: ``main`` (encoder, device,
    support mode, background label, refine), ``more`` (the finer segmentation settings) and ``fine_tune``."""

    def __init__(self, encoders: list[str]):
        self.widgets: dict[str, ValueWidget] = {}  # setting name -> its widget
        main_rows = _main_rows(encoders)
        self.main = self._container(SegmentationParams, main_rows)
        self.more = self._container(SegmentationParams, MORE_ROWS)
        self.fine_tune = self._container(FineTuneParams, FINE_TUNE_ROWS)
        self._segmentation = [row.name for row in (*main_rows, *MORE_ROWS)]
        self["support_mode"].changed.connect(self._show_background_label)
        self._show_background_label()
        self["method"].changed.connect(self._show_fine_tune_rows)
        self._show_fine_tune_rows()

    def __getitem__(self, name: str) -> ValueWidget:
        return self.widgets[name]

    def params(self) -> SegmentationParams:
        """SegmentationParams from the controls (core defaults for the settings without one); the background
        label only in scribble mode."""
        values = {name: self[name].value for name in self._segmentation}
        if values["support_mode"] != "scribble":
            values["background_label"] = None
        return with_settings(SegmentationParams(), values)

    def fine_tune_params(self) -> FineTuneParams:
        return with_settings(FineTuneParams(), {row.name: self[row.name].value for row in FINE_TUNE_ROWS})

    def _container(self, owner: type, rows: tuple[Row, ...]) -> Container:
        container = Container()
        container.margins = (0, 0, 0, 0)  # the panel's group box has its own
        for row in rows:
            self.widgets[row.name] = setting_widget(owner, row)
            container.append(self.widgets[row.name])  # appended after creation: magicgui aligns the labels
        return container

    def _show_background_label(self, *_) -> None:
        self["background_label"].visible = self["support_mode"].value == "scribble"

    def _show_fine_tune_rows(self, *_) -> None:
        """Only the Fine-tune settings of the chosen method are shown (the others would change nothing)."""
        method = self["method"].value
        for row in FINE_TUNE_ROWS:
            if row.methods:
                self[row.name].visible = method in row.methods


def setting_widget(owner: type, row: Row) -> ValueWidget:
    """A magicgui widget for the setting ``row.name`` of the params dataclass ``owner``: by its type, at its
    default, with its label, range and choices, and its help as the tooltip."""
    setting = setting_named(owner, row.name)
    options = {key: value for key, value in (("min", setting.minimum), ("max", setting.maximum)) if value is not None}
    options.update(row.options)
    if setting.choices:
        options["choices"] = tuple((row.words.get(value, value), value) for value in setting.choices)
    elif row.words and "choices" in options:  # choices the panel lists (the core's field is a plain str)
        options["choices"] = tuple((row.words.get(value, value), value) for value in options["choices"])
    value = options.pop("value", setting.default)
    name, label = setting.name.replace(".", "_"), setting.label
    if setting.kind is bool and setting.optional:  # create_widget would add an empty choice for the value None
        widget = ComboBox(value=value, choices=options.pop("choices", AUTOMATIC_ALWAYS_NEVER), label=label, name=name,
                          **options)
    else:
        widget = create_widget(value=value, annotation=setting.kind, label=label, name=name, options=options)
    if isinstance(widget, FloatSpinBox) and "min" not in row.options and setting.minimum is not None:
        widget.min = _shown_minimum(setting, widget.native.decimals())
    widget.tooltip = row.tooltip or tooltip_of(setting)
    return widget


def _shown_minimum(setting: Setting, decimals: int) -> float:
    """The core's minimum as a spin box with ``decimals`` (magicgui takes them from the step) can hold it: a
    finer minimum would round down, to 0 for a scale of 1e-3, outside the core's range."""
    shown = round(setting.minimum, decimals)
    return shown if shown >= setting.minimum else shown + 10 ** -decimals


def tooltip_of(setting: Setting) -> str:
    """The setting's help as a tooltip: a capital first letter, wrapped at 80 characters."""
    text = " ".join(setting.help.split())
    return textwrap.fill(text[:1].upper() + text[1:], 80)
