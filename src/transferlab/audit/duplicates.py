"""Groups of duplicate images: pairs found by any method joined into connected groups
(scipy's connected components), each saying which methods linked it."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Methods, cheapest first: identical bytes, perceptual hash, backbone features.
CONTENT, PHASH, FEATURES = "content", "phash", "features"


@dataclass(frozen=True)
class Group:
    """Indices of images that are copies of each other, and the methods that found them."""

    members: tuple[int, ...]
    found_by: tuple[str, ...]


def same_digest_pairs(digests: Sequence[bytes]) -> np.ndarray:
    """Pairs chaining the images of each content digest (enough to connect them)."""
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        if d:
            by_digest[d].append(i)
    pairs = [(a, b) for idx in by_digest.values() for a, b in itertools.pairwise(idx)]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def cosine_pairs(features: torch.Tensor, threshold: float, chunk: int = 2048) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of rows with cosine similarity at least ``threshold``."""
    f = torch.nn.functional.normalize(features.float(), dim=1)
    found: list[np.ndarray] = []
    for start in range(0, len(f), chunk):
        sim = f[start : start + chunk] @ f.T
        i, j = torch.nonzero(sim >= threshold, as_tuple=True)
        i = i + start
        keep = i < j
        found.append(torch.stack([i[keep], j[keep]], dim=1).numpy())
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def group_pairs(n: int, pairs: Mapping[str, np.ndarray]) -> list[Group]:
    """Connected groups (two or more images) of the pairs of every method."""
    edges = [p for p in pairs.values() if len(p)]
    if not edges:
        return []
    both = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(both)), (both[:, 0], both[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    members: dict[int, list[int]] = defaultdict(list)
    for i in np.unique(both):
        members[int(component[i])].append(int(i))
    methods: dict[int, set[str]] = defaultdict(set)
    for method, p in pairs.items():
        for c in np.unique(component[p[:, 0]]) if len(p) else ():
            methods[int(c)].add(method)
    order = [CONTENT, PHASH, FEATURES]
    groups = [
        Group(tuple(sorted(m)), tuple(x for x in order if x in methods[c]))
        for c, m in members.items()
    ]
    return sorted(groups, key=lambda g: (-len(g.members), g.members))
