"""What every loaded dataset goes through: non-finite values, empty rows, a fingerprint.

Shape legend: N samples (rows) of a split, M modalities, S a per-sample shape.

`registry.load_dataset` applies `clean_dataset` to the `Dataset` any loader
returns, so the rules below hold for every dataset, built-in or registered:

1. A sample whose array of a modality holds NaN or +-inf (or, in a raw float64
   array, a value beyond the float32 range, which would become inf) has that
   modality marked missing (mask False) and its values zeroed, counted per
   split and modality. With `data.on_nonfinite = "error"` such a value in a
   present modality stops with a ValueError naming the split, the modality and
   the first rows instead.
2. A row left with every modality missing carries no input: it is dropped and
   counted, in every split.
3. A split left without rows, or a modality missing in every training row, is
   a ValueError.

The counts land in `Dataset.cleaning`, one warning line is logged per split
with non-zero counts, and `fingerprint(dataset)` hashes the cleaned result.
`Dataset.cleaning` has this shape (every split, every modality, zeros
included):

    {"train": {"nonfinite_masked": {"acc": 3, "gyro": 0}, "dropped_all_missing": 2},
     "validation": {...}, "test": {...}}

A loader that already handled some of this itself (e.g. `arrays`, which must
exclude non-finite rows before fitting its normalisation) passes its own counts
in `Dataset.cleaning`; the counts here are added to them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging

from robult_jax.data.types import Dataset, Split

SPLITS = ("train", "validation", "test")
ON_NONFINITE = ("mask", "error")  # values of data.on_nonfinite
_F32_MAX = float(np.finfo(np.float32).max)
MAX_LISTED = 10  # rows named in an error message
Counts = dict[str, Any]  # one split's {"nonfinite_masked": {name: n}, "dropped_all_missing": n}


def rows_text(rows: np.ndarray) -> str:
    """'3, 7, 9' (the first rows, then 'and k more')."""
    shown = ", ".join(str(int(r)) for r in rows[:MAX_LISTED])
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"{shown}{more}"


def on_nonfinite_mode(data_config: Any) -> str:
    """`data.on_nonfinite`, "mask" when the loader's config has no such field."""
    mode = getattr(data_config, "on_nonfinite", None) or "mask"
    if mode not in ON_NONFINITE:
        raise ValueError(
            f"data.on_nonfinite={mode!r}; allowed: {', '.join(map(repr, ON_NONFINITE))}."
        )
    return mode


def nonfinite_rows(x_NxS: np.ndarray) -> np.ndarray:
    """(N,) True where a sample holds NaN, +-inf, or a value beyond float32's range."""
    x_NxS = np.asarray(x_NxS)
    if x_NxS.dtype.kind != "f" or x_NxS.dtype.itemsize <= 4:
        ok_NxS = np.isfinite(x_NxS)  # a float32 cannot exceed float32's range
    else:
        # One comparison catches all three: NaN compares False, inf and overflow exceed it.
        ok_NxS = np.abs(x_NxS) <= _F32_MAX
    # Explicit width (not -1): a split may have no rows.
    return ~ok_NxS.reshape(len(x_NxS), int(np.prod(x_NxS.shape[1:]))).all(axis=1)


def empty_counts(names: tuple[str, ...] | list[str]) -> dict[str, Counts]:
    """All-zero `Dataset.cleaning` for modalities `names` (see the module docstring)."""
    return {
        s: {"nonfinite_masked": dict.fromkeys(names, 0), "dropped_all_missing": 0} for s in SPLITS
    }


def check_present(split_name: str, present_NxM: np.ndarray, names: list[str], where: str) -> None:
    """Raises unless some row has a modality present and, in train, every modality occurs.

    `where` prefixes the message (e.g. "data.npz: "). Rows with every modality
    missing do not count: they are dropped.
    """
    n = len(present_NxM)
    if n == 0:
        raise ValueError(f"{where}the {split_name!r} split has no rows; each split needs one.")
    if not present_NxM.any():
        raise ValueError(
            f"{where}the {split_name!r} split has no rows left: all {n} have every modality "
            "missing (mask, NaN or inf) and are dropped; each split needs at least one row "
            "with a modality present."
        )
    if split_name == "train":
        for j, name in enumerate(names):
            if not present_NxM[:, j].any():
                raise ValueError(
                    f"{where}modality {name!r} is missing in every training row (mask, NaN or "
                    "inf); the model cannot learn it. Drop it from the dataset's modalities "
                    "(data.modalities for your own arrays)."
                )


