"""A real BUSI image set up as core/select_objects.select_plane sees it (tests of refit and grow): the image's
LiteMedSAM embedding, a decode callable and the support profile of other images' lesions. Skips (fails in CI)
without ../shared/data/busi."""

import numpy as np
from PIL import Image

from shared_data import BUSI, require

from napari_fewshot.core.select_objects import support_profiles


def busi_image(name: str) -> tuple[np.ndarray, np.ndarray]:
    """BUSI `name` ("benign/benign (21)"): its (H, W) float32 image in [0, 1] and (H, W) bool reference."""
    folder = require(BUSI)
    image = np.asarray(Image.open(folder / f"{name}.png").convert("L"), np.float32) / 255
    return image, np.asarray(Image.open(folder / f"{name}_mask.png").convert("L")) > 0


def busi_case(name: str, support: list[str]):
    """`name`'s (reference, embedding, decode(boxes, low_res), profile of the `support` images' lesions), with one
    LiteMedSAM service on the CPU."""
    from napari_fewshot.core.sam_service import LiteMedSAMService

    service = LiteMedSAMService("cpu")
    image, reference = busi_image(name)
    embedding = service.embedding(image).in_float32()
    supports = [busi_image(s) for s in support]
    embedded = [service.embedding(image) for image, _ in supports]
    profile = support_profiles({n: mask.astype(np.int16) for n, (_, mask) in enumerate(supports)}, 1,
                               lambda n: embedded[n].in_float32())[1]

    def decode(boxes, low_res):
        return service.decode([(embedding, boxes, None)], low_res=low_res)[0]

    return reference, embedding, decode, profile
