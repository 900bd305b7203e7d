"""The plugin's plumbing without a viewer: npe2 manifest, light imports, readers, writer, sample data."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_fewshot.errors import WriteError
from napari_fewshot.plugin import CLASS_NAMES_KEY, ROLE_KEY, VOLUME_KEY



def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-fewshot")
    manifest.validate_imports()
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Few-shot segmentation"]
    assert [s.key for s in contributions.sample_data] == ["ct_abdomen"]
    assert "*.nii.gz" in contributions.readers[0].filename_patterns
    assert ".nii.gz" in contributions.writers[0].filename_extensions
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-fewshot"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_lists_the_formats_of_the_registry():
    """napari.yaml is static YAML read by npe2: its reader patterns and writer extensions must stay what
    napari_fewshot/io/formats.py says."""
    from npe2 import PluginManifest

    import napari_fewshot
    from napari_fewshot.io.formats import extensions, napari_reader_patterns

    manifest = PluginManifest.from_file(Path(napari_fewshot.__file__).parent / "napari.yaml")
    [reader] = manifest.contributions.readers
    [writer] = manifest.contributions.writers
    assert reader.filename_patterns == napari_reader_patterns()
    assert writer.filename_extensions == extensions("mask", "dicom")  # DICOM SEG too (refused for other scans)
    assert writer.layer_types == ["labels"]


def test_plugin_imports_are_light():
    """The package and the npe2 reader/writer/sample modules import neither torch nor Qt."""
    code = ("import sys, napari_fewshot.plugin, napari_fewshot.plugin.readers, napari_fewshot.plugin.writers, "
            "napari_fewshot.plugin.samples; "
            "print(sorted(m for m in ('torch', 'qtpy', 'PyQt6', 'PyQt5') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_reader_keeps_spacing_and_volume():
    from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS

    from napari_fewshot.plugin.readers import get_reader

    assert get_reader("scan.xyz") is None
    assert get_reader(str(Path(__file__).parent)) is None  # a folder without DICOM
    reader = get_reader(str(CT_IMAGE))
    [(data, kwargs, kind)] = reader(str(CT_IMAGE))
    assert kind == "image" and data.shape == (112, 101, 122)
    assert tuple(kwargs["scale"]) == (3.0, 3.0, 3.0)
    assert kwargs["metadata"][VOLUME_KEY].format == "nifti"
    [(labels, _, kind)] = get_reader(str(CT_LABELS))(str(CT_LABELS))
    assert kind == "labels" and labels.shape == data.shape  # integer file named like a label map


def test_reader_tiff_spacing(tmp_path):
    from napari_fewshot.io import Volume, write_mask
    from napari_fewshot.plugin.readers import get_reader

    stack = np.arange(4 * 10 * 12, dtype=np.uint16).reshape(4, 10, 12) % 7
    like = Volume(stack, spacing=(2.5, 0.5, 0.5), format="tiff")
    [path] = write_mask(tmp_path / "scan.tif", stack, like=like)
    [(data, kwargs, _)] = get_reader(str(path))(str(path))
    np.testing.assert_array_equal(data, stack)
    np.testing.assert_allclose(kwargs["scale"], (2.5, 0.5, 0.5), rtol=1e-4)


def test_reader_dicom_folder(ct_dicom):
    from napari_fewshot.plugin.readers import get_reader

    folder = ct_dicom
    reader = get_reader(str(folder))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(folder))
    assert kind == "image" and data.shape == (20, 101, 122)
    np.testing.assert_allclose(kwargs["scale"], (3.0, 3.0, 3.0), atol=0.01)
    files = sorted(str(p) for p in folder.iterdir())[:3]
    assert get_reader(files) is not None  # several files of one series: read as the folder


def test_sample_data_layers():
    from napari_fewshot.sample_data import ct_class_names

    from napari_fewshot.plugin.samples import CT_IMAGE_NAME, CT_REFERENCE_NAME, ct_abdomen

    (image, image_kwargs, image_kind), (labels, label_kwargs, label_kind) = ct_abdomen()
    assert (image_kind, label_kind) == ("image", "labels")
    assert image_kwargs["name"] == CT_IMAGE_NAME and label_kwargs["name"] == CT_REFERENCE_NAME
    assert image.shape == labels.shape == (112, 101, 122)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    assert image_kwargs["metadata"][CLASS_NAMES_KEY] == ct_class_names()
    assert label_kwargs["metadata"][ROLE_KEY] == "reference" and label_kwargs["visible"] is False
    assert label_kwargs["features"]["name"][1] == "liver"


def test_npe2_writer_round_trip_and_refuses_overwrite(tmp_path):
    import nibabel as nib
    from napari_fewshot.sample_data import CT_IMAGE

    from napari_fewshot.io import read_labels, read_volume
    from napari_fewshot.plugin.writers import write_labels

    volume = read_volume(CT_IMAGE)
    mask = np.zeros(volume.data.shape, np.uint8)
    mask[40:60, 30:50, 20:70] = 3
    for name in ("mask.nii.gz", "mask.tif", "mask.npy"):
        [written] = write_labels(os.fspath(tmp_path / name), mask, {"metadata": {VOLUME_KEY: volume}})
        np.testing.assert_array_equal(read_labels(written, like=volume), mask)
    np.testing.assert_allclose(nib.load(tmp_path / "mask.nii.gz").affine, nib.load(CT_IMAGE).affine)
    before = (tmp_path / "mask.tif").read_bytes()
    with pytest.raises(WriteError, match="exists"):
        write_labels(os.fspath(tmp_path / "mask.tif"), mask * 0, {"metadata": {VOLUME_KEY: volume}})
    assert (tmp_path / "mask.tif").read_bytes() == before


def test_heatmap_paths_name_each_class(tmp_path):
    from napari_fewshot.plugin.writers import heatmap_paths

    paths = heatmap_paths(tmp_path / "heat.nii.gz", [1, 2], {1: "liver"})
    assert [p.name for p in paths.values()] == ["heat_class1_liver.nii.gz", "heat_class2.nii.gz"]


def test_the_npe2_writer_keeps_names_and_colours_and_the_reader_gives_them_back(tmp_path):
    """Issue 23 item 3: File > Save writes STEM.labels.json beside a NIfTI / TIFF mask; opening the mask gives a
    Labels layer with the names (features, as the plugin keeps them) and the colours."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_fewshot.io import read_volume
    from napari_fewshot.plugin.readers import get_reader
    from napari_fewshot.plugin.writers import write_labels
    from napari_fewshot.sample_data import CT_IMAGE

    volume = read_volume(CT_IMAGE)
    mask = np.zeros(volume.data.shape, np.uint8)
    mask[40:60, 30:50, 20:70], mask[60:70, 30:50, 20:70] = 1, 3
    colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 1), 0: (0, 0, 0, 0), 1: (1, 0.5, 0, 1),
                                               3: (0.2, 0.4, 1, 1)})
    meta = {"metadata": {VOLUME_KEY: volume, CLASS_NAMES_KEY: {1: "liver", 3: "kidney_right"}}, "colormap": colormap}
    for name in ("organs.nii.gz", "tiff/organs.tif"):
        mask_path, sidecar = write_labels(os.fspath(tmp_path / name), mask, meta)
        assert Path(sidecar).name == "organs.labels.json"
        [(data, kwargs, kind)] = get_reader(mask_path)(mask_path)
        assert kind == "labels"
        np.testing.assert_array_equal(data, mask)
        assert dict(zip(kwargs["features"]["index"], kwargs["features"]["name"])) == {
            0: "background", 1: "liver", 3: "kidney_right"}
        np.testing.assert_allclose([kwargs["colormap"][1], kwargs["colormap"][3]],
                                   [(1.0, 0.5, 0.0, 1.0), (0.2, 0.4, 1.0, 1.0)], atol=1e-6)  # napari keeps float32
        assert kwargs["colormap"][2] != kwargs["colormap"][0]  # a value without a kept colour still shows
