"""Semi-supervised batch sampling: label splits, modality dropout, batches.

Shape legend: N examples in the split, M modalities, B batch size.

Everything random here is a pure function of `(seed, stream, counter)`:
`np.random.default_rng((seed, STREAM, counter))`. So batch `step` of a run is
the same whether or not batches 0..step-1 were drawn, and a resumed run sees
exactly the batches an uninterrupted run would (no sampler state to save).

Labeled and unlabeled sets are each traversed in epoch-wise permutations:
row r of batch `step` takes position p = step * batch + r of an endless
stream, epoch e = p // n_set, and index perm_e[p % n_set] with
perm_e = default_rng((seed, stream, e)).permutation(n_set). Each labeled
sample is therefore seen exactly once per labeled epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from robult_jax import files
from robult_jax.data.types import Split

# Independent random streams (arbitrary distinct constants).
_LABEL_SPLIT_STREAM = 0x1AB5
_LABELED_STREAM = 0x1AB1
_UNLABELED_STREAM = 0x0B1A
_DROPOUT_STREAM = 0xD409
_UNSTRATIFIED_ID = 2**31  # label_split sub-stream when labels are not classes


def label_split(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Sorted indices of the labeled training examples.

    For (N,) integer labels the split is stratified: class c with n_c examples
    gets round(rate * n_c) labeled examples, at least 1. Other label kinds
    (multilabel, regression) get round(rate * N) uniformly chosen, at least 1.

    Args:
      labels: (N,) int class labels, or (N, ...) labels of another task.
      rate: fraction of labeled examples, in (0, 1] (config `data.label_rate`).
      seed: non-negative int (config `sampling.label_seed`).

    Returns:
      (n_labeled,) int64 sorted indices into the split.
    """
    if not (0.0 < rate <= 1.0):
        raise ValueError(f"data.label_rate must be in (0, 1], got {rate!r}.")
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        raise ValueError("label_split: the training split is empty.")
    if rate == 1.0:
        return np.arange(n, dtype=np.int64)

    def take(pool: np.ndarray, stream_id: int) -> np.ndarray:
        # round half up (not Python's banker's rounding); at least one.
        k = min(len(pool), max(1, int(np.floor(rate * len(pool) + 0.5))))
        # One stream per class: classes do not shift each other's draws.
        rng = np.random.default_rng((seed, _LABEL_SPLIT_STREAM, stream_id))
        return rng.choice(pool, size=k, replace=False)

    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        chosen = [take(np.flatnonzero(labels == c), int(c)) for c in np.unique(labels)]
        idx = np.concatenate(chosen)
    else:
        idx = take(np.arange(n), _UNSTRATIFIED_ID)
    return np.sort(idx).astype(np.int64)


def indices_sha256(idx: np.ndarray) -> str:
    """sha256 of an index array as int64 (shape-independent of platform ints)."""
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()


def save_label_split(
    path: str | os.PathLike,
    idx: np.ndarray,
    *,
    rate: float,
    seed: int,
    dataset: str | None = None,
    fingerprint: str | None = None,
) -> None:
    """Writes the labeled indices, rate, seed, dataset, data fingerprint and their hash as JSON."""
    idx = np.asarray(idx, dtype=np.int64)
    record = {
        "rate": float(rate),
        "seed": int(seed),
        "dataset": dataset,
        "fingerprint": fingerprint,
        "num_labeled": len(idx),
        "sha256": indices_sha256(idx),
        "indices": idx.tolist(),
    }
    files.atomic_write(path, json.dumps(record).encode())


