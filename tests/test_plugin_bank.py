"""Save prototypes... / Load prototypes...: a bank saved from painted slices segments an unpainted image."""

import numpy as np
import pytest
from conftest import CT_IMAGE_NAME, LIVER, paint_support, wait_idle

from napari_fewshot.core import dice
from napari_fewshot.core.bank import PrototypeBank

pytestmark = pytest.mark.gui


def test_bank_saved_in_the_widget_segments_an_unpainted_copy(ct, qtbot, tmp_path, notes):
    viewer, widget, reference = ct
    support = paint_support(widget, reference)
    painted = support.data.copy()
    target = tmp_path / "liver.fewshot"
    wait_idle(qtbot, widget)
    widget.save_prototypes(str(target))
    wait_idle(qtbot, widget)
    assert target.exists()
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
    wait_idle(qtbot, widget)
    prediction = widget.prediction_layer
    assert prediction is not None and prediction.data.shape == copy.data.shape
    score = dice(prediction.data == LIVER, reference == LIVER)
    assert score > 0.6, score  # measured ~0.8 (bank from 3 painted slices, whole volume scored)
