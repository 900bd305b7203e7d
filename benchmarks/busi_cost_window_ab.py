"""This branch against main's path, on busi_cost_set.py's image set, in one process, image by image (issue 20 cost;
session 19, helper "cost"). "whole": the low-resolution decodes upscale the whole resized frame
(core/sam_service.LOW_RES_INSIDE False) and the support's label values come from np.unique (core/support.label_values
replaced by it); "window": both as the code has them. busi_ab.interleaved: two segmenters, ABBA, process CPU seconds
per image, whether both gave the same labels and the same Check next estimate.

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_window_ab.py [--images 30] [--every 1] [--json OUT]
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse

import numpy as np
from busi_ab import interleaved

from napari_fewshot.core import sam_service, support as support_mod

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=30)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--every", type=int, default=1)
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
args = parser.parse_args()
window = (sam_service.LOW_RES_INSIDE, support_mod.label_values)  # the code's


def switch(inside, label_values):
    def apply():
        sam_service.LOW_RES_INSIDE, support_mod.label_values = inside, label_values
    return apply


interleaved({"whole": switch(False, np.unique), "window": switch(*window)}, args.images,
            args.painted, args.every, args.data, args.json)
