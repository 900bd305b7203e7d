"""The evaluation data sets and the helpers every protocol reads them with.

Volumes: a folder of `image_ID.nii[.gz]` + `label_ID.nii[.gz]` (the CHAOS-T2 layout); labels are read
onto the image's grid. BUSI: DIR/benign/NAME.png, DIR/malignant/NAME.png, masks NAME_mask*.png
(OR-merged).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np

from ..errors import FewShotError
from ..io import list_images, read_busi_mask, read_labels, read_volume

BUSI_SUBSETS = ("benign", "malignant")


# -- volumes ----------------------------------------------------------------------------------------
def find_cases(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(case id, image path, label path) for every `image_ID.nii[.gz]` with a `label_ID` beside it, by numeric id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FewShotError(f"{folder} is not a folder.")
    cases = []
    for image in folder.glob("image_*.nii*"):
        case = re.sub(r"\.nii(\.gz)?$", "", image.name)[len("image_"):]
        label = next(iter(sorted(folder.glob(f"label_{case}.nii*"))), None)
        if label is not None:
            cases.append((case, image, label))
    if not cases:
        raise FewShotError(f"No image_*.nii.gz / label_*.nii.gz pairs were found in {folder}.")
    return sorted(cases, key=lambda c: (int(c[0]) if c[0].isdigit() else 0, c[0]))


def load_case(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The volume (S, H, W) and its labels (S, H, W) int, read onto the volume's grid."""
    volume = read_volume(image_path)
    return volume.data, read_labels(label_path, like=volume)


def present_classes(labels: np.ndarray, classes: dict[int, str] | None) -> dict[int, str]:
    """Class id -> name of the classes present in `labels` (any shape); every one ("class N") when
    `classes` is None, else those of `classes` that are present."""
    present = [int(c) for c in np.unique(labels) if c != 0]
    if classes is None:
        return {c: f"class {c}" for c in present}
    return {c: n for c, n in classes.items() if c in present}


def slice_range(labels: np.ndarray, class_id: int) -> tuple[int, int] | None:
    """First and last slice (inclusive) of labels (S, H, W) where `class_id` is present; None when absent."""
    present = np.flatnonzero((labels == class_id).any(axis=(1, 2)))
    return (int(present[0]), int(present[-1])) if len(present) else None


def spread_slices(lo: int, hi: int, k: int) -> list[int]:
    """K slices evenly spread over [lo, hi]: at (2j + 1) / 2K of the range (K=1: middle; K=3: 1/6, 1/2, 5/6)."""
    return sorted({int(round(lo + (hi - lo) * (2 * j + 1) / (2 * k))) for j in range(k)})


# -- BUSI -------------------------------------------------------------------------------------------
def load_busi(folder: str | Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Names ("benign/benign (1)"), grey images (H, W) and lesion masks (H, W) bool of a BUSI-like folder."""
    folder = Path(folder)
    names, images, masks = [], [], []
    for subset in BUSI_SUBSETS:
        if not (folder / subset).is_dir():
            continue
        for path in list_images(folder / subset):
            volume = read_volume(path)
            names.append(f"{subset}/{path.stem}")
            image = volume.data[0]
            images.append(image if image.ndim == 2 else image.mean(-1).astype(image.dtype))
            masks.append(read_busi_mask(path))
    if not images:
        raise FewShotError(f"No images were found in {folder}/benign or {folder}/malignant.")
    return names, images, masks


def seeded_busi_pool(folder: str | Path, shots: int, images: int, rounds: int, seed: int, left: str
                     ) -> tuple[list[str], list[int], list[np.ndarray], list[np.ndarray]]:
    """The interactive protocols' pool: `images` drawn from a BUSI-like folder by `seed`, after checking that
    `shots` painted and `rounds` corrections fit in it (`left`: what the unpainted images are for, in the
    message). Returns every name, the drawn indices, their images (H, W) and their masks (H, W) bool."""
    names, all_images, all_masks = load_busi(folder)
    if not 1 <= shots < images <= len(all_images):
        raise FewShotError(f"--shots and --images need 1 <= shots < images <= {len(all_images)} "
                           f"(got {shots} and {images}).")
    if rounds > images - shots:
        raise FewShotError(f"--rounds {rounds} is more than the {images - shots} {left}.")
    drawn = random.Random(seed).sample(range(len(all_images)), images)
    return names, drawn, [all_images[i] for i in drawn], [all_masks[i].astype(bool) for i in drawn]
