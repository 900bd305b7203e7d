"""Save prototypes... / Load prototypes...: a bank saved from painted slices segments an unpainted image."""

import nibabel as nib
import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, LIVER, paint_support, wait_idle

from napari_fewshot.core import dice
from napari_fewshot.core.bank import PrototypeBank

pytestmark = pytest.mark.gui


def paint_and_save_bank(widget, reference, qtbot, tmp_path):
    """Paint the liver on the CT sample and save it as a bank: (support layer, its paint, bank path)."""
    support = paint_support(widget, reference)
    painted = support.data.copy()
    target = tmp_path / "liver.fewshot"
    wait_idle(qtbot, widget)
    widget.save_prototypes(str(target))
    wait_idle(qtbot, widget)
    assert target.exists()
    return support, painted, target


def test_bank_saved_in_the_widget_segments_an_unpainted_copy(ct, qtbot, tmp_path, notes):
    viewer, widget, reference = ct
    support, painted, target = paint_and_save_bank(widget, reference, qtbot, tmp_path)
    bank = PrototypeBank.load(target)
    assert bank.class_ids == [LIVER] and bank.encoder_name == "efficientnet-lite0"
    assert np.array_equal(support.data, painted)  # saving never touches the paint

    assert widget.save_prototypes(str(target)) is None  # never replaced silently
    assert any("exists" in m for _, m in notes)

    image = viewer.layers[CT_IMAGE_NAME]
    copy = viewer.add_image(np.array(image.data), name="CT copy", scale=image.scale)
    widget.set_image_layer(copy)
    widget.ui.support_combo.setCurrentText("")  # no support for this image: Load creates an empty one
    widget.load_prototypes(str(target))
    wait_idle(qtbot, widget, timeout_s=300)  # every slice's features: minutes on a loaded 2-core machine
    prediction = widget.prediction_layer
    assert prediction is not None and prediction.data.shape == copy.data.shape
    score = dice(prediction.data == LIVER, reference == LIVER)
    assert score > 0.6, score  # measured ~0.8 (bank from 3 painted slices, whole volume scored)


def test_load_prototypes_on_a_second_scan_of_another_shape(ct, qtbot, tmp_path, notes):
    """#13: after a second scan is opened, Load prototypes segments it: the bank needs no support, so the first
    scan's support layer (another shape) is neither required nor used, and the view shows the new scan."""
    viewer, widget, reference = ct
    support, painted, target = paint_and_save_bank(widget, reference, qtbot, tmp_path)

    first = viewer.layers[CT_IMAGE_NAME]
    viewer.dims.set_current_step(0, first.data.shape[0] - 2)  # the view far along the first scan
    scan = tmp_path / "second.nii.gz"  # 20 slices at half size: another shape, another spacing
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.array(first.data[70:90, ::2, ::2]).T), np.diag([2.0, 2.0, 3.0, 1])),
             scan)
    (second,) = viewer.open(str(scan), plugin="napari-fewshot")
    widget.set_image_layer(second)
    assert widget.support_layer is None  # the first scan's support is not offered for the second scan
    notes.clear()
    widget.load_prototypes(str(target))
    wait_idle(qtbot, widget)
    assert not [m for severity, m in notes if "error" in severity], notes
    prediction = widget.prediction_layer
    assert prediction is not None and prediction.data.shape == second.data.shape
    assert (prediction.data == LIVER).any()
    assert np.array_equal(support.data, painted)  # the first scan's paint is untouched
    # the new scan is in view: the slider stands inside it and the camera is centred on it
    step = viewer.dims.point[0]
    lo, hi = second.extent.world[:, 0]
    assert lo <= step <= hi, (step, lo, hi)
    centre = second.extent.world.mean(axis=0)[-2:]
    assert np.allclose(viewer.camera.center[-2:], centre, atol=float(np.max(second.scale[-2:])) * 2), \
        (viewer.camera.center, centre)


def test_a_bank_pooled_on_the_centred_grid_segments_on_it_in_the_window(ct, qtbot, tmp_path, notes):
    """The panel has no control for the feature grid (SegmentationParams.feature_grid): Load prototypes segments
    with the grid the bank was pooled on, not the panel's default, and says nothing went wrong."""
    from napari_fewshot.core import SegmentationParams

    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    image = viewer.layers[CT_IMAGE_NAME]
    params = SegmentationParams(device="cpu", feature_grid="centred")
    target = PrototypeBank.build([(np.asarray(image.data), np.asarray(support.data))], params).save(tmp_path / "c")
    scan = tmp_path / "second.nii.gz"  # 20 slices at half size: quick
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.array(image.data[70:90, ::2, ::2]).T), np.diag([2.0, 2.0, 3.0, 1])),
             scan)
    (second,) = viewer.open(str(scan), plugin="napari-fewshot")
    widget.set_image_layer(second)
    notes.clear()
    widget.load_prototypes(str(target))
    wait_idle(qtbot, widget)
    assert not [m for severity, m in notes if "error" in severity], notes
    assert widget.session.segmenter.encoder.grid == "centred"
    prediction = widget.prediction_layer
    assert prediction is not None and (prediction.data == LIVER).any()
