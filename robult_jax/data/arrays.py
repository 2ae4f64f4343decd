"""arrays: bring your own data as numpy arrays (one .npz file or a directory of .npy).

Shape legend: N samples (rows), M modalities, C classes (or outputs).

docs/own_data.md documents the file layout and the `data.` fields. In short:
one (N, *shape) array per name in `data.modalities` (NaN anywhere in a
sample's array marks that modality missing for that sample; its values are
then zeroed), the labels, an optional (N, M) mask (True = present, columns in
the sorted order of the modality names, that of `Dataset.spec.modalities`)
and an optional (N,) split; without one, the rows are split at random with
seed `data.split_seed`, stratified by class for multiclass. Files are read
with `allow_pickle=False`.

The rules of `robult_jax.data.clean` hold here too, applied before the
normalisation is fitted (so no NaN or inf can reach the statistics): +-inf (or
a value beyond float32) marks the modality missing like NaN, or, with
`data.on_nonfinite = "error"`, stops with the file's rows; NaN stays the
missing marker either way. The rows so marked (NaN or inf, in rows the mask
calls present) are counted in `Dataset.cleaning`; rows left with no modality
are dropped and counted by `clean.clean_dataset` (run by `load_dataset`).

With `data.normalize`, each modality is standardised per feature (see
`normalize`) with mean and std fitted on the train split's *present* entries
only, recorded in `Dataset.input_stats` for `robult_jax.predict`.

Integer class ids must lie in 0..C-1; with `data.num_classes = 0` (inferred)
C is the largest id + 1, which must not exceed the number of rows (else an
error says to set `data.num_classes` or save the labels as strings): checked on
the raw values before anything is allocated per class.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from robult_jax.data import clean
from robult_jax.data.array_file import ArrayFile  # re-exported: arrays.ArrayFile
from robult_jax.data.clean import MAX_LISTED, rows_text
from robult_jax.data.normalize import fit_stats, prepare
from robult_jax.data.types import MODALITY_KINDS, Dataset, DatasetSpec, ModalitySpec, Split
from robult_jax.tasks import NAMES

SPLITS = ("train", "validation", "test")
# Per-sample ranks each kind accepts (the default encoder of the kind must take them).
KIND_RANKS = {"vector": (1,), "timeseries": (2,), "image": (2, 3), "sequence": (2,)}
# Why a cap: the head and the class names grow with C; no data set this loader
# serves has more classes, and a typo (or hashed ids as num_classes) must not OOM.
MAX_CLASSES = 100_000


def _get(data_config: Any, key: str, default: Any) -> Any:
    value = data_config.get(key, default) if hasattr(data_config, "get") else default
    return default if value is None else value


def _labels(
    raw: np.ndarray, where: str, task: str, num_classes: int, class_names: tuple[str, ...]
) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """Checked labels, number of outputs and class names for `task`."""
    if task == "multiclass":
        if raw.ndim != 1:
            raise ValueError(f"{where}: multiclass labels must be (N,), got shape {raw.shape}.")
        if raw.dtype.kind in "US":
            names, ids = np.unique(raw.astype(str), return_inverse=True)
            if num_classes and num_classes != len(names):
                raise ValueError(
                    f"{where}: {len(names)} distinct label strings but data.num_classes="
                    f"{num_classes}."
                )
            return ids.astype(np.int32), len(names), tuple(class_names or names.tolist())
        return _class_ids(raw, where, num_classes, class_names)
    if task == "multilabel":
        if raw.ndim != 2:
            raise ValueError(f"{where}: multilabel labels must be (N, C), got shape {raw.shape}.")
        bad = np.flatnonzero(~np.isin(raw, (0, 1)).all(axis=1))
        if bad.size:
            raise ValueError(f"{where}: multilabel labels must be 0/1; rows {rows_text(bad)}.")
        if num_classes and num_classes != raw.shape[1]:
            raise ValueError(
                f"{where}: labels have {raw.shape[1]} columns but data.num_classes={num_classes}."
            )
        names = class_names or tuple(map(str, range(raw.shape[1])))
        return raw.astype(np.float32), raw.shape[1], names
    # regression
    raw = raw.reshape(len(raw)) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    if raw.ndim != 1 or raw.dtype.kind not in "iuf":
        raise ValueError(
            f"{where}: regression labels must be (N,) numbers, got {raw.shape} {raw.dtype}."
        )
    bad = np.flatnonzero(~np.isfinite(raw))
    if bad.size:
        raise ValueError(f"{where}: regression labels must be finite; rows {rows_text(bad)}.")
    return raw.astype(np.float32), 1, class_names


def _class_ids(
    raw: np.ndarray, where: str, num_classes: int, class_names: tuple[str, ...]
) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """Multiclass integer ids checked against 0..C-1: (ids int32, C, class names).

    Every check compares the raw values (no cast that could wrap around, no
    allocation that grows with an id), so ids offset by 2**40 fail at once.
    """
    if raw.dtype.kind not in "iubf":
        raise ValueError(f"{where}: multiclass labels must be integers, got dtype {raw.dtype}.")
    if raw.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))
        if bad.size:
            raise ValueError(
                f"{where}: multiclass labels must be integer class ids; rows {rows_text(bad)} "
                f"hold {raw[bad][:MAX_LISTED].tolist()}."
            )
    bad = np.flatnonzero(raw < 0)
    if bad.size:
        raise ValueError(
            f"{where}: class ids must be >= 0; rows {rows_text(bad)} hold "
            f"{raw[bad][:MAX_LISTED].tolist()}. Remap them to 0..C-1 or save the labels as "
            "strings (np.asarray(labels, dtype=str)): the distinct strings become the classes."
        )
    n_out = num_classes or len(class_names)
    if not n_out and raw.size:
        largest = raw.max().item()
        # Inferred C = largest id + 1: more classes than rows means ids that are not
        # 0..C-1 (offset, hashed, sparse), and 1 + largest names to allocate.
        if largest >= len(raw):
            raise ValueError(
                f"{where}: the largest class id is {largest} but there are only {len(raw)} "
                "rows; with data.num_classes=0 the number of classes is inferred as the largest "
                "id + 1, so ids must lie in 0..N-1. Set data.num_classes (ids then lie in "
                "0..num_classes-1) or data.class_names, or save the labels as strings "
                "(np.asarray(labels, dtype=str)): the distinct strings become the classes and "
                "their names."
            )
        n_out = int(largest) + 1
    if n_out > MAX_CLASSES:
        raise ValueError(
            f"{where}: data.num_classes={n_out} is more than {MAX_CLASSES} classes, the most "
            "this loader builds a classifier for."
        )
    bad = np.flatnonzero(raw >= n_out)
    if bad.size:
        source = f"{len(class_names)} data.class_names" if class_names else "0 = inferred"
        raise ValueError(
            f"{where}: labels must lie in 0..{n_out - 1} (data.num_classes={num_classes}, "
            f"{source}); rows {rows_text(bad)} hold {raw[bad][:MAX_LISTED].tolist()}."
        )
    if n_out < 2:
        raise ValueError(f"{where}: multiclass labels need at least 2 classes, found {n_out}.")
    return raw.astype(np.int32), n_out, class_names or tuple(map(str, range(n_out)))


def check_modality(where: str, name: str, kind: str, x: np.ndarray) -> np.ndarray:
    """`x` as float64 after checking its dtype and its rank for `kind`.

    Non-finite values pass: the caller decides what they mean (`load_arrays`:
    missing, or an error with data.on_nonfinite="error"; `robult_jax.predict`:
    NaN missing, inf an error).
    """
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{where}: modality {name!r} must hold numbers, got dtype {x.dtype}.")
    if x.ndim - 1 not in KIND_RANKS[kind]:
        raise ValueError(
            f"{where}: modality {name!r} of kind {kind!r} needs a per-sample shape of rank "
            f"{' or '.join(map(str, KIND_RANKS[kind]))}, got {x.shape[1:]} (array {x.shape})."
        )
    return x.astype(np.float64)


def check_mask(where: str, mask: np.ndarray, n: int, names: list[str] | tuple) -> np.ndarray:
    """A user's (N, M) presence mask as bool, columns in the order of `names`."""
    if mask.shape != (n, len(names)) or mask.dtype.kind not in "biu":
        raise ValueError(
            f"{where}: the mask must be (N, M) = {(n, len(names))} bool (or 0/1) with columns "
            f"{', '.join(names)}; got shape {mask.shape}, dtype {mask.dtype}."
        )
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{where}: the mask must hold only True/False (or 0/1).")
    return mask.astype(bool)


