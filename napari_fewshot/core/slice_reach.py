"""Which painted slices each slice of a volume is matched against (SegmentationParams.support_reach).

- nearest (the default): for each class, background included, the nearest support slice whose prototypes show it
  at or below the slice, and the nearest at or above it (a slice outside the painted range gets the one nearest
  it); the global prototypes (every painted slice's mean) always. Anatomy changes along the body, so the
  painted slices either side of a slice are the ones that look like it: this is the correspondence of the
  volumetric few-shot protocols (Roy et al. 2020, SSL-ALPNet's chunks), where a support slice serves the part of
  the volume around it. It is also cheaper: a correction re-matches only the slices between its neighbouring
  support slices, not the whole volume (core/matching.py keeps each pair's map).
- all: every slice against every painted slice.

2D images and image sets are never restricted (their images are not neighbours along a body), nor a bank's
prototypes (one group, from another scan). Measured in BENCHMARKS.md, session 29.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from .matching import PrototypeGroup

def nearest_slices(shows: Mapping[int, Collection[int]], z: int) -> set[int]:
    """The support slices that slice `z` is matched against.

    shows: support slice -> the class positions (0 background, 1..K) it has prototypes of."""
    out: set[int] = set()
    for k in set().union(*shows.values()) if shows else ():
        having = [s for s, classes in shows.items() if k in classes]
        below, above = [s for s in having if s <= z], [s for s in having if s >= z]
        out |= {max(below)} if below else set()
        out |= {min(above)} if above else set()
    return out


def _slice_of(group: PrototypeGroup, image_key: tuple) -> int | None:
    """The support slice of this image that `group` holds the local prototypes of (FewShotSegmenter._pieces' key:
    (image id, generation, slice, ...)), or None (the global prototypes, a bank's set)."""
    key = group.key
    if isinstance(key, tuple) and len(key) > 2 and key[:2] == image_key:
        return int(key[2])
    return None


class Reach:
    """The rule of one segmentation: which of its prototype groups each query slice uses.

    groups: the segmentation's groups (FewShotSegmenter._groups); image_key: (id of its FeatureCache, generation)."""

    def __init__(self, groups: Sequence[PrototypeGroup], image_key: tuple):
        self.slice_of = [_slice_of(g, image_key) for g in groups]
        self.shows: dict[int, set[int]] = {}
        for s, g in zip(self.slice_of, groups):
            if s is not None:
                sizes = [g.bounds[k + 1] - g.bounds[k] for k in range(len(g.bounds) - 1)]
                self.shows.setdefault(s, set()).update(k for k, n in enumerate(sizes) if n)
        self._memo: dict[int, tuple[int, ...]] = {}

    def slices(self, z: int) -> set[int]:
        """Support slices whose prototypes slice `z` is matched against."""
        return nearest_slices(self.shows, z)

    def uses(self, z: int) -> tuple[int, ...]:
        """Positions in `groups` of the groups slice `z` is matched against."""
        if z not in self._memo:
            near = self.slices(z)
            self._memo[z] = tuple(g for g, s in enumerate(self.slice_of) if s is None or s in near)
        return self._memo[z]

    def runs(self, indices: Sequence[int]) -> list[tuple[tuple[int, ...], list[int]]]:
        """`indices` cut into consecutive runs that use the same groups: [(group positions, slice indices)]."""
        out: list[tuple[tuple[int, ...], list[int]]] = []
        for z in indices:
            mine = self.uses(z)
            if out and out[-1][0] == mine:
                out[-1][1].append(z)
            else:
                out.append((mine, [z]))
        return out


def reach_of(segmenter, groups) -> Reach | None:
    """The Reach of segmenting the segmenter's image with `groups`, or None where every slice uses every group
    (support_reach "all", a 2D image or image set, self-support's single PrototypeSet, a single local group)."""
    cache = segmenter.cache
    if (segmenter.params.support_reach != "nearest" or cache is None or not cache.stack.is_3d
            or not isinstance(groups, list)):
        return None
    reach = Reach(groups, (id(cache), cache.generation))
    return reach if len(reach.shows) > 1 else None


def restrict(segmenter, groups: list[PrototypeGroup], z: int) -> list[PrototypeGroup]:
    """`groups` less those slice `z` is not matched against (all of them where no Reach applies)."""
    reach = reach_of(segmenter, groups)
    return groups if reach is None else [groups[g] for g in reach.uses(z)]
