"""Per-feature standardisation fitted on a training split.

Shape legend: N samples (rows), S the per-sample shape.

Features are the last axis: a time series (N, T, F) gets one mean and std per
channel over all rows and steps, a vector (N, D) one per dimension. A 2-D
image (N, H, W) has no channel axis: one mean and std for all its pixels. The
last channel of a "sequence" modality (its 0/1 validity flag) is left as it
is. The statistics are fitted in float64 on the train split's present rows
only and recorded in `Dataset.input_stats`, so that `robult_jax.predict`
standardises new inputs with the same `prepare` and bit-identical results.
The `arrays` loader fits with `fit_stats`; watch, mfeat and tfds with
`robult_jax.data.stream.standardised_dataset`, which fits the same numbers in
chunked passes over numpy or streamed splits (bit-identical for vector and
time-series modalities).
"""

import numpy as np

Stats = dict[str, np.ndarray]  # {"mean": ..., "std": ...}, float64, broadcastable to S


def nan_rows(x_NxS: np.ndarray) -> np.ndarray:
    """(N,) True where a sample's array holds any NaN (= modality missing)."""
    return np.isnan(x_NxS).reshape(len(x_NxS), -1).any(axis=1)


def fit_stats(x_NxS: np.ndarray, present_N: np.ndarray, kind: str) -> Stats:
    """Per-feature (last axis) mean and std over the present rows, float64."""
    x = np.asarray(x_NxS, np.float64)[present_N]
    # A 2-D image has no channel axis: one mean / std for all its pixels.
    axes = tuple(range(x.ndim)) if kind == "image" and x.ndim == 3 else tuple(range(x.ndim - 1))
    mean, std = x.mean(axis=axes), x.std(axis=axes)
    # Floor on std: a constant feature would otherwise divide by zero.
    std = np.maximum(std, 1e-6)
    if kind == "sequence":  # the last channel is a 0/1 validity flag: leave it as it is
        mean[..., -1], std[..., -1] = 0.0, 1.0
    return {"mean": mean, "std": std}


def standardise(x_NxS: np.ndarray, stats: Stats) -> np.ndarray:
    """(x - mean) / std in float64."""
    return (np.asarray(x_NxS, np.float64) - stats["mean"]) / stats["std"]


def prepare(
    x_NxS: np.ndarray, present_N: np.ndarray, stats: Stats | None
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 model input, presence): NaN rows absent, standardised, absent rows zeroed.

    The same function prepares training data (`robult_jax.data.arrays`) and
    new data (`robult_jax.predict`), so both see bit-identical inputs.
    """
    present_N = present_N & ~nan_rows(x_NxS)
    x = np.asarray(x_NxS, np.float64) if stats is None else standardise(x_NxS, stats)
    keep = present_N.reshape((-1,) + (1,) * (x.ndim - 1))
    return np.where(keep, x, 0.0).astype(np.float32), present_N
