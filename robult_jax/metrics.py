"""Evaluation metrics in plain numpy (no sklearn), one function per task.

Shape legend: N samples, C classes (or outputs).

Evaluation runs on host arrays after the jitted forward pass, so these are
numpy functions; `robult_jax.tasks` picks the one of a dataset's task
(`tasks.get(spec.task).metrics`) and names its primary metric. The last
functions summarise results: spreads over mask seeds (`mean_std`) and over
training seeds (`seed_stats`), and the robustness area (`rate_auc`).

    >>> import numpy as np
    >>> accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]))
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Direction of every metric the functions below return: True = higher is better.
HIGHER_IS_BETTER = {
    "accuracy": True,
    "macro_f1": True,
    "micro_f1": True,
    "weighted_f1": True,
    "samples_f1": True,
    "subset_accuracy": True,
    "mae": False,
    "mse": False,
    "pearson": True,
    "acc2": True,
    "f1_2": True,
    "acc2_nonneg": True,
    "f1_2_nonneg": True,
    "acc7": True,
    "acc5": True,
}


def _check_pair(pred: np.ndarray, y: np.ndarray, pred_name: str, y_name: str) -> None:
    if pred.shape != y.shape:
        raise ValueError(f"{pred_name} shape {pred.shape} != {y_name} shape {y.shape}")
    if pred.shape[0] == 0:
        raise ValueError(f"{pred_name} is empty; metrics need at least one sample")


def _label_pair(pred_N: np.ndarray, y_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_N, y_N = np.asarray(pred_N), np.asarray(y_N)
    _check_pair(pred_N, y_N, "pred_N", "y_N")
    if pred_N.ndim != 1:
        raise ValueError(f"pred_N must be 1-D, got shape {pred_N.shape}")
    return pred_N, y_N


def accuracy(pred_N: np.ndarray, y_N: np.ndarray) -> float:
    """Fraction of samples with `pred_N == y_N`; both (N,) integer arrays."""
    pred_N, y_N = _label_pair(pred_N, y_N)
    return float(np.mean(pred_N == y_N))


def confusion_matrix(pred_N: np.ndarray, y_N: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    pred_N, y_N = _label_pair(pred_N, y_N)
    for name, labels_N in (("pred_N", pred_N), ("y_N", y_N)):
        if not np.issubdtype(labels_N.dtype, np.integer):
            raise ValueError(f"{name} must be integer class ids, got dtype {labels_N.dtype}")
        if labels_N.min() < 0 or labels_N.max() >= num_classes:
            raise ValueError(
                f"{name} must be in [0, {num_classes}), "
                f"got range [{labels_N.min()}, {labels_N.max()}]"
            )
    flat = y_N.astype(np.int64) * num_classes + pred_N.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _f1_per_class(tp_C: np.ndarray, fp_C: np.ndarray, fn_C: np.ndarray) -> np.ndarray:
    """F1 = 2 tp / (2 tp + fp + fn); NaN where the class never occurs at all."""
    denom_C = 2 * tp_C + fp_C + fn_C
    return np.where(denom_C > 0, 2 * tp_C / np.maximum(denom_C, 1), np.nan)


def macro_f1(pred_N: np.ndarray, y_N: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur.

    Choice: a class absent from both the truth and the predictions has an
    undefined F1 (0/0) and is excluded from the mean; this equals sklearn's
    `f1_score(average="macro")` with default `labels` (the union of labels
    seen in y_true and y_pred). A class that is predicted but never true (or
    true but never predicted) counts with F1 = 0.
    """
    cm_CxC = confusion_matrix(pred_N, y_N, num_classes)
    tp_C = np.diag(cm_CxC).astype(np.float64)
    fp_C = cm_CxC.sum(axis=0) - tp_C
    fn_C = cm_CxC.sum(axis=1) - tp_C
    return float(np.nanmean(_f1_per_class(tp_C, fp_C, fn_C)))


def classification_metrics(logits_NxC: np.ndarray, y_N: np.ndarray) -> dict[str, float]:
    """`{"accuracy", "macro_f1"}` for multiclass logits (argmax decides)."""
    logits_NxC, y_N = np.asarray(logits_NxC), np.asarray(y_N)
    if logits_NxC.ndim != 2 or y_N.shape != logits_NxC.shape[:1]:
        raise ValueError(
            f"logits_NxC shape {logits_NxC.shape} does not match y_N shape {y_N.shape}"
        )
    pred_N = np.argmax(logits_NxC, axis=-1)
    return {
        "accuracy": accuracy(pred_N, y_N),
        "macro_f1": macro_f1(pred_N, y_N, logits_NxC.shape[-1]),
    }


