"""What Check next could rank by in the BUSI box loop (issue 20 item 3; session 19, the lead): the CLI's own
`evaluate busi --protocol interactive --correct box` loop, run with wrappers that record, every round and for every
image not yet boxed, its error (1 - Dice), Check next's sign (`result.uncertainty`: today 1 - LiteMedSAM's IoU
estimate) and the selection score of the object propose and select kept (select_objects.refit's result: embedding
contrast with its ring + likeness to the painted lesions), and (session 20, helper "ambig") the selection's rivals:
the other candidates' scores and their overlap with the kept object (core/ambiguity.py rival_record, recorded by
select_plane itself from the scores it computed). Nothing is copied: the loop, the selection and Check next
are the product's code; the wrappers only read.

    OMP_NUM_THREADS=1 python benchmarks/loop_signals.py SEED OUT.json [--weight W] [--rule ratio|share]
    python benchmarks/loop_signals.py --report OUT.json [OUT2.json ...]

--report: per round the Spearman correlation of each sign with the error, and the worst image's rank under each
(1 = suggested first), for: today's estimate, minus the selection score, the ambiguity sign (runner-up elsewhere /
kept score, at overlap limits 0 / 0.1 / 0.3; minus the kept - runner-up margin), the rank mean of the estimate and
the ambiguity, and estimate + w x ambiguity.
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(seed: int, out: Path) -> None:
    from napari_fewshot.core import select_objects
    from napari_fewshot.evaluation import interactive_images  # imported by the CLI's loop at its call

    kept: dict[int, float] = {}  # image index -> the kept object's selection score (its last selection)
    rivals: dict[int, tuple | None] = {}  # image index -> ambiguity.rival_record of its last selection
    current: list[int] = []
    rounds: list[dict] = []
    real_select, real_refit, real_rank = select_objects.select_plane, select_objects.refit, \
        interactive_images.ranking_quality

    def select_plane(*args, **kwargs):
        current[:] = [inspect.currentframe().f_back.f_locals.get("i", -1)]  # select_planes' image index
        kept[current[0]] = float("nan")  # no winner drawn: no score
        if kwargs.get("rivals") is None:  # the product records rivals only when Check next uses them
            kwargs["rivals"] = {}
        record = kwargs["rivals"]
        out = real_select(*args, **kwargs)
        rivals[current[0]] = record.get(1)  # class 1 (BUSI's lesion): (kept score, [(score, overlap)] of the others)
        return out

    def refit(*args, **kwargs):
        box, probabilities, score = real_refit(*args, **kwargs)
        kept[current[0]] = float(score)
        return box, probabilities, score

    def ranking_quality(uncertainty, errors, *args, **kwargs):
        rounds.append({"errors": {int(j): float(e) for j, e in errors.items()},
                       "estimate": {int(j): float(uncertainty.get(j, np.nan)) for j in errors},
                       "score": {int(j): kept.get(j, float("nan")) for j in errors},
                       # nothing drawn (estimate 1): select_plane was not called, its last record is stale
                       "rivals": {int(j): None if uncertainty.get(j) == 1.0 else rivals.get(j) for j in errors}})
        return real_rank(uncertainty, errors, *args, **kwargs)

    select_objects.select_plane, select_objects.refit = select_plane, refit
    interactive_images.ranking_quality = ranking_quality
    from napari_fewshot.cli import main

    loop = out.with_name(out.stem + "_loop.json")  # the CLI's own report (its defaults, as a user runs it)
    main(["evaluate", "busi", str(ROOT.parent / "shared" / "data" / "busi"), "--protocol", "interactive", "--correct",
          "box", "--images", "20", "--shots", "3", "--rounds", "10", "--seed", str(seed), "--json", str(loop)])
    report = json.loads(loop.read_text())
    out.write_text(json.dumps({"seed": seed, "rounds": rounds, "dice_per_drag": report["dice_per_drag"],
                               "picked": report["picked"]}, indent=1))


def ranks(values: dict[int, float]) -> dict[int, float]:
    """Image -> rank of its value, 0 = highest (NaN last)."""
    order = sorted(values, key=lambda j: (np.isnan(values[j]), -values[j] if not np.isnan(values[j]) else 0))
    return {j: float(n) for n, j in enumerate(order)}


def signs_of(r: dict) -> dict[str, dict[int, float]]:
    """One round's record -> sign name -> image -> value (higher = suggested first)."""
    from napari_fewshot.core.ambiguity import ambiguity, runner_up

    errors = {int(j): e for j, e in r["errors"].items()}
    est = {int(j): v for j, v in r["estimate"].items()}
    rec = {int(j): v for j, v in r.get("rivals", {}).items()}
    neg = {int(j): -v if not np.isnan(v) else 1e9 for j, v in r["score"].items()}  # no object: first
    out = {"estimate": est, "-score": neg}
    for overlap in (0.0, 0.1, 0.3):
        out[f"amb{overlap}"] = {j: ambiguity(rec.get(j), overlap, "ratio") for j in errors}

    def margin(j):  # -(kept - runner-up elsewhere); none elsewhere: -2 (the scores' range); no record: first
        if rec.get(j) is None:
            return 1e9
        other = runner_up(rec[j])
        return -2.0 if other is None else other - rec[j][0]
    out["-margin"] = {j: margin(j) for j in errors}
    out["elsewhere"] = {j: elsewhere(rec.get(j)) for j in errors}
    for tag in ("amb0.1", "elsewhere"):
        a, b = ranks(est), ranks(out[tag])
        out[f"rankmean {tag}"] = {j: -(a[j] + b[j]) / 2 for j in errors}
        for w in (0.05, 0.1, 0.2, 0.5):
            out[f"est+{w}{tag}"] = {j: est[j] + w * out[tag][j] for j in errors}
    return out


