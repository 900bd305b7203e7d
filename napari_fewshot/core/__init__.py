"""The engine: encoders, feature cache, prototypes, prediction, fine-tuning, metrics.

Pure torch/numpy; imports no napari and no Qt, so it runs in scripts, notebooks, the CLI and on Dask.
"""

from .config import RefineParams, SegmentationParams
from .training_config import AdaptParams, FineTuneParams
from .encoders import available_encoders, create_encoder, encoder_choices
from .metrics import dice, dice_per_class, hd95
from .progress import Progress, run
from .prototypes import PrototypeSet
from .segmenter import FewShotSegmenter, SegmentationResult

__all__ = [
    "AdaptParams", "FewShotSegmenter", "FineTuneParams", "Progress", "PrototypeSet", "RefineParams",
    "SegmentationParams", "SegmentationResult", "available_encoders", "create_encoder", "dice", "dice_per_class",
    "encoder_choices", "hd95", "run",
]
