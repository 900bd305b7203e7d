"""How alike two organs' cells are on each feature grid, on the CT sample: one class painted over organ A on one
slice and over organ B on another (scribble mode, the body outside the organs background), then, for the cells
well inside each organ on the other slices, the best cosine to A's and to B's local prototypes. Explain's
provenance test needs A's cells to match A's paint (and B's B's); on the centred grid liver and spleen, of nearly
the same density here, stop doing so (BENCHMARKS.md, session 23).

    python benchmarks/grid_organ_likeness.py [--grid native|centred] [--pair 1,75,2,100]   # organA,sliceA,organB,sliceB
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core import FewShotSegmenter, SegmentationParams  # noqa: E402
from napari_fewshot.io import read_labels, read_volume  # noqa: E402
from napari_fewshot.sample_data import CT_IMAGE, CT_LABELS  # noqa: E402

BACKGROUND = 9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="native", choices=["native", "centred"])
    parser.add_argument("--pair", default="1,75,2,100")
    args = parser.parse_args()
    organ_a, slice_a, organ_b, slice_b = map(int, args.pair.split(","))
    volume = read_volume(CT_IMAGE)
    reference = read_labels(CT_LABELS, like=volume)
    segmenter = FewShotSegmenter(SegmentationParams(device="cpu", support_mode="scribble", background_label=BACKGROUND,
                                                    feature_grid=args.grid))
    segmenter.set_image(volume.data)
    support = np.zeros(reference.shape, np.uint8)
    support[slice_a][reference[slice_a] == organ_a] = 1
    support[slice_b][reference[slice_b] == organ_b] = 1
    for z in (slice_a, slice_b):
        support[z][reference[z] == 0] = BACKGROUND
    prototypes = segmenter.prototypes(segmenter.parse_support(support))
    local = ~prototypes.is_global & (prototypes.owner == 1)
    vectors, origins = prototypes.vectors[local].float(), prototypes.origins[local][:, 0]
    for organ in (organ_a, organ_b):
        best_a, best_b = [], []
        for z in (z for z in range(70, 112, 4) if z not in (slice_a, slice_b)):
            features = F.normalize(segmenter.slice_features([z])[0].float(), dim=0)  # (C, h, w)
            inside = torch.from_numpy((reference[z] == organ).astype(np.float32))[None, None]
            inside = F.interpolate(inside, size=features.shape[-2:], mode="area")[0, 0] > 0.9
            similarity = features[:, inside].T @ vectors.T  # (cells, prototypes)
            if len(similarity):
                best_a.append(similarity[:, origins == slice_a].max(1).values)
                best_b.append(similarity[:, origins == slice_b].max(1).values)
        a, b = torch.cat(best_a), torch.cat(best_b)
        print(f"{args.grid}: organ {organ}: {len(a)} cells inside it; best cosine to slice {slice_a}'s paint "
              f"{a.mean():.3f}, to slice {slice_b}'s {b.mean():.3f}; slice {slice_a} wins {(a > b).float().mean():.3f}")


if __name__ == "__main__":
    main()