def multilabel_metrics(logits_NxC: np.ndarray, y_NxC: np.ndarray) -> dict[str, float]:
    """Multi-label metrics (MM-IMDb), each label decided by `logit > 0` (probability > 0.5).

    scikit-learn's conventions for label-indicator arrays, which MultiBench
    uses: every one of the C labels counts, and an F1 of 0/0 (no true and no
    predicted positive) is 0, as with sklearn's default `zero_division`.

    - `micro_f1`: F1 of the pooled counts over all labels (`average="micro"`).
    - `macro_f1`: unweighted mean of the C per-label F1 (`average="macro"`).
    - `weighted_f1`: per-label F1 weighted by true support (`average="weighted"`).
    - `samples_f1`: mean over samples of 2|P & T| / (|P| + |T|) (`average="samples"`).
    - `accuracy`: per-label (Hamming) accuracy; `subset_accuracy`: exact-match ratio.

    >>> out = multilabel_metrics(np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1, 0], [0, 1]]))
    >>> out["micro_f1"]  # tp = 2, fp = 1, fn = 0
    0.8
    """
    logits_NxC, y_NxC = np.asarray(logits_NxC), np.asarray(y_NxC)
    _check_pair(logits_NxC, y_NxC, "logits_NxC", "y_NxC")
    if logits_NxC.ndim != 2:
        raise ValueError(f"logits_NxC must be 2-D, got shape {logits_NxC.shape}")
    pred_NxC, true_NxC = logits_NxC > 0, y_NxC > 0.5
    tp_C = np.sum(pred_NxC & true_NxC, axis=0).astype(np.float64)
    fp_C = np.sum(pred_NxC & ~true_NxC, axis=0).astype(np.float64)
    fn_C = np.sum(~pred_NxC & true_NxC, axis=0).astype(np.float64)
    f1_C = np.nan_to_num(_f1_per_class(tp_C, fp_C, fn_C))
    micro = np.nan_to_num(_f1_per_class(tp_C.sum(), fp_C.sum(), fn_C.sum()))
    support_C = tp_C + fn_C
    inter_N = np.sum(pred_NxC & true_NxC, axis=1)
    sizes_N = np.sum(pred_NxC, axis=1) + np.sum(true_NxC, axis=1)
    samples_N = np.where(sizes_N > 0, 2 * inter_N / np.maximum(sizes_N, 1), 0.0)
    return {
        "accuracy": float(np.mean(pred_NxC == true_NxC)),
        "subset_accuracy": float(np.mean(np.all(pred_NxC == true_NxC, axis=1))),
        "micro_f1": float(micro),
        "macro_f1": float(np.mean(f1_C)),
        "weighted_f1": float(np.sum(f1_C * support_C) / max(support_C.sum(), 1.0)),
        "samples_f1": float(np.mean(samples_N)),
    }


def pearson(x_N: np.ndarray, y_N: np.ndarray) -> float:
    """Pearson correlation of two (N,) arrays; 0 when either side is constant.

    Why 0 and not nan: a constant predictor (a common early-training collapse)
    carries no linear information, and a nan would break model selection and
    the mean over seeds.
    """
    x_N = np.asarray(x_N, np.float64) - np.mean(x_N)
    y_N = np.asarray(y_N, np.float64) - np.mean(y_N)
    denom = np.sqrt(np.sum(x_N**2) * np.sum(y_N**2))
    return float(np.sum(x_N * y_N) / denom) if denom > 0 else 0.0


def _binary_acc_f1(pred_N: np.ndarray, true_N: np.ndarray) -> tuple[float, float]:
    """Accuracy and sklearn's `f1_score(average="weighted")` of bool arrays; nan if empty."""
    if not len(true_N):
        return float("nan"), float("nan")
    total = 0.0
    for cls in (False, True):
        p, t = pred_N == cls, true_N == cls
        tp, fp, fn = np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)
        if tp + fn:  # classes without true support have weight 0
            total += (tp + fn) * 2 * tp / (2 * tp + fp + fn)
    return float(np.mean(pred_N == true_N)), float(total / len(true_N))