def load_label_split(
    path: str | os.PathLike,
    *,
    rate: float | None = None,
    seed: int | None = None,
    dataset: str | None = None,
    fingerprint: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Reads a label split written by `save_label_split`.

    Checks the indices against their sha256, and the saved rate, seed, dataset
    and data fingerprint against the arguments given (None: not checked).
    Returns (indices, info) with info holding the saved fields but the indices.
    """
    record = files.read_json(path)
    idx = np.asarray(record.pop("indices"), dtype=np.int64)
    if indices_sha256(idx) != record["sha256"] or len(idx) != record["num_labeled"]:
        raise ValueError(f"{path}: label split indices do not match their sha256.")
    for field, want in (("rate", rate), ("seed", seed)):
        if want is not None and record[field] != want:
            raise ValueError(
                f"{path} holds the labeled split of sampling.label_{field}={record[field]}, not "
                f"the {want} asked for; use a new --workdir (nothing was changed)."
            )
    for field, want in (("dataset", dataset), ("fingerprint", fingerprint)):
        if want is not None and record.get(field) != want:
            raise ValueError(
                f"{path} holds the labeled split of other data (its {field} is "
                f"{record.get(field)!r}, this run's is {want!r}); use a new --workdir (nothing "
                "was changed)."
            )
    return idx, record


def modality_dropout_mask(
    n: int,
    m: int,
    rate: float | Sequence[float],
    rng: np.random.Generator,
    data_mask: np.ndarray | None = None,
) -> np.ndarray:
    """(n, m) bool presence mask after training-time modality dropout.

    Each modality present in `data_mask` (default: all) is dropped with
    probability `rate` (a float, or one rate per modality). A row that would
    lose all its present modalities keeps one of them, chosen uniformly.
    Absent modalities never become present; a row with no modality in the
    data stays empty.
    """
    rates = _dropout_rates(rate, m)
    present = np.ones((n, m), bool) if data_mask is None else np.asarray(data_mask, bool)
    if present.shape != (n, m):
        raise ValueError(f"data_mask has shape {present.shape}, expected {(n, m)}.")
    # Draw all uniforms even when rate == 0 so the rng advances the same way.
    u = rng.random((n, m))
    pick = rng.random(n)
    keep = present & (u >= rates[None, :])
    lost_all = ~keep.any(axis=1) & present.any(axis=1)
    if lost_all.any():
        rows = np.flatnonzero(lost_all)
        counts = present[rows].sum(axis=1)
        # k-th present modality, k uniform in [0, count).
        k = np.minimum((pick[rows] * counts).astype(np.int64), counts - 1)
        cols = np.argmax(np.cumsum(present[rows], axis=1) > k[:, None], axis=1)
        keep[rows, cols] = True
    return keep


def _dropout_rates(rate: float | Sequence[float], m: int) -> np.ndarray:
    """(m,) float64 dropout rates from one rate or one per modality, checked."""
    rates = np.asarray(rate, dtype=np.float64)
    if rates.ndim == 0:
        rates = np.full((m,), float(rates))
    if rates.shape != (m,):
        raise ValueError(
            f"data.modality_dropout_rates has {rates.size} entries but the dataset has {m} "
            "modalities; give one rate per modality, in the dataset's modality order."
        )
    if not np.all((rates >= 0.0) & (rates < 1.0)):
        raise ValueError(f"data.modality_dropout must be in [0, 1), got {rate!r}.")
    return rates


def _stream(
    idx: np.ndarray, batch: int, step: int, seed: int, stream: int, perms: dict | None = None
) -> np.ndarray:
    """`idx` at positions step*batch .. step*batch+batch-1 of its epoch-permuted stream.

    `perms`: a cache of the epochs' permutations (a batch draws from one or
    two epochs, and an epoch lasts len(idx) / batch steps), which saves most
    of the sampler's time; the values do not depend on it.
    """
    pos = step * batch + np.arange(batch, dtype=np.int64)
    first, last = int(pos[0]) // len(idx), int(pos[-1]) // len(idx)  # epochs
    if first == last:  # the usual case: one epoch
        return idx[_permutation(len(idx), seed, stream, first, perms)[pos - first * len(idx)]]
    epoch, offset = np.divmod(pos, len(idx))
    out = np.empty(batch, dtype=np.int64)
    for e in range(first, last + 1):
        sel = epoch == e
        out[sel] = _permutation(len(idx), seed, stream, e, perms)[offset[sel]]
    return idx[out]


def _permutation(n: int, seed: int, stream: int, epoch: int, perms: dict | None) -> np.ndarray:
    key = (n, seed, stream, epoch)
    perm = None if perms is None else perms.get(key)
    if perm is None:
        perm = np.random.default_rng((seed, stream, epoch)).permutation(n)
        if perms is not None:
            if len(perms) >= 8:  # two streams, two epochs each at most in use
                perms.clear()
            perms[key] = perm
    return perm


def _gather(split: Split, rows: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Fancy-indexed copies of the rows, with absent modalities zeroed."""
    inputs = {}
    for i, (name, x) in enumerate(split.inputs.items()):
        xb = x[rows]  # fancy indexing copies: the split is never mutated
        xb[~mask[:, i]] = 0
        inputs[name] = xb
    return inputs


