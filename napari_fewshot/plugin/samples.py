"""npe2 sample data: the abdominal CT shipped with the package (File > Open Sample > napari-fewshot).

Two layers: the scan, and its reference organ labels (TotalSegmentator's output, hidden, named so
nobody takes it for a support). No ultrasound images ship with the package: the BUSI data set's
licence does not allow it (see sample_data/ATTRIBUTION.md).
"""

from __future__ import annotations

from . import ROLE_KEY
from .readers import LayerData, volume_layer_data

CT_IMAGE_NAME = "CT abdomen"
CT_REFERENCE_NAME = "CT abdomen: reference organs"


def ct_abdomen() -> list[LayerData]:
    """The CT volume (112 x 101 x 122 voxels, 3 mm, HU) and its reference labels (liver, spleen, kidneys)."""
    from ..io import read_labels, read_volume
    from ..io.volume import Volume
    from ..sample_data import CT_IMAGE, CT_LABELS, ct_class_names

    names = ct_class_names()
    volume = read_volume(CT_IMAGE)
    image = volume_layer_data(volume, CT_IMAGE_NAME, class_names=names, as_labels=False)
    labels = read_labels(CT_LABELS, like=volume)
    label_volume = Volume(labels, volume.spacing, volume.affine, str(CT_LABELS), "nifti", dict(volume.meta))
    reference = volume_layer_data(label_volume, CT_REFERENCE_NAME, class_names=names, as_labels=True)
    reference[1]["visible"] = False
    reference[1]["opacity"] = 0.5
    reference[1]["metadata"][ROLE_KEY] = "reference"
    return [image, reference]
