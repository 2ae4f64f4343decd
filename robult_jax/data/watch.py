"""watch: smartwatch accelerometer + gyroscope, 7 shoulder exercises.

Source: `seglearn/data/watch_dataset.npy` from PyPI `seglearn==1.2.5`
(BSD-3; Burns et al., arXiv 1802.01489): 140 recordings at 50 Hz, channels
`ax ay az wx wy wz`, 7 classes x 20 recordings, subjects 1..10.

The tensorflow-datasets builder `robult_watch` cuts each recording into
windows of WINDOW=100 samples (2 s) with STRIDE=50 (fixed; changing them means
a new builder VERSION) and stores them as array_record, which tfds reads
without TensorFlow. Splits are by subject, never by window, because windows
of one recording overlap: "train" = subjects 1-7, "test" = subjects 8-10.

`load_watch` builds once into the cache directory, then loads every window
into numpy (or streams them, `data.streaming`), holds subject
`data.val_subject` out of train as the validation split, and standardises
each channel with mean / std fitted on the remaining training windows only (so
no validation or test statistics leak in); the statistics are kept in
`Dataset.input_stats` for `robult_jax.predict`.

Data config fields read:
  data_dir:    cache directory (see `registry.resolve_data_dir`).
  val_subject: training subject held out for validation, 1..7 (default 7).
  source_path: optional explicit path to a watch_dataset.npy (default None:
               found inside the installed seglearn package).
  streaming:   True: windows read from the cache on demand, labels and subjects
               in memory (`robult_jax.data.stream`); default False.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import clean, stream, tfds_io
from robult_jax.data.registry import resolve_data_dir
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

WINDOW = 100  # samples per window: 2 s at 50 Hz
STRIDE = 50  # half-overlapping windows
CLASS_NAMES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
TRAIN_SUBJECTS = (1, 2, 3, 4, 5, 6, 7)
TEST_SUBJECTS = (8, 9, 10)
DEFAULT_VAL_SUBJECT = 7
MODALITIES = {"acc": slice(0, 3), "gyro": slice(3, 6)}  # channel ranges in the source
INSTALL_HINT = "pip install --no-deps seglearn==1.2.5 (or `make setup`)"

WATCH_SPEC = DatasetSpec(
    name="watch",
    modalities=(
        ModalitySpec("acc", (WINDOW, 3), "timeseries"),
        ModalitySpec("gyro", (WINDOW, 3), "timeseries"),
    ),
    task="multiclass",
    num_outputs=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
)


def find_watch_source() -> str:
    """Path of seglearn's watch_dataset.npy, found without importing seglearn."""
    # Why not `import seglearn`: its __init__ pulls in scikit-learn and more;
    # we only need one data file.
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The watch dataset ships inside the seglearn package, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", "watch_dataset.npy")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; reinstall seglearn: {INSTALL_HINT}")
    return path


def read_watch_source(path: str) -> dict[str, Any]:
    """Reads and checks the pickled dict {X, y, subject, side}."""
    raw = np.load(path, allow_pickle=True).item()
    for key in ("X", "y", "subject"):
        if key not in raw:
            raise ValueError(f"{path}: missing key {key!r}; expected keys X, y, subject, side.")
    xs = [np.asarray(x) for x in raw["X"]]
    y = np.asarray(raw["y"]).astype(np.int64)
    subject = np.asarray(raw["subject"]).astype(np.int64)
    if not (len(xs) == len(y) == len(subject)):
        raise ValueError(
            f"{path}: X, y, subject lengths differ ({len(xs)}, {len(y)}, {len(subject)})."
        )
    for i, x in enumerate(xs):
        if x.ndim != 2 or x.shape[1] != 6:
            raise ValueError(f"{path}: X[{i}] has shape {x.shape}; expected (T, 6).")
    if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{path}: y must lie in 0..{len(CLASS_NAMES) - 1}.")
    allowed = set(TRAIN_SUBJECTS + TEST_SUBJECTS)
    if not set(subject.tolist()) <= allowed:
        raise ValueError(f"{path}: subject values must lie in {sorted(allowed)}.")
    return {"X": xs, "y": y, "subject": subject}


