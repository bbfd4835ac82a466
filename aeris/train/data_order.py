"""Deterministic, resumable order of training samples.

Epoch e visits the samples in ``permutation(seed, e)``; the whole order is a pure function of
(seed, number of samples), so the data position of a run is one integer (samples consumed)
and a resumed run reads exactly the samples an uninterrupted one would have read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["epoch_permutation", "samples_for_step"]


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def samples_for_step(seed: int, n: int, start: int, count: int) -> np.ndarray:
    """Dataset indices of global-order positions start .. start+count-1 (crossing epochs)."""
    if n <= 0:
        raise ValueError("the training split has no samples")
    pos = np.arange(start, start + count)
    epochs = pos // n
    out = np.empty(count, dtype=np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = epoch_permutation(seed, int(e), n)[pos[sel] % n]
    return out
