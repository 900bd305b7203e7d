"""The settings form (magicgui widgets built from the parameter dataclasses): its defaults are the core's,
each control sets its own field, and it gives the same SegmentationParams as the hand-made panel did."""

from dataclasses import asdict, dataclass, fields
from typing import Literal

import pytest
from magicgui.widgets import CheckBox, ComboBox

from napari_fewshot.core import FineTuneParams, RefineParams, SegmentationParams, encoder_choices
from napari_fewshot.core.settings import setting, setting_named
from napari_fewshot.plugin.settings_form import Row, SettingsForm, setting_widget

pytestmark = pytest.mark.gui  # Qt widgets: needs a display (xvfb-run)


@pytest.fixture
def form(qapp):
    return SettingsForm(encoder_choices())


def _other_value(widget):
    """A value of ``widget`` other than its current one, as a user could choose it."""
    if isinstance(widget, ComboBox):
        return next(value for value in widget.choices if value != widget.value)
    if isinstance(widget, CheckBox):
        return not widget.value
    step = widget.step or 1
    return widget.value + step if widget.value + step <= widget.max else widget.value - step


def test_defaults_are_the_cores(form):
    assert form.params() == SegmentationParams()  # background_label None: the form sets it in scribble mode only
    assert form.fine_tune_params() == FineTuneParams()
    assert form["refine.enabled"].native.currentText() == "automatic"
    assert form["background_label"].native.isHidden()  # dense mode
    assert "litemedsam" in form["encoder"].choices


def test_each_control_sets_its_own_field(form):
    form["support_mode"].value = "scribble"  # so that the background label counts
    before = asdict(form.params())
    for path in [p for p in form.widgets if p in before]:
        widget = form[path]
        old = widget.value
        widget.value = _other_value(widget)
        new = widget.value  # as the widget shows it (a float spin box rounds to its decimals)
        after = asdict(form.params())
        assert after[path] == new and after[path] != old, path
        tied = {path, "background_label"} if path == "support_mode" else {path}  # dense mode drops the label
        assert {k: v for k, v in after.items() if k not in tied} == {k: v for k, v in before.items() if k not in tied}
        assert after["background_label"] == (None if after["support_mode"] == "dense" else form["background_label"].value)
        widget.value = old
    form["steps"].value, form["learning_rate"].value = 50, 3e-4
    assert form.fine_tune_params() == FineTuneParams(steps=50, learning_rate=3e-4)


@pytest.mark.parametrize("mode, background, refine", [("dense", 3, None), ("scribble", 3, True), ("dense", 1, False)])
def test_same_params_as_the_hand_made_panel(form, mode, background, refine):
    form["encoder"].value, form["device"].value = "efficientnet-lite2", "cpu"
    form["support_mode"].value, form["background_label"].value, form["refine.enabled"].value = mode, background, refine
    # what FewShotWidget.params built from its Qt controls before the form existed
    expected = SegmentationParams(encoder="efficientnet-lite2", device="cpu", support_mode=mode,
                                  background_label=background if mode == "scribble" else None,
                                  refine=RefineParams(enabled=refine))
    assert form.params() == expected
    assert form["background_label"].native.isHidden() == (mode != "scribble")


def test_tooltips_explain_the_fields(form):
    assert "longer side" in form["input_size"].tooltip.lower()  # the setting's help
    assert "LiteMedSAM" in form["refine.enabled"].tooltip  # the panel's own words


def test_labels_ranges_and_choices_are_the_cores(form):
    for name, widget in form.widgets.items():
        owner = FineTuneParams if name in {f.name for f in fields(FineTuneParams)} else SegmentationParams
        assert widget.label == setting_named(owner, name).label, name
    input_size = setting_named(SegmentationParams, "input_size")
    assert (form["input_size"].min, form["input_size"].max) == (input_size.minimum, input_size.maximum)
    assert form["scale"].min == 0.01  # the core's 1e-3, as a spin box of 2 decimals can hold it (not 0)
    assert [value for value in form["modality"].choices] == ["auto", "ct", "mr", "us", "none"]
    assert form["support_mode"].native.itemText(0) == "painted slices are complete"  # the panel's wording


@dataclass
class _Inner:
    margin: float = setting(0.1, label="Margin", help="box margin, a fraction of the size", minimum=0.0, maximum=1.0)
    enabled: bool | None = setting(None, label="Enabled", help="on, off or automatic")
    kind: Literal["a", "b"] = setting("a", label="Kind", help="which")


@dataclass
class _Outer:
    name: str = setting("a", label="Name", help="a name")
    inner: _Inner = setting(factory=_Inner, label="Inner", help="a group")


def test_nested_settings_by_dotted_name(qapp):
    margin = setting_widget(_Outer, Row("inner.margin", {"step": 0.05}))
    enabled = setting_widget(_Outer, Row("inner.enabled"))
    kind = setting_widget(_Outer, Row("inner.kind", words={"b": "the b one"}))
    assert margin.value == 0.1 and margin.tooltip == "Box margin, a fraction of the size" and margin.label == "Margin"
    assert (margin.min, margin.max) == (0.0, 1.0)
    assert enabled.value is None and [c for c in enabled.choices] == [None, True, False]
    assert [c for c in kind.choices] == ["a", "b"] and kind.native.itemText(1) == "the b one"


def test_fine_tune_shows_only_the_settings_of_its_method(form):
    shown = lambda: {n for n in ("decoder_tuned", "decoder_steps", "adapter_steps", "steps", "learning_rate")
                     if not form[n].native.isHidden()}
    assert form["method"].value == "decoder" and shown() == {"decoder_tuned", "decoder_steps"}
    form["method"].value = "encoder"
    assert shown() == {"steps", "learning_rate"}
    form["method"].value = "adapter+decoder"
    assert shown() == {"decoder_tuned", "decoder_steps", "adapter_steps"}
    form["method"].value = "adapter"
    assert shown() == {"adapter_steps"}
    form["method"].value = "calibrate"  # class offsets: nothing to set
    assert shown() == set() and form["method"].native.currentText() == "class offsets (seconds)"
    assert "cached decoder outputs" in form["method"].tooltip and "needs 2 signed slices" in form["method"].tooltip