def window_starts(length: int) -> range:
    """Start indices of the WINDOW-long, STRIDE-spaced windows of a recording."""
    return range(0, length - WINDOW + 1, STRIDE)


class RobultWatch(tfds_io.PackagedBuilder):
    """tfds builder for the watch windows (array_record, no TensorFlow needed)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"Windows of {WINDOW} samples, stride {STRIDE}."}
    HOMEPAGE = "https://github.com/dmbee/seglearn"
    CITATION = "Burns et al., Shoulder physiotherapy exercise recognition, arXiv 1802.01489."
    LICENSE = "BSD-3-Clause"
    find_source = staticmethod(find_watch_source)

    def _features(self) -> dict[str, Any]:
        return {
            "acc": tfds.features.Tensor(shape=(WINDOW, 3), dtype=np.float32),
            "gyro": tfds.features.Tensor(shape=(WINDOW, 3), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
            "subject": tfds.features.Tensor(shape=(), dtype=np.int32),
            "recording": tfds.features.Tensor(shape=(), dtype=np.int32),
        }

    def _split_generators(self, dl_manager):
        del dl_manager  # local file, nothing to download
        path = self.source_path
        data = read_watch_source(path)
        # Recorded so that a cache built from another file is detected on load.
        self.info.metadata.update(
            source_sha256=tfds_io.file_sha256(path), window=WINDOW, stride=STRIDE
        )
        return {
            "train": self._generate_examples(data, TRAIN_SUBJECTS),
            "test": self._generate_examples(data, TEST_SUBJECTS),
        }

    def _generate_examples(self, data, subjects) -> Iterator[tuple[str, dict[str, Any]]]:
        for rec, (x, y, subj) in enumerate(zip(data["X"], data["y"], data["subject"], strict=True)):
            if subj not in subjects:
                continue
            x = x.astype(np.float32)
            for start in window_starts(len(x)):
                w = x[start : start + WINDOW]
                yield (
                    f"{rec:04d}_{start:06d}",
                    {
                        "acc": w[:, MODALITIES["acc"]],
                        "gyro": w[:, MODALITIES["gyro"]],
                        "label": int(y),
                        "subject": np.int32(subj),
                        "recording": np.int32(rec),
                    },
                )


def build_watch(data_dir: str, source_path: str | None = None) -> RobultWatch:
    """Builds the dataset under `data_dir` if needed and returns the builder."""
    return tfds_io.build_once(
        lambda src: RobultWatch(data_dir=data_dir, source_path=src),
        source=source_path,
        digest=tfds_io.file_sha256,
        other_source="a different source file than",
        dataset="watch",
    )


def _to_split(arrays: dict[str, Any], rows: np.ndarray) -> Split:
    inputs = {name: clean.take_rows(arrays[name], rows) for name in MODALITIES}
    # The watch recordings are complete: every modality is present.
    return Split.complete(inputs, arrays["label"][rows].astype(np.int32))


def load_watch(data_config: Any, *, source_path: str | None = None) -> Dataset:
    """Builds (once) and loads the watch dataset as numpy train/validation/test."""
    val_subject = getattr(data_config, "val_subject", DEFAULT_VAL_SUBJECT)
    if val_subject not in TRAIN_SUBJECTS:
        raise ValueError(
            f"data.val_subject is {val_subject!r}; allowed: one of the training subjects "
            f"{TRAIN_SUBJECTS}."
        )
    source_path = source_path or getattr(data_config, "source_path", None) or None
    builder = build_watch(resolve_data_dir(data_config), source_path)

    shapes = {name: (WINDOW, 3) for name in MODALITIES}
    train_all, test_all = (
        stream.read_split(
            builder, s, shapes, ("label", "subject"), streaming=stream.enabled(data_config)
        )
        for s in ("train", "test")
    )
    is_val = train_all["subject"] == val_subject
    train = _to_split(train_all, np.flatnonzero(~is_val))
    validation = _to_split(train_all, np.flatnonzero(is_val))
    test = _to_split(test_all, np.arange(len(test_all["label"])))

    if len(train) == 0:
        raise ValueError(f"No training windows left after holding out subject {val_subject}.")
    return stream.standardised_dataset(WATCH_SPEC, train, validation, test)  # train statistics only
