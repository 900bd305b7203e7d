"""Two `evaluate busi` episode runs of the same seed compared episode by episode (the episodes are seeded, so
episode i is the same query and supports in both): mean Dice of each, the mean paired difference with its standard
error, how many episodes moved by more than 0.02 either way, and the hit rates.

    python benchmarks/paired_episodes.py BASE.json OTHER.json [BASE2.json OTHER2.json ...]

With several pairs, each is printed and then all their episodes pooled.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def paired(base_path: str, other_path: str) -> np.ndarray:
    """(n,) Dice differences other - base, episode by episode; prints the pair's line."""
    base, other = json.load(open(base_path)), json.load(open(other_path))
    if len(base["cases"]) != len(other["cases"]) or any(
            a["query"] != b["query"] for a, b in zip(base["cases"], other["cases"])):
        raise SystemExit(f"{base_path} and {other_path} are not the same episodes (another seed or count).")
    x = np.array([c["dice"] for c in base["cases"]])
    y = np.array([c["dice"] for c in other["cases"]])
    d = y - x
    print(f"{other_path} against {base_path}: n={len(d)} {x.mean():.3f} -> {y.mean():.3f}, "
          f"difference {d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} (SE); better by > 0.02 in "
          f"{int((d > 0.02).sum())}, worse in {int((d < -0.02).sum())}; hit rate {base['hit_rate']:.2f} -> "
          f"{other['hit_rate']:.2f}")
    return d


def main(paths: list[str]) -> None:
    if len(paths) < 2 or len(paths) % 2:
        raise SystemExit(__doc__)
    diffs = [paired(paths[i], paths[i + 1]) for i in range(0, len(paths), 2)]
    if len(diffs) > 1:
        d = np.concatenate(diffs)
        print(f"pooled: n={len(d)} difference {d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} (SE)")


if __name__ == "__main__":
    main(sys.argv[1:])
