"""One cache-folder resolver, one slug, and every small atomic write (feature cache, autosave) through io.atomic."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_fewshot.core import run
from napari_fewshot.core.features import FeatureCache, default_cache_dir
from napari_fewshot.core.stack import ImageStack
from napari_fewshot.io import autosave
from napari_fewshot.io.image_sets import heatmap_targets
from napari_fewshot.paths import slug
from napari_fewshot.plugin.writers import heatmap_paths

from test_feature_cache import CountingEncoder, volume


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_means_unset_for_every_cache(value, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    monkeypatch.delenv("NAPARI_FEWSHOT_CACHE_DIR", raising=False)
    monkeypatch.delenv("NAPARI_FEWSHOT_AUTOSAVE_DIR", raising=False)
    assert default_cache_dir() == tmp_path / ".cache" / "napari-fewshot"
    assert autosave.default_autosave_dir() == tmp_path / ".cache" / "napari-fewshot" / "autosave"


def test_every_cache_follows_xdg_and_its_own_override(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NAPARI_FEWSHOT_CACHE_DIR", raising=False)
    monkeypatch.delenv("NAPARI_FEWSHOT_AUTOSAVE_DIR", raising=False)
    assert default_cache_dir() == tmp_path / "xdg" / "napari-fewshot"
    assert autosave.default_autosave_dir() == tmp_path / "xdg" / "napari-fewshot" / "autosave"
    monkeypatch.setenv("NAPARI_FEWSHOT_CACHE_DIR", str(tmp_path / "features"))
    monkeypatch.setenv("NAPARI_FEWSHOT_AUTOSAVE_DIR", str(tmp_path / "paint"))
    assert (default_cache_dir(), autosave.default_autosave_dir()) == (tmp_path / "features", tmp_path / "paint")


def test_one_slug_names_heatmaps_in_the_plugin_and_in_image_sets():
    names = {1: "Kidney (left)", 2: "Ürün  x"}
    plugin = heatmap_paths("out/h.tif", [1, 2], names)
    sets = heatmap_targets("out", ["a.png"], names)
    for c, name in names.items():
        assert plugin[c].name == f"h_class{c}_{slug(name)}.tif"
        assert f"a_heatmap_class{c}_{slug(name)}.tif" in [p.name for p in sets]
    assert slug("Kidney (left)") == "kidney_left" and slug("Ürün  x") == "r_n_x"


def test_autosave_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = autosave.AutosaveStore(tmp_path).save("sig", np.eye(4, dtype=np.uint8)[None])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # was 0600 from mkstemp: a shared study folder hid it


def test_a_feature_cache_write_killed_midway_leaves_nothing_under_a_slice_name(tmp_path, monkeypatch):
    """np.save dies after writing part of the file: no slice file (temporary or real) stays visible."""
    real_save = np.save

    def dying_save(file, array, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    cache = FeatureCache(CountingEncoder(), ImageStack(volume(slices=2)), torch.device("cpu"), 64,
                         disk_dir=tmp_path, encoder_id="counting-v1", memory_budget=1)
    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(OSError):
        run(cache.compute())
    monkeypatch.setattr(np, "save", real_save)
    left = [p.name for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert not [name for name in left if name.startswith("slice_")], left
