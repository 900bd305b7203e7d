"""Where each EfficientNet-Lite feature map's cells are centred, measured from mirrored images.

A cell's effective centre is where the image content it describes sits on average. A map whose stride-S cell j
is centred on input pixel S*j + c describes a mirrored image, read back reversed, S - 1 - 2c pixels to the
right of the image's own; the column shift s that best matches the reversed map with the image's own (mean
cosine, sub-cell by a parabola through the best three) gives c = (S - 1 - S*s) / 2. Random weights give
c ~ 0 at stride 8 (the geometric centre of symmetrically padded strided convolutions); the ImageNet weights
give the centres that `efficientnet_lite.LiteVariant.centres` records. The maps are the network's own (no
input shift, no resampling), so this measures the weights, not the code that corrects for them.

    python benchmarks/grid_centres.py [--variant efficientnet-lite0] [--images 10] [--random]
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import io

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_fewshot.core.encoders import create_encoder  # noqa: E402

SIDE = 384
STRIDES = (8, 16, 32)


def centre(own: torch.Tensor, mirrored: torch.Tensor, stride: int, search: int = 3) -> float:
    """c (input px) of a map (C, h, w) from its image's and its mirror's maps (see the module docstring)."""
    own, back = F.normalize(own, dim=0), F.normalize(mirrored, dim=0).flip(-1)
    w = own.shape[-1]
    scores = np.array([float((own[..., search:w - search] * torch.roll(back, s, -1)[..., search:w - search]).sum(0).mean())
                       for s in range(-search, search + 1)])
    k = int(np.argmax(scores))
    shift = float(k - search)
    if 0 < k < len(scores) - 1:
        shift += 0.5 * (scores[k - 1] - scores[k + 1]) / (scores[k - 1] - 2 * scores[k] + scores[k + 1])
    return (stride - 1 - stride * shift) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="efficientnet-lite0")
    parser.add_argument("--data", default="../shared/data/busi")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--random", action="store_true", help="random weights (the method's control)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = create_encoder(args.variant, pretrained=not args.random)
    files = sorted(glob.glob(f"{args.data}/*/*).png"))
    files = files[:: max(1, len(files) // args.images)][:args.images]
    found = {s: [] for s in STRIDES}
    for name in files:
        image = io.imread(name)
        image = (image[..., 0] if image.ndim == 3 else image).astype(np.float32) / 255
        x = F.interpolate(torch.from_numpy(image)[None, None], size=(SIDE, SIDE), mode="bilinear").repeat(1, 3, 1, 1)
        x = encoder.normalization.apply(x)
        with torch.no_grad():
            for stride, own, mirrored in zip(STRIDES, encoder.native_maps(x), encoder.native_maps(x.flip(-1))):
                found[stride].append(centre(own[0], mirrored[0], stride))
    summary = {s: {"centre_px": round(float(np.mean(v)), 2), "sd": round(float(np.std(v)), 2)} for s, v in found.items()}
    print(json.dumps({"variant": args.variant, "random": args.random, "images": len(files), "centres": summary}))
    if args.json:
        Path(args.json).write_text(json.dumps({"variant": args.variant, "random": args.random, "files": files,
                                               "centres": summary}, indent=1))


if __name__ == "__main__":
    main()
