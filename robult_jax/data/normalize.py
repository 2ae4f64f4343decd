"""Per-feature standardisation fitted on a training split (watch, mfeat).

Features are the last axis: a time series (N, T, F) gets one mean and std per
channel over all windows and steps, a vector (N, D) one per dimension. The
statistics are returned so that loaders can record them in
`Dataset.input_stats` (prediction applies the same transform to raw inputs).
"""

import numpy as np

from robult_jax.data.types import Split


def fit_normaliser(split: Split) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-feature (mean, std) of each modality over every row (and step) of `split`."""
    stats = {}
    for name, x in split.inputs.items():
        x64 = x.reshape(-1, x.shape[-1]).astype(np.float64)
        # Floor on std: a constant feature would otherwise divide by zero.
        stats[name] = (x64.mean(axis=0), np.maximum(x64.std(axis=0), 1e-6))
    return stats


def apply_normaliser(split: Split, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> Split:
    inputs = {
        name: ((x - stats[name][0]) / stats[name][1]).astype(np.float32)
        for name, x in split.inputs.items()
    }
    return Split(inputs=inputs, labels=split.labels, mask=split.mask)
