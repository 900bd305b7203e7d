"""Sample data shipped inside the package (installed as `napari_fewshot.sample_data`).

See ATTRIBUTION.md beside this file for sources and licences.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CT_IMAGE = HERE / "ct_abdomen.nii.gz"
CT_LABELS = HERE / "ct_abdomen_organs.nii.gz"


def ct_class_names() -> dict[int, str]:
    """Label value -> organ name of the CT sample's label map."""
    names = json.loads((HERE / "ct_abdomen_organs.json").read_text())
    return {int(k): v for k, v in names.items()}