# Inputs are numpy arrays, or streamed arrays (`robult_jax.data.stream.StreamedArray`:
# rows read from disk on demand), which are scanned chunk by chunk and zeroed or
# sliced lazily, never read whole. Loaders use the same three functions to treat
# both alike (`robult_jax.data.stream`).


def nonfinite_rows_of(x) -> np.ndarray:
    """`nonfinite_rows` of a numpy or a streamed array (the latter chunk by chunk)."""
    if isinstance(x, np.ndarray):
        return nonfinite_rows(x)
    parts = [nonfinite_rows(chunk) for chunk in x.chunks()]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def zero_rows(x, rows_N: np.ndarray):
    """A copy of `x` with `rows_N` (N,) bool set to 0 (a streamed array: zeroed as it is read)."""
    if not isinstance(x, np.ndarray):
        return x.with_zeroed(rows_N)
    x = x.copy()
    x[rows_N] = 0
    return x


def take_rows(x, rows: np.ndarray | slice):
    """The rows `rows` (indices, a slice or a bool mask) of a numpy or a streamed array."""
    return x[rows] if isinstance(x, np.ndarray) else x.take(rows)


def clean_split(
    split: Split, split_name: str, *, on_nonfinite: str = "mask", where: str = ""
) -> tuple[Split, Counts]:
    """`split` with rules 1-3 of the module docstring applied, and its counts.

    Arrays are never modified in place (a Dataset is immutable once built):
    a modality with a non-finite row is copied, a split with dropped rows is
    re-sliced, and an already clean split is returned as it is.
    """
    names = list(split.inputs)
    inputs, mask_NxM = dict(split.inputs), split.mask
    masked = dict.fromkeys(names, 0)
    for j, name in enumerate(names):
        bad_N = nonfinite_rows_of(split.inputs[name])
        if not bad_N.any():
            continue
        # Rows the data already marks absent are zeroed but not counted: nothing is lost there.
        newly_N = bad_N & mask_NxM[:, j]
        if on_nonfinite == "error" and newly_N.any():
            raise ValueError(
                f"{where}the {split_name!r} split: modality {name!r} holds NaN or inf in rows "
                f"{rows_text(np.flatnonzero(newly_N))} (0-based within the split) and "
                "data.on_nonfinite='error'. Fix the data, or set data.on_nonfinite='mask' to "
                f"mark {name!r} missing for those samples."
            )
        masked[name] = int(newly_N.sum())
        inputs[name] = zero_rows(split.inputs[name], bad_N)
        if mask_NxM is split.mask:
            mask_NxM = mask_NxM.copy()
        mask_NxM[:, j] &= ~bad_N
    check_present(split_name, mask_NxM, names, where)
    keep_N = mask_NxM.any(axis=1)
    dropped = int(len(keep_N) - keep_N.sum())
    labels = split.labels
    if dropped:
        inputs = {k: take_rows(v, keep_N) for k, v in inputs.items()}
        labels, mask_NxM = labels[keep_N], mask_NxM[keep_N]
    counts = {"nonfinite_masked": masked, "dropped_all_missing": dropped}
    if mask_NxM is split.mask:
        return split, counts
    return Split(inputs=inputs, labels=labels, mask=mask_NxM), counts


def mark_nonfinite(
    xs: dict[str, np.ndarray],
    present_NxM: np.ndarray,
    split_ids: np.ndarray,
    *,
    on_nonfinite: str,
    where: Callable[[str], str],
) -> dict[str, Counts]:
    """Rule 1 on a loader's raw arrays, before it fits statistics: `Dataset.cleaning`.

    For loaders that normalise (`arrays`), so that no NaN or inf reaches their
    statistics. `xs` {name: (N, *S)} are all rows, `split_ids` (N,) 0/1/2 their
    split; non-finite samples are marked absent in `present_NxM` (in place) and
    counted per split where the mask called them present (a masked-out row
    loses nothing). NaN is the user's documented missing marker there, never an
    error; +-inf and values beyond float32 are an error with
    on_nonfinite="error". `where(name)` names an array in the message.
    """
    cleaning = empty_counts(list(xs))
    for j, (name, x) in enumerate(xs.items()):
        bad_N = nonfinite_rows(x)
        if not bad_N.any():
            continue
        counted_N = bad_N & present_NxM[:, j]
        if on_nonfinite == "error":
            nan_N = np.isnan(x).reshape(len(x), -1).any(axis=1)
            inf_rows = np.flatnonzero(counted_N & ~nan_N)
            if inf_rows.size:
                splits = ", ".join(SPLITS[i] for i in np.unique(split_ids[inf_rows]))
                raise ValueError(
                    f"{where(name)}: rows {rows_text(inf_rows)} (split {splits}) hold infinite "
                    "values (or values beyond float32) and data.on_nonfinite='error'. Mark "
                    "missing entries with NaN (or the mask), fix the values, or set "
                    f"data.on_nonfinite='mask' to mark {name!r} missing for those rows."
                )
        per_split = np.bincount(split_ids[counted_N], minlength=len(SPLITS))
        for i, s in enumerate(SPLITS):
            cleaning[s]["nonfinite_masked"][name] = int(per_split[i])
        present_NxM[:, j] &= ~bad_N
    return cleaning


