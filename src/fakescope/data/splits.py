"""The one way fakescope holds data out: by group, with a seeded hash of the group's key.

A group is what must not straddle a split: a COCOFake parent photo and the fakes generated
from its captions, a CocoGlide (real, edited) pair, the augmented views of one image
(`Sample.group_key`). Training's validation split (`split_samples`), the heads' internal
selection splits and the leave-out protocols all call `split_by_group`; k-fold protocols
(camera photos by device) place a group with `fold_of`, from the same hash.

The key alone decides where a group goes (hash below `fraction`: held out), so every run,
script and refit on a subset agrees on which images were held out. `salt` draws an independent
split from the same keys: a head splitting rows that training already kept hashes with its own
salt, or it would find nothing below the fraction.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from .samples import FAKE, Sample

HEAD_SPLIT = "head"  # the salt of the heads' internal selection splits (early stopping, L2 sweep)


def _hash32(key: str, seed: int, salt: str) -> int:
    text = f"{seed}:{salt}:{key}" if salt else f"{seed}:{key}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def key_hash(key: str, seed: int = 0, salt: str = "") -> float:
    """The key's place in [0, 1]: a seeded SHA-256 (no salt: the hash fakescope always used)."""
    return _hash32(key, seed, salt) / 0xFFFFFFFF


def fold_of(key: str, folds: int, seed: int = 0) -> int:
    """Which of `folds` folds a group falls in (k-fold protocols, e.g. camera photos by device)."""
    return _hash32(key, seed, "") % folds


def split_by_group(groups: Sequence, fraction: float, seed: int = 0, labels: Sequence | None = None,
                   salt: str = "") -> np.ndarray:
    """Boolean mask of held-out rows: whole groups, each held out when its key hashes below `fraction`.

    With `labels`, groups holding a fake and groups holding none are two strata, and a stratum of
    two or more groups keeps at least one group on each side (its lowest hash moved in, or its
    highest moved out), so both classes are held out even on a small set."""
    keys = np.asarray([str(g) for g in groups], dtype=object)
    if not len(keys):
        return np.zeros(0, bool)
    uniq, inv = np.unique(keys, return_inverse=True)
    u = np.array([key_hash(k, seed, salt) for k in uniq])
    held = u < fraction
    if labels is not None and fraction > 0:
        has_fake = np.zeros(len(uniq), bool)
        np.logical_or.at(has_fake, inv, np.asarray(labels) == FAKE)
        for stratum in (has_fake, ~has_fake):
            idx = np.flatnonzero(stratum)
            if len(idx) < 2:
                continue
            if not held[idx].any():
                held[idx[np.argmin(u[idx])]] = True
            elif held[idx].all():
                held[idx[np.argmax(u[idx])]] = False
    return held[inv]


def split_samples(samples: Sequence[Sample], fraction: float, seed: int = 0) -> np.ndarray:
    """Training's validation split: a mask of the held-out samples, by `Sample.group_key`."""
    return split_by_group([s.group_key() for s in samples], fraction, seed)


__all__ = ["HEAD_SPLIT", "fold_of", "key_hash", "split_by_group", "split_samples"]
