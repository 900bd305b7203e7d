"""One place for each setting (core/config.py): the widget's cache rule, the bank's filter, the bank reader
and the CLI's options all follow the field metadata; params of the old flat layout still load."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from napari_fewshot.cli import main
from napari_fewshot.core import AdaptParams, FineTuneParams, RefineParams, SegmentationParams
from napari_fewshot.core import bank_format
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.core.config import feature_settings, machine_local_fields
from napari_fewshot.core.encoders import ENCODERS, EncoderSpec, register_encoder, unregister_encoder
from napari_fewshot.core.normalization import IMAGENET
from napari_fewshot.core.settings import setting_values, settings_of, with_settings
from napari_fewshot.errors import FewShotError
from napari_fewshot.plugin.session import ImageSession
from test_bank_attacks import make_bank, parts, write

# The flat layout prototype banks of schema 1 (and older reports) hold.
OLD_FLAT = {"encoder": "efficientnet-lite0", "device": "cpu", "input_size": 256, "refine": True,
            "refine_margin": 0.2, "refine_min_pixels": 32, "refine_max_components": 5, "refine_mask_prompt": True,
            "refine_max_growth": 4.0, "smooth_slices": 0.0}
OLD_REFINE = RefineParams(enabled=True, margin=0.2, min_pixels=32, max_components=5, mask_prompt=True, max_growth=4.0)


def _another_value(setting):
    """A valid value of `setting` other than its default."""
    if setting.kind is bool:
        return not setting.default if setting.default is not None else True
    if setting.choices:
        return next(c for c in setting.choices if c != setting.default)
    if setting.minimum is not None:
        return setting.maximum if setting.default != setting.maximum else setting.minimum
    return {int: 7, float: 0.5, str: "elsewhere"}[setting.kind]


def _changes(setting) -> dict:
    value = _another_value(setting)
    if setting.name == "support_mode":  # scribble needs its background label
        return {"support_mode": value, "background_label": 9}
    return {setting.name: value}


def test_the_widget_keeps_features_exactly_when_only_settings_that_do_not_affect_them_change():
    layer = SimpleNamespace(events=SimpleNamespace(data=SimpleNamespace(connect=lambda f: None)))
    session = ImageSession(layer)
    base = SegmentationParams()
    session.segmenter = SimpleNamespace(params=base)
    cheap = {s.name for s in settings_of(SegmentationParams) if not s.affects_features}
    assert {"support_mode", "postprocess", "smooth_slices", "self_support", "refine.enabled",
            "refine.margin", "refine.max_growth"} <= cheap
    assert not {"encoder", "device", "input_size", "image_input_size", "modality", "seed"} & cheap
    for setting in settings_of(SegmentationParams):
        changed = with_settings(base, _changes(setting))
        assert session.reuses_features(changed) == (not setting.affects_features), setting.name
    assert session.reuses_features(with_settings(base, {"refine.enabled": True, "refine.margin": 0.3}))
    assert not session.reuses_features(with_settings(base, {"input_size": 256}))
    assert feature_settings(base) == feature_settings(with_settings(base, {"refine.mask_prompt": True}))


def test_a_bank_never_carries_machine_local_settings():
    assert set(machine_local_fields()) == {"device", "cache_dir", "memory_budget_mb", "batch_size"}
    bank = make_bank()
    bank.params = with_settings(bank.params, {"device": "cuda:3", "cache_dir": "/elsewhere", "batch_size": 2,
                                              "memory_budget_mb": 99, "input_size": 256,
                                              "refine.margin": 0.25})
    here = bank.segmentation_params()
    defaults = setting_values(SegmentationParams())
    assert here.device == "auto" and here.cache_dir is None
    assert all(setting_values(here)[name] == defaults[name] for name in machine_local_fields())
    assert here.input_size == 256 and here.refine.margin == 0.25  # the segmentation's own settings travel
    assert bank.segmentation_params("cpu", cache_dir="/here").cache_dir == "/here"


def test_params_of_the_old_flat_layout_load_into_the_groups():
    params = SegmentationParams.from_dict(OLD_FLAT)
    assert params.refine == OLD_REFINE and params.input_size == 256 and params.smooth_slices == 0.0
    assert SegmentationParams.from_dict({"refine": None}).refine == RefineParams()
    checked = bank_format.check_params(dict(OLD_FLAT), "old.fewshot")
    assert SegmentationParams.from_dict(checked) == params
    with pytest.raises(FewShotError, match="refine.enabled"):
        bank_format.check_params({"refine": "yes"}, "old.fewshot")


def test_the_grouped_layout_round_trips():
    params = SegmentationParams(input_size=512, refine=RefineParams(enabled=False, margin=0.05), self_support=0.3)
    values = params.to_dict()
    assert values["refine"] == {"enabled": False, "margin": 0.05, "min_pixels": 64, "max_components": 3,
                                "mask_prompt": False, "max_growth": 3.0, "reuse_shift": 0.0, "reuse_changed": 0.05,
                                "reuse_pixels": 0.0, "ahead": 20, "select": True}
    assert not any(key.startswith("refine_") for key in values)
    assert SegmentationParams.from_dict(values) == params
    assert SegmentationParams.from_dict(bank_format.check_params(values, "new.fewshot")) == params


def test_a_bank_file_of_the_old_layout_loads(tmp_path):
    meta, arrays = parts(make_bank())
    meta["schema_version"] = 1
    meta["params"] = dict(OLD_FLAT)
    bank = PrototypeBank.load(write(tmp_path / "old.fewshot", meta, arrays))
    assert bank.params.refine == OLD_REFINE and bank.params.input_size == 256
    saved = PrototypeBank.load(bank.save(tmp_path / "again.fewshot"))
    assert saved.params == bank.params and saved.schema_version == bank_format.SCHEMA_VERSION


def test_a_bank_setting_out_of_its_declared_range_is_refused(tmp_path):
    meta, arrays = parts(make_bank())
    meta["params"]["refine"]["margin"] = 7.0
    with pytest.raises(FewShotError, match=r"refine\.margin 7\.0 is not from 0\.0 to 1\.0"):
        PrototypeBank.load(write(tmp_path / "bad.fewshot", meta, arrays))


@pytest.mark.parametrize("cls", [SegmentationParams, FineTuneParams, AdaptParams])
def test_every_setting_says_what_it_is_and_its_range_is_valid(cls):
    for setting in settings_of(cls):
        assert setting.label and setting.help, setting.name
        if setting.minimum is None:
            continue
        assert setting.default is None or setting.minimum <= setting.default <= setting.maximum, setting.name
        for bound in (setting.minimum, setting.maximum):  # every value a form offers passes __post_init__
            with_settings(cls(), {setting.name: setting.kind(bound)})


def test_unknown_setting_names_are_one_sentence():
    with pytest.raises(FewShotError, match="no setting 'refine_margin'"):
        with_settings(SegmentationParams(), {"refine_margin": 0.2})
    with pytest.raises(FewShotError, match="RefineParams"):
        SegmentationParams(refine=True)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_segment_help_lists_every_registered_encoder_and_the_config_defaults(capsys, request):
    spec = EncoderSpec("test-encoder", lambda **kw: None, "a stand-in registered by this test", IMAGENET, lambda: None)
    register_encoder(spec)
    request.addfinalizer(lambda: unregister_encoder(spec.name))
    text = _help(capsys, "segment")
    for name, registered in ENCODERS.items():
        assert f"{name}" in text and re.sub(r"\s+", " ", registered.description) in text
    assert "litemedsam" in text and "test-encoder: a stand-in registered by this test" in text
    defaults = SegmentationParams()
    assert f"{defaults.encoder} (default)" in text
    assert f"in pixels (default {defaults.input_size})" in text
    assert f"as in PANet (default {defaults.scale:g})" in text
    assert f"(0: off) (default {defaults.smooth_slices:g})" in text
    assert f"(Adam) (default {FineTuneParams().learning_rate:g})" in text
    assert "--refine, --no-refine" in text and "--self-support MARGIN" in text


def test_cli_options_make_the_config_params(monkeypatch):
    from napari_fewshot.cli import build_parser
    from napari_fewshot.cli_options import segmentation_params

    args = build_parser().parse_args(["demo", "--no-refine", "--input-size", "256", "--prototypes", "global",
                                      "--fine-tune-steps", "3"])
    params, tune = segmentation_params(args)
    assert params == with_settings(SegmentationParams(), {"refine.enabled": False, "input_size": 256,
                                                          "prototype_mode": "global"})
    assert tune == FineTuneParams(method="encoder", steps=3)  # --fine-tune-steps: the whole encoder
    assert segmentation_params(build_parser().parse_args(["demo", "--fine-tune"]))[1] == FineTuneParams()
    assert segmentation_params(build_parser().parse_args(["demo", "--fine-tune", "adapter"]))[1] == \
        FineTuneParams(method="adapter")
    params, tune = segmentation_params(build_parser().parse_args(["demo"]))
    assert params == SegmentationParams() and tune is None
    params, _ = segmentation_params(build_parser().parse_args(["segment", "scan.nii.gz", "--support", "s.nii.gz",
                                                               "--out", "o.nii.gz", "--postprocess-detach", "0",
                                                               "--postprocess-grow", "2"]))
    assert (params.postprocess_detach, params.postprocess_grow) == (0.0, 2)  # the clean-up's two rules, off / eased