def elsewhere(record, overlap: float = 0.1) -> float:
    """Share of the image's candidates that lie elsewhere (overlap share <= `overlap` with the kept object): how
    split the prototypes' evidence is (found on seed 2's malignant (18), after the ratio; no record: 1)."""
    if record is None:
        return 1.0
    return sum(share <= overlap for _, share in record[1]) / (1 + len(record[1]))


def report(paths: list[str]) -> None:
    from scipy.stats import spearmanr

    for path in paths:
        data = json.loads(Path(path).read_text())
        print(f"seed {data['seed']}: per round Spearman with the error / rank of the worst image (1 = first)")
        table: dict[str, list] = {}
        for r in data["rounds"]:
            errors = {int(j): e for j, e in r["errors"].items()}
            worst = max(errors, key=errors.get)
            for name, sign in signs_of(r).items():
                js = sorted(errors)
                rho = spearmanr([sign[j] for j in js], [errors[j] for j in js]).correlation if len(js) > 2 else None
                first = min(errors, key=lambda j: (ranks(sign)[j], j))  # what Check next would suggest
                table.setdefault(name, []).append((rho, 1 + ranks(sign)[worst], errors[first]))
        for name, rows in table.items():
            rhos = [x for x, _, _ in rows if x is not None and not np.isnan(x)]
            worst_ranks = [int(k) for _, k, _ in rows]
            print(f"  {name:18s} mean rho {np.mean(rhos):+.2f}; suggested image's mean error "
                  f"{np.mean([e for _, _, e in rows]):.2f}; worst image's rank per round {worst_ranks}")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2:])
    else:  # --weight W: Check next ranks with uncertainty.AMBIGUITY_WEIGHT = W ("estimate" then records its sign)
        if "--weight" in sys.argv:
            from napari_fewshot.core import uncertainty

            uncertainty.AMBIGUITY_WEIGHT = float(sys.argv[sys.argv.index("--weight") + 1])
        if "--rule" in sys.argv:  # core/ambiguity.py RULE: "ratio" or "share"
            from napari_fewshot.core import ambiguity

            ambiguity.RULE = sys.argv[sys.argv.index("--rule") + 1]
        run(int(sys.argv[1]), Path(sys.argv[2]))