def regression_metrics(pred_N: np.ndarray, y_N: np.ndarray) -> dict[str, float]:
    """CMU-MOSI/MOSEI metrics (MulT's `eval_metrics.py` conventions) for a [-3, 3] score.

    - `mae`, `mse`; `pearson` (0 when either side is constant).
    - `acc2`, `f1_2`: accuracy and weighted F1 of `pred > 0` vs `y > 0` over the
      samples with y != 0 (neg/pos, zeros excluded); nan if every y is 0.
    - `acc2_nonneg`, `f1_2_nonneg`: `pred >= 0` vs `y >= 0` over all samples.
    - `acc7` / `acc5`: `round(clip(pred)) == round(clip(y))` with clipping to
      [-3, 3] / [-2, 2]. Rounding is numpy's (half to even, so 2.5 -> 2), as in MulT.

    Accepts (N,) or (N, 1) predictions and labels.
    """
    # Why squeeze: the regression head emits (N, 1) while labels are (N,).
    pred_N, y_N = (np.asarray(a, dtype=np.float64) for a in (pred_N, y_N))
    pred_N, y_N = (a[:, 0] if a.shape[1:] == (1,) else a for a in (pred_N, y_N))
    _check_pair(pred_N, y_N, "pred_N", "y_N")
    if pred_N.ndim != 1:
        raise ValueError(f"pred_N must be (N,) or (N, 1), got shape {pred_N.shape}")
    err = pred_N - y_N
    nz = y_N != 0
    out = {
        "mae": float(np.mean(np.abs(err))),
        "mse": float(np.mean(err**2)),
        "pearson": pearson(pred_N, y_N),
    }
    out["acc2"], out["f1_2"] = _binary_acc_f1(pred_N[nz] > 0, y_N[nz] > 0)
    out["acc2_nonneg"], out["f1_2_nonneg"] = _binary_acc_f1(pred_N >= 0, y_N >= 0)
    for name, bound in (("acc7", 3.0), ("acc5", 2.0)):
        classes = [np.round(np.clip(v, -bound, bound)) for v in (pred_N, y_N)]
        out[name] = float(np.mean(classes[0] == classes[1]))
    return out


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and *population* standard deviation (ddof=0) of `values`.

    Used for the spread over the mask seeds inside one run
    (`evaluate.evaluate_random_missing`): it describes the masks actually
    drawn and is defined for one mask (std 0). The spread over training seeds,
    an estimate of run-to-run variation, is `seed_stats`'s sample std.
    """
    arr = _values_1d(values)
    return float(arr.mean()), float(arr.std(ddof=0))


def _values_1d(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {arr.shape}")
    return arr


# t_{0.975, df}, df = 1..30: the two-sided 95% quantiles of Student's t
# (scipy.stats.t.ppf(0.975, df), 4 decimals). Why a table: scipy is not a dependency.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, the factor of a two-sided 95% t-interval; `df >= 1`.

    The table above for df <= 30; beyond, the Cornish-Fisher expansion around
    the normal quantile z (error < 1e-4 for df > 30).

    >>> t_quantile_975(2), round(t_quantile_975(100), 3)
    (4.3027, 1.984)
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def seed_stats(values: Sequence[float] | np.ndarray) -> dict:
    """`{"mean", "std", "ci95", "n", "values"}` of one value per training seed.

    `std` is the *sample* standard deviation (ddof=1), `ci95` the half-width
    of the 95% t-interval of the mean, t_{0.975, n-1} * std / sqrt(n). Both
    are None for n = 1 (a spread is undefined from one run: it is not 0).

    >>> out = seed_stats([0.8, 0.9, 1.0])
    >>> out["mean"], out["std"], out["ci95"], out["n"]  # 4.3027 * 0.1 / sqrt(3)
    (0.9, 0.1, 0.2484, 3)
    """
    arr = _values_1d(values)
    n = int(arr.size)
    std = float(arr.std(ddof=1)) if n > 1 else None
    ci95 = t_quantile_975(n - 1) * std / np.sqrt(n) if std is not None else None
    return {
        "mean": float(arr.mean()),
        "std": std,
        "ci95": None if ci95 is None else float(ci95),
        "n": n,
        "values": [float(v) for v in arr],
    }


def rate_auc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Area under a metric-vs-missing-rate curve divided by the rate span.

    Trapezoid rule over the rates given (sorted here), so the result is a mean
    of the metric over [min rate, max rate]: on the scale of the metric
    itself, and comparable between runs only over the same rates. Needs two
    distinct rates or more.

    >>> rate_auc([0.0, 0.5, 1.0], [0.9, 0.7, 0.3])  # (0.8 * 0.5 + 0.5 * 0.5) / 1
    0.65
    """
    r_K, v_K = np.asarray(rates, np.float64), np.asarray(values, np.float64)
    if r_K.shape != v_K.shape or r_K.ndim != 1:
        raise ValueError(f"rates shape {r_K.shape} != values shape {v_K.shape}")
    order = np.argsort(r_K)
    r_K, v_K = r_K[order], v_K[order]
    span = r_K[-1] - r_K[0] if r_K.size else 0.0
    if span <= 0:
        raise ValueError(f"rate_auc needs two distinct rates or more, got {r_K.tolist()}")
    return float(np.trapezoid(v_K, r_K) / span)
