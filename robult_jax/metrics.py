"""Evaluation metrics in plain numpy (no sklearn), one function per task.

Shape legend: N samples, C classes (or outputs).

Evaluation runs on host arrays after the jitted forward pass, so these are
numpy functions; `task_metrics` dispatches on the dataset's `task` string
("multiclass" | "multilabel" | "regression", see docs/interfaces.md).

    >>> import numpy as np
    >>> accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]))
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TASKS = ("multiclass", "multilabel", "regression")


def _check_pair(pred: np.ndarray, y: np.ndarray, pred_name: str, y_name: str) -> None:
    if pred.shape != y.shape:
        raise ValueError(f"{pred_name} shape {pred.shape} != {y_name} shape {y.shape}")
    if pred.shape[0] == 0:
        raise ValueError(f"{pred_name} is empty; metrics need at least one sample")


def _check_labels(name: str, labels_N: np.ndarray, num_classes: int) -> None:
    if not np.issubdtype(labels_N.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids, got dtype {labels_N.dtype}")
    if labels_N.size and (labels_N.min() < 0 or labels_N.max() >= num_classes):
        raise ValueError(
            f"{name} must be in [0, {num_classes}), got range [{labels_N.min()}, {labels_N.max()}]"
        )


def accuracy(pred_N: np.ndarray, y_N: np.ndarray) -> float:
    """Fraction of samples with `pred_N == y_N`; both (N,) integer arrays."""
    pred_N, y_N = np.asarray(pred_N), np.asarray(y_N)
    _check_pair(pred_N, y_N, "pred_N", "y_N")
    if pred_N.ndim != 1:
        raise ValueError(f"pred_N must be 1-D, got shape {pred_N.shape}")
    return float(np.mean(pred_N == y_N))


def confusion_matrix(pred_N: np.ndarray, y_N: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    pred_N, y_N = np.asarray(pred_N), np.asarray(y_N)
    _check_pair(pred_N, y_N, "pred_N", "y_N")
    if pred_N.ndim != 1:
        raise ValueError(f"pred_N must be 1-D, got shape {pred_N.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    _check_labels("pred_N", pred_N, num_classes)
    _check_labels("y_N", y_N, num_classes)
    flat = y_N.astype(np.int64) * num_classes + pred_N.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _f1_per_class(tp_C: np.ndarray, fp_C: np.ndarray, fn_C: np.ndarray) -> np.ndarray:
    """F1 = 2 tp / (2 tp + fp + fn); NaN where the class never occurs at all."""
    denom_C = 2 * tp_C + fp_C + fn_C
    with np.errstate(invalid="ignore", divide="ignore"):
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
    """Multi-label metrics, each label decided by `logit > 0` (probability > 0.5).

    `accuracy` is per-label (Hamming) accuracy; `macro_f1` averages F1 over
    labels that occur (same exclusion rule as `macro_f1`); `micro_f1` pools
    all labels.
    """
    logits_NxC, y_NxC = np.asarray(logits_NxC), np.asarray(y_NxC)
    _check_pair(logits_NxC, y_NxC, "logits_NxC", "y_NxC")
    if logits_NxC.ndim != 2:
        raise ValueError(f"logits_NxC must be 2-D, got shape {logits_NxC.shape}")
    pred_NxC, true_NxC = logits_NxC > 0, y_NxC > 0.5
    tp_C = np.sum(pred_NxC & true_NxC, axis=0).astype(np.float64)
    fp_C = np.sum(pred_NxC & ~true_NxC, axis=0).astype(np.float64)
    fn_C = np.sum(~pred_NxC & true_NxC, axis=0).astype(np.float64)
    f1_C = _f1_per_class(tp_C, fp_C, fn_C)
    micro = _f1_per_class(tp_C.sum(keepdims=True), fp_C.sum(keepdims=True), fn_C.sum(keepdims=True))
    return {
        "accuracy": float(np.mean(pred_NxC == true_NxC)),
        # All labels absent everywhere and never predicted: perfect agreement.
        "macro_f1": float(np.nanmean(f1_C)) if np.any(~np.isnan(f1_C)) else 1.0,
        "micro_f1": float(micro[0]) if not np.isnan(micro[0]) else 1.0,
    }


def regression_metrics(pred_N: np.ndarray, y_N: np.ndarray) -> dict[str, float]:
    """`{"mae", "mse"}` for (N,) or (N, 1) predictions."""
    # Why squeeze: the regression head emits (N, 1) while labels are (N,).
    pred_N = np.asarray(pred_N, dtype=np.float64)
    y_N = np.asarray(y_N, dtype=np.float64)
    if pred_N.ndim == 2 and pred_N.shape[1] == 1:
        pred_N = pred_N[:, 0]
    if y_N.ndim == 2 and y_N.shape[1] == 1:
        y_N = y_N[:, 0]
    _check_pair(pred_N, y_N, "pred_N", "y_N")
    err = pred_N - y_N
    return {"mae": float(np.mean(np.abs(err))), "mse": float(np.mean(err**2))}


def task_metrics(outputs: np.ndarray, labels: np.ndarray, *, task: str) -> dict[str, float]:
    """Metrics for a dataset `task`: multiclass, multilabel or regression."""
    if task == "multiclass":
        return classification_metrics(outputs, labels)
    if task == "multilabel":
        return multilabel_metrics(outputs, labels)
    if task == "regression":
        return regression_metrics(outputs, labels)
    raise ValueError(f"data task must be one of {TASKS}, got {task!r}")


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and *population* standard deviation (ddof=0) of `values`.

    Why ddof=0: with the 3-5 seeds typical here it describes the spread of
    the runs actually made, is defined for a single run (std 0), and matches
    `np.std`'s default; say so when comparing to papers that use ddof=1.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {arr.shape}")
    return float(arr.mean()), float(arr.std(ddof=0))