class SemiSupervisedSampler:
    """Batches of `labeled_batch` labeled rows followed by `unlabeled_batch` unlabeled rows.

    Unlabeled rows come from the training indices not in `labeled_idx`. When
    every example is labeled (label rate 1.0) the unlabeled rows are drawn
    from all training indices instead, still marked `is_labeled=False` with
    labels zeroed, so batch shapes do not depend on the label rate.
    """

    def __init__(
        self,
        split: Split,
        labeled_idx: np.ndarray,
        *,
        labeled_batch: int,
        unlabeled_batch: int,
        modality_dropout: float | Sequence[float],
        seed: int,
    ):
        n = len(split)
        # Batch sizes and seed come checked from config.py; the indices from
        # `label_split` (distinct, at least one), perhaps via a file of another split.
        labeled_idx = np.sort(np.asarray(labeled_idx, dtype=np.int64))
        if not 0 <= labeled_idx[0] <= labeled_idx[-1] < n:
            raise ValueError(f"labeled_idx must lie in [0, {n}).")
        self.split = split
        self.labeled_idx = labeled_idx
        unlabeled = np.setdiff1d(np.arange(n, dtype=np.int64), self.labeled_idx)
        self.unlabeled_idx = unlabeled if len(unlabeled) else np.arange(n, dtype=np.int64)
        self.labeled_batch = int(labeled_batch)
        self.unlabeled_batch = int(unlabeled_batch)
        self.batch_size = self.labeled_batch + self.unlabeled_batch
        # One rate per modality (train-time patterns may differ from test's).
        self.modality_dropout = _dropout_rates(modality_dropout, split.mask.shape[1])
        self.seed = seed
        self._perms: dict = {}  # epoch permutations of the index streams (`_stream`)

    def indices(self, step: int) -> np.ndarray:
        """(B,) split indices of batch `step` (labeled rows first)."""
        lab = _stream(
            self.labeled_idx, self.labeled_batch, step, self.seed, _LABELED_STREAM, self._perms
        )
        unl = _stream(
            self.unlabeled_idx, self.unlabeled_batch, step, self.seed, _UNLABELED_STREAM,
            self._perms,
        )  # fmt: skip
        return np.concatenate([lab, unl])

    def batch(self, step: int, rows: slice | None = None) -> dict:
        """The batch of training step `step`: a pure function of (seed, step).

        `rows`: only these rows of it (one process's share, `data.pipeline`). The
        indices and dropout draws are the whole batch's, so shares concatenate to
        it; only the inputs, the costly part, are gathered for `rows` alone.
        """
        idx = self.indices(step)
        rng = np.random.default_rng((self.seed, _DROPOUT_STREAM, step))
        mask = modality_dropout_mask(
            len(idx), self.split.mask.shape[1], self.modality_dropout, rng, self.split.mask[idx]
        )
        is_labeled = np.arange(self.batch_size) < self.labeled_batch
        if rows is not None:
            idx, mask, is_labeled = idx[rows], mask[rows], is_labeled[rows]
        labels = self.split.labels[idx]
        # Zero the labels of unlabeled rows so no code path can leak them.
        labels[~is_labeled] = 0
        return {
            "inputs": _gather(self.split, idx, mask),
            "mask": mask,
            "labels": labels,
            "is_labeled": is_labeled,
        }


def _pad(x: np.ndarray, pad: int) -> np.ndarray:
    """`x` with `pad` zero rows appended."""
    return np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])


def iterate_eval_batches(
    split: Split, batch_size: int, mask: np.ndarray | None = None, rows: slice | None = None
) -> Iterator[dict]:
    """Fixed-size evaluation batches over the whole split, in order.

    The last batch is padded to `batch_size` so a jitted eval step compiles
    once; `valid` (B,) marks real rows. Padding rows have zero inputs, zero
    labels and an all-present mask (an all-absent row could divide by zero in
    fusion code). `mask` (N, M) is an evaluation missingness pattern, ANDed
    with the data's own mask; absent modalities get zero inputs.

    `rows`: only these positions of each batch (one process's share,
    `data.pipeline.process_rows`) get their inputs, the costly part, gathered;
    "mask", "labels" and "valid" stay whole batches.

    Yields dicts {"inputs", "mask", "labels", "valid"}.
    """
    n, m = split.mask.shape
    full = split.mask if mask is None else split.mask & np.asarray(mask, bool)
    if full.shape != (n, m):
        raise ValueError(f"eval mask has shape {np.shape(mask)}, expected {(n, m)}.")
    share = slice(None) if rows is None else rows
    share_size = len(range(batch_size)[share])
    for start in range(0, n, batch_size):
        batch_rows = np.arange(start, min(start + batch_size, n))
        pad = batch_size - len(batch_rows)
        mask_b = np.concatenate([full[batch_rows], np.ones((pad, m), bool)])
        # The real rows among the share's positions; the rest of the share is padding.
        local = batch_rows[share]
        gathered = _gather(split, local, full[local])
        yield {
            "inputs": {name: _pad(xb, share_size - len(local)) for name, xb in gathered.items()},
            "mask": mask_b,
            "labels": _pad(split.labels[batch_rows], pad),
            "valid": np.arange(batch_size) < len(batch_rows),
        }
