"""Check next's ranking rule A/B on busi_cost_set.py's 100-image set, in one process, image by image (issue 20
cost; session 16, helper "cost"): core/uncertainty.CHECK_NEXT set to A's or B's rule before each image's
segment(..., indices=[n]) (busi_ab.interleaved: two segmenters, ABBA, every `--every`-th unpainted image); process
CPU seconds per image, and whether both gave the same labels.

    OMP_NUM_THREADS=1 python benchmarks/busi_cost_check_next_ab.py [--a signs] [--b estimate] [--every 2] --json OUT
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import argparse

from busi_ab import interleaved

from napari_fewshot.core import uncertainty

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=100)
parser.add_argument("--painted", type=int, default=3)
parser.add_argument("--every", type=int, default=2)
parser.add_argument("--a", default="signs")
parser.add_argument("--b", default="estimate")
parser.add_argument("--data", default="../shared/data/busi")
parser.add_argument("--json")
args = parser.parse_args()


def rule(mode):
    def apply():
        uncertainty.CHECK_NEXT = mode
    return apply


interleaved({args.a: rule(args.a), args.b: rule(args.b)}, args.images, args.painted, args.every, args.data, args.json)
