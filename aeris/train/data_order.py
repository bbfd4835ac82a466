"""Deterministic, resumable order of training samples.

Epoch e visits the samples in ``permutation(seed, e)``; the whole order is a pure function of
(seed, number of samples), so the data position of a run is one integer (samples consumed)
and a resumed run reads exactly the samples an uninterrupted one would have read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_for_replica", "epoch_permutation", "samples_for_step", "sample_keys"]


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


def sample_keys(seed: int, step: int, positions, indices) -> list[tuple[int, int, int, int]]:
    """Random-stream keys (noise, sigma) of the samples at global-order `positions` holding
    dataset `indices`: (seed, step, position, index). The position makes two copies of one
    dataset sample in a step (a step crossing an epoch) draw different noise."""
    return [(int(seed), int(step), int(p), int(i)) for p, i in zip(positions, indices)]


def split_for_replica(positions: np.ndarray, dp: int, d: int, micro_batch: int, grad_accum: int) -> list[np.ndarray]:
    """Micro-batches of replica d: its contiguous block of the step's samples (dp blocks of
    micro_batch x grad_accum), cut into grad_accum pieces of micro_batch."""
    per = micro_batch * grad_accum
    if len(positions) != per * dp:
        raise ValueError(f"{len(positions)} samples cannot be split into dp={dp} x grad_accum={grad_accum} "
                         f"x micro_batch={micro_batch}")
    mine = positions[d * per:(d + 1) * per]
    return [mine[k * micro_batch:(k + 1) * micro_batch] for k in range(grad_accum)]
