"""SegmentationResult: what one segmentation gives back (labels, similarity maps, Check next's order, provenance)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .provenance import Explainable, Explainer


@dataclass
class SegmentationResult(Explainable):
    """labels: (S, H, W) array for a volume, list of (H_i, W_i) for an image set; label values as painted.
    similarity: class label value -> per slice (H, W) float16 best cosine similarity (only slices segmented).
    support_slices: indices whose labels were copied from the support (dense mode) rather than predicted.
    segmented_slices: indices that went through the model.
    uncertainty: predicted slice index -> expected number of wrongly labelled pixels on it, from the
        matching's confidence along the final labels' boundaries (see core/uncertainty.py): what to check first.
    similarity_range: image sets: class label value -> (low, high), the heatmaps' one colour range on every
        image, from the support's own similarity levels (candidate_score.py); empty for a volume.
    ambiguity: images of a set the selection drew -> how close another object in it scored to the kept one, in
        [0, 1] (core/ambiguity.py), where Check next ranks by it (uncertainty.AMBIGUITY_WEIGHT); else empty.
    standout: images of a set LiteMedSAM drew -> how much the drawn object stands out from its surroundings in
        LiteMedSAM's embedding (core/standout.py; None: nothing drawn), where Check next ranks by it
        (uncertainty.STANDOUT_WEIGHT); else empty.
    refinement: set when LiteMedSAM refinement is still to come (FewShotSegmenter.refine_result), else None.
    """

    labels: np.ndarray | list[np.ndarray]
    class_ids: list[int]
    support_slices: list[int]
    segmented_slices: list[int]
    similarity: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    uncertainty: dict[int, float] = field(default_factory=dict)
    similarity_range: dict[int, tuple[float, float]] = field(default_factory=dict)
    ambiguity: dict[int, float] = field(default_factory=dict)
    standout: dict[int, float | None] = field(default_factory=dict)
    explainer: Explainer | None = field(default=None, repr=False)  # for explain(z, y, x): core/provenance.py
    # a coarse result of segment(..., refine_later=True) still to refine: core/refinement.PendingRefinement
    refinement: object | None = field(default=None, repr=False)

    def check_order(self, exclude=()) -> list[int]:
        """Predicted slices, the most unsure first (ties: lower index first), without `exclude`."""
        skip = set(exclude)
        return sorted((i for i in self.uncertainty if i not in skip), key=lambda i: (-self.uncertainty[i], i))

    def similarity_volume(self, class_id: int) -> np.ndarray:
        """Similarity of a volume to class `class_id` as one (S, H, W) float32 array (0 where not segmented)."""
        volume = np.zeros(np.shape(self.labels), np.float32)
        for i, plane in self.similarity[class_id].items():
            volume[i] = plane
        return volume