def _add(a: Counts, b: Counts) -> Counts:
    masked = dict(a.get("nonfinite_masked", {}))
    for name, k in b["nonfinite_masked"].items():
        masked[name] = masked.get(name, 0) + k
    return {
        "nonfinite_masked": masked,
        "dropped_all_missing": a.get("dropped_all_missing", 0) + b["dropped_all_missing"],
    }


def _summary(counts: Counts) -> str:
    """One line for a split's non-zero counts ("" when all are zero)."""
    parts = []
    masked = {k: v for k, v in counts["nonfinite_masked"].items() if v}
    if masked:
        rows = ", ".join(f"{name} in {k} rows" for name, k in masked.items())
        parts.append(f"NaN/inf values marked the modality missing ({rows})")
    if counts["dropped_all_missing"]:
        parts.append(f"dropped {counts['dropped_all_missing']} rows with every modality missing")
    return "; ".join(parts)


def clean_dataset(dataset: Dataset, *, on_nonfinite: str = "mask") -> Dataset:
    """`dataset` with every split cleaned and the counts in `Dataset.cleaning`."""
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite={on_nonfinite!r}; allowed: {ON_NONFINITE}.")
    where = f"dataset {dataset.spec.name!r}: "
    splits, cleaning = {}, {}
    for s in SPLITS:
        splits[s], counts = clean_split(
            getattr(dataset, s), s, on_nonfinite=on_nonfinite, where=where
        )
        cleaning[s] = _add(dataset.cleaning.get(s, {}), counts)
        line = _summary(cleaning[s])
        if line:
            logging.warning("%s%s split: %s (counts in Dataset.cleaning).", where, s, line)
    return dataclasses.replace(dataset, **splits, cleaning=cleaning)


def _hash_array(h, key: str, a) -> None:
    """Header (key, dtype, shape), then the raw bytes; a streamed array
    (`robult_jax.data.stream.StreamedArray`) in chunks, never read whole."""
    if not hasattr(a, "chunks"):
        a = np.ascontiguousarray(a)
    # The header fixes how many bytes follow, so no two datasets share a byte stream.
    h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
    for chunk in a.chunks() if hasattr(a, "chunks") else (a,):
        h.update(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))


def fingerprint(dataset: Dataset) -> str:
    """sha256 hex digest of the spec and of every split's inputs, labels and mask.

    Covered, in a fixed order: the spec (`dataclasses.asdict`, JSON with sorted
    keys); for train, validation, test: each modality's inputs (spec order),
    the labels and the mask, each as dtype, shape and raw bytes; then the
    normalisation statistics (`input_stats`) when the loader recorded them.
    So any changed value, label, mask bit, row order or spec field changes it.
    Hashes the contiguous buffers directly (no per-row Python): ~1 GB/s.
    """
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(dataset.spec), sort_keys=True).encode())
    for s in SPLITS:
        split = getattr(dataset, s)
        for name in dataset.spec.modality_names:
            _hash_array(h, f"{s}/inputs/{name}", split.inputs[name])
        _hash_array(h, f"{s}/labels", split.labels)
        _hash_array(h, f"{s}/mask", split.mask)
    stats = dataset.input_stats or {}
    for name in sorted(stats):
        for stat in ("mean", "std"):
            _hash_array(h, f"input_stats/{name}/{stat}", np.asarray(stats[name][stat]))
    return h.hexdigest()