def _split_ids(raw: np.ndarray, where: str, n: int) -> np.ndarray:
    """(N,) split ids 0/1/2 from strings or ints."""
    if raw.shape != (n,):
        raise ValueError(f"{where}: the split must be (N,) = ({n},), got shape {raw.shape}.")
    if raw.dtype.kind in "US":
        lookup = {s: i for i, s in enumerate(SPLITS)}
        ids = np.array([lookup.get(v, -1) for v in raw.astype(str).tolist()], np.int64)
    elif raw.dtype.kind in "iu":
        ids = np.where(np.isin(raw, (0, 1, 2)), raw, -1).astype(np.int64)
    else:
        ids = np.full(n, -1)
    bad = np.flatnonzero(ids < 0)
    if bad.size:
        values = sorted({str(v) for v in raw[bad].tolist()})[:MAX_LISTED]
        raise ValueError(
            f"{where}: split values must be 'train', 'validation', 'test' (or 0, 1, 2); "
            f"rows {rows_text(bad)} hold {values}."
        )
    return ids


def random_split(
    labels: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int, stratify: bool
) -> np.ndarray:
    """(N,) split ids 0/1/2: round(fraction * N) validation and test rows, the rest train.

    Stratified: each row's rank within its class (random order), divided by
    the class size, orders the rows; test takes the lowest such quantiles,
    then validation. Every class thus gives each split about its share.
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    if stratify:
        quantile = np.empty(n)
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            quantile[rows] = (np.arange(len(rows)) + 0.5) / len(rows)
        order = np.argsort(quantile, kind="stable")
    else:
        order = rng.permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    n_val = max(1, int(round(val_fraction * n)))
    ids = np.zeros(n, np.int64)
    ids[order[:n_test]] = 2
    ids[order[n_test : n_test + n_val]] = 1
    return ids


def load_arrays(data_config: Any) -> Dataset:
    """Registry entry "arrays": the user's arrays as a Dataset (see the module docstring)."""
    path = os.fspath(_get(data_config, "path", ""))
    if not path:
        raise ValueError(
            "data.path is empty: point it at your .npz file or directory of .npy files, "
            "e.g. --config.data.path=my_data.npz."
        )
    kinds = dict(_get(data_config, "modalities", {}))
    if not kinds:
        raise ValueError("data.modalities is empty; map each modality array name to its kind.")
    for name, kind in kinds.items():
        if kind not in MODALITY_KINDS:
            raise ValueError(
                f"data.modalities[{name!r}] = {kind!r} is not a known kind; allowed: "
                f"{', '.join(MODALITY_KINDS)}."
            )
    names = sorted(kinds)  # the spec order, and the order of the mask columns
    task = _get(data_config, "task", "multiclass")
    if task not in NAMES:
        raise ValueError(f"data.task={task!r} is not one of {', '.join(NAMES)}.")
    label_key = _get(data_config, "label_key", "labels")
    mask_key = _get(data_config, "mask_key", "mask")
    split_key = _get(data_config, "split_key", "split")
    val_fraction = float(_get(data_config, "val_fraction", 0.2))
    test_fraction = float(_get(data_config, "test_fraction", 0.2))

    with ArrayFile(path) as f:
        raw_labels = f.get(label_key, "data.label_key")
        raws = {name: f.get(name, "named in data.modalities") for name in names}
        raw_mask = f.get(mask_key, "data.mask_key") if mask_key and mask_key in f else None
        raw_split = f.get(split_key, "data.split_key") if split_key and split_key in f else None
        where = f.where

    if raw_labels.ndim == 0:
        raise ValueError(f"{where(label_key)}: labels must have one row per sample, got a scalar.")
    n = len(raw_labels)
    for key, arr in [*raws.items(), (mask_key, raw_mask), (split_key, raw_split)]:
        if arr is not None and (arr.ndim == 0 or len(arr) != n):
            rows = "a scalar" if arr.ndim == 0 else f"{len(arr)} rows"
            raise ValueError(
                f"{path}: array {key!r} has {rows} but {label_key!r} has {n}; every array "
                "needs one row per sample, in the same order."
            )
    labels, num_outputs, class_names = _labels(
        raw_labels,
        where(label_key),
        task,
        int(_get(data_config, "num_classes", 0)),
        tuple(_get(data_config, "class_names", ())),
    )
    xs = {name: check_modality(where(name), name, kinds[name], raws[name]) for name in names}
    present_NxM = np.ones((n, len(names)), bool)
    if raw_mask is not None:
        present_NxM = check_mask(where(mask_key), raw_mask, n, names)

    if raw_split is not None:
        split_ids = _split_ids(raw_split, where(split_key), n)
    else:
        if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must "
                "be > 0 with a sum below 1."
            )
        split_ids = random_split(
            labels,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=int(_get(data_config, "split_seed", 0)),
            stratify=task == "multiclass",
        )
    rows = {s: np.flatnonzero(split_ids == i) for i, s in enumerate(SPLITS)}
    cleaning = clean.mark_nonfinite(
        xs, present_NxM, split_ids, on_nonfinite=clean.on_nonfinite_mode(data_config), where=where
    )
    # Checked here, not only in clean_dataset: the statistics below need present train rows.
    for s, r in rows.items():
        clean.check_present(s, present_NxM[r], names, f"{path}: ")
    train_present = present_NxM[rows["train"]]

    stats = None
    if _get(data_config, "normalize", True):
        stats = {
            name: fit_stats(xs[name][rows["train"]], train_present[:, j], kinds[name])
            for j, name in enumerate(names)
        }
    # Non-finite rows are already absent in present_NxM, so prepare's presence adds nothing.
    # Rows with every modality missing stay in: clean_dataset drops and counts them.
    inputs = {
        name: prepare(xs[name], present_NxM[:, j], stats and stats[name])[0]
        for j, name in enumerate(names)
    }
    spec = DatasetSpec(
        name="arrays",
        modalities=tuple(ModalitySpec(name, xs[name].shape[1:], kinds[name]) for name in names),
        task=task,
        num_outputs=num_outputs,
        class_names=class_names,
    )

    def split(r: np.ndarray) -> Split:
        return Split({k: v[r] for k, v in inputs.items()}, labels[r], present_NxM[r])

    return Dataset(spec, *(split(rows[s]) for s in SPLITS), input_stats=stats, cleaning=cleaning)
