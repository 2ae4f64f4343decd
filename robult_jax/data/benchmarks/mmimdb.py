"""MM-IMDb (`multimodal_imdb.hdf5`): movie plot + poster features, 23 genres, multi-label.

Source (downloaded by hand; see docs/benchmark_formats.md
section 2): https://archive.org/download/mmimdb/multimodal_imdb.hdf5 (the file
MultiBench reads). Put it at `<data.manual_dir>/multimodal_imdb.hdf5`.

Keys used: `features` (N, 300) mean word2vec of the plot (modality "text"),
`vgg_features` (N, 4096) VGG-16 fc7 of the poster (modality "image"), and
`genres` (N, 23) multi-hot, with the genre names in
`genres.attrs['target_names']` (a JSON list, in column order). `images` and
the other keys are optional and not read.

The tfds builder `robult_mmimdb` copies all rows, in file order, into one
split "full" (so the cache does not depend on where the splits are cut).
`load_mmimdb` then cuts train / validation / test as contiguous row ranges
[0, train_end), [train_end, val_end), [val_end, N). The boundaries come from
`data.train_end` / `data.val_end` when set (configs/mmimdb.py sets the
published 15552 / 18160), else from the file's Fuel `split` attribute.

A row whose `features` (or `vgg_features`) holds NaN or inf (a plot without
any word2vec word gives a NaN mean) has that modality marked missing in
`Split.mask` and zeroed; a row with both missing has no input and is dropped
(both are logged). Nothing is normalised, as in MultiBench.

Data config fields read:
  manual_dir: folder holding multimodal_imdb.hdf5 (required).
  data_dir:   tfds cache directory (see `registry.resolve_data_dir`).
  train_end:  first validation row (0 or unset: from the file's split attribute).
  val_end:    first test row (0 or unset: from the file's split attribute).
  streaming:  True: text and image read from the cache on demand; the genres and
              the masks (a chunked NaN/inf scan) in memory (`robult_jax.data.stream`).
              Default False.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import clean, stream
from robult_jax.data.benchmarks import common
from robult_jax.data.registry import resolve_data_dir
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

log = logging.getLogger(__name__)

NAME = "mmimdb"
FILENAME = "multimodal_imdb.hdf5"
TEXT_DIM = 300
IMAGE_DIM = 4096
# hdf5 key -> modality name, in modality order.
MODALITY_KEYS = {"features": "text", "vgg_features": "image"}
SOURCE = (
    "https://archive.org/download/mmimdb/multimodal_imdb.hdf5 (the processed file read by "
    "MultiBench, github.com/pliang279/MultiBench)."
)
VAL_NAMES = ("dev", "valid", "val", "validation")  # Fuel split names seen for validation


def _decode(x: Any) -> str:
    return x.decode() if isinstance(x, bytes | np.bytes_) else str(x)


def parse_target_names(raw: Any, num_classes: int, path: str) -> tuple[str, ...]:
    """Genre names from `genres.attrs['target_names']` (JSON text or an array of names)."""
    if raw is None:
        log.warning("%s: genres has no 'target_names' attribute; using genre_00...", path)
        return tuple(f"genre_{i:02d}" for i in range(num_classes))
    if isinstance(raw, str | bytes | np.bytes_):
        try:
            names = json.loads(_decode(raw))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: genres.attrs['target_names'] is not a JSON list of names ({e})."
            ) from e
    else:
        names = [_decode(n) for n in np.asarray(raw).ravel()]
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(
            f"{path}: genres.attrs['target_names'] lists {len(names)} names but genres has "
            f"{num_classes} columns."
        )
    return tuple(names)


def parse_fuel_split(raw: Any, n: int) -> tuple[int, int] | None:
    """(train_end, val_end) from a Fuel split table, or None if absent or unusable."""
    if raw is None:
        return None
    table = np.asarray(raw)
    fields = table.dtype.names or ()
    if not {"split", "start", "stop"} <= set(fields):
        return None
    ranges: dict[str, tuple[int, int]] = {}
    for row in table.ravel():
        name = _decode(row["split"]).lower()
        start, stop = int(row["start"]), int(row["stop"])
        lo, hi = ranges.get(name, (start, stop))
        ranges[name] = (min(lo, start), max(hi, stop))
    val = next((v for v in VAL_NAMES if v in ranges), None)
    if "train" not in ranges or "test" not in ranges or val is None:
        return None
    (t0, t1), (v0, v1), (s0, s1) = ranges["train"], ranges[val], ranges["test"]
    if (t0, t1, v1, s1) != (0, v0, s0, n):  # not contiguous train | val | test
        return None
    return t1, v1


def read_mmimdb_header(path: str) -> dict[str, Any]:
    """Checks keys, shapes and labels (no big reads); returns the metadata the cache records."""
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # truncated, or not an hdf5 file
        raise ValueError(
            f"{path}: cannot be opened as an hdf5 file ({type(e).__name__}: {e}). "
            f"Download it again from {SOURCE}"
        ) from e
    with f:
        for key in (*MODALITY_KEYS, "genres"):
            if key not in f:
                raise ValueError(
                    f"{path}: no dataset {key!r} (found: {', '.join(sorted(f.keys()))}); "
                    f"expected features, vgg_features and genres. Is this the MM-IMDb file "
                    f"from {SOURCE}"
                )
        genres = f["genres"]
        if genres.ndim != 2 or genres.shape[1] < 1:
            raise ValueError(f"{path}: genres has shape {genres.shape}; expected (N, 23).")
        n, c = genres.shape
        for key, dim in (("features", TEXT_DIM), ("vgg_features", IMAGE_DIM)):
            if f[key].shape != (n, dim):
                raise ValueError(
                    f"{path}: {key} has shape {f[key].shape}; expected ({n}, {dim}) "
                    f"(one row per genres row)."
                )
        y = genres[()]
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{path}: genres must be multi-hot 0/1; found other values.")
        names = parse_target_names(genres.attrs.get("target_names"), c, path)
        file_split = parse_fuel_split(f.attrs.get("split"), n)
    return {"class_names": list(names), "file_split": list(file_split) if file_split else []}


class RobultMmimdb(common.ManualBuilder):
    """tfds builder for MM-IMDb from the user's multimodal_imdb.hdf5 (array_record)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "features, vgg_features and genres of multimodal_imdb.hdf5."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put {FILENAME} in the manual dir; source: {SOURCE}"
    HOMEPAGE = "https://github.com/johnarevalo/gmu-mmimdb"
    CITATION = "Arevalo et al., Gated Multimodal Units for Information Fusion, ICLR-W 2017."

    def _features(self) -> dict[str, Any]:
        return {
            "text": tfds.features.Tensor(shape=(TEXT_DIM,), dtype=np.float32),
            "image": tfds.features.Tensor(shape=(IMAGE_DIM,), dtype=np.float32),
            # Width = number of genres (23), recorded in metadata["class_names"].
            "genres": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
            "row": tfds.features.Tensor(shape=(), dtype=np.int32),
        }

    def _generate_examples(self, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
        with h5py.File(path, "r") as f:
            yield from common.chunked_examples(
                f["genres"].shape[0],
                1024,  # vgg_features alone is ~425 MB
                lambda rows: {
                    "text": np.asarray(f["features"][rows], np.float32),
                    "image": np.asarray(f["vgg_features"][rows], np.float32),
                    "genres": np.asarray(f["genres"][rows]).astype(np.uint8),
                },
            )


def build_mmimdb(data_dir: str, manual_dir: str) -> RobultMmimdb:
    """Builds the dataset under `data_dir` if needed and returns the builder."""
    (path,) = common.check_files(manual_dir, [FILENAME], dataset=NAME, source=SOURCE)
    return common.build_once(
        lambda **kw: RobultMmimdb(data_dir=data_dir, **kw),
        [path],
        lambda: ({"full": path}, read_mmimdb_header(path)),
        dataset=NAME,
        manual_dir=manual_dir,
    )


def split_boundaries(data_config: Any, file_split: list[int], n: int) -> tuple[int, int]:
    """(train_end, val_end): from the config when set, else from the file."""
    train_end = getattr(data_config, "train_end", None) or 0
    val_end = getattr(data_config, "val_end", None) or 0
    if not train_end and not val_end:
        if not file_split:
            raise ValueError(
                f"data.train_end / data.val_end are unset and {FILENAME} has no usable split "
                f"attribute. Set them, e.g. --config.data.train_end=15552 "
                f"--config.data.val_end=18160 for the published file."
            )
        return int(file_split[0]), int(file_split[1])
    ints = isinstance(train_end, int) and isinstance(val_end, int)
    if not (ints and 0 < train_end < val_end < n):
        raise ValueError(
            f"data.train_end={train_end!r} and data.val_end={val_end!r} must be integers with "
            f"0 < train_end < val_end < {n} (the number of rows in {FILENAME}); the published "
            f"file uses 15552 and 18160."
        )
    if file_split and tuple(file_split) != (train_end, val_end):
        log.warning(
            "%s: using data.train_end=%d, data.val_end=%d, which differ from the file's own "
            "split attribute (%d, %d).",
            FILENAME, train_end, val_end, *file_split,
        )  # fmt: skip
    return train_end, val_end


def _to_split(arrays: dict[str, Any], rows: slice, split_name: str) -> Split:
    inputs, present = {}, []
    for name in MODALITY_KEYS.values():
        x = clean.take_rows(arrays[name], rows)
        ok = ~clean.nonfinite_rows_of(x)  # NaN/inf row: this modality is missing
        inputs[name] = clean.zero_rows(x, ~ok)
        present.append(ok)
    mask = np.stack(present, axis=1)
    labels = arrays["genres"][rows].astype(np.float32)
    for name, ok in zip(MODALITY_KEYS.values(), present, strict=True):
        if not ok.all():
            log.info("mmimdb %s: %d rows without %s (missing)", split_name, (~ok).sum(), name)
    keep = mask.any(axis=1)
    if not keep.all():
        log.warning("mmimdb %s: dropped %d rows with no usable modality", split_name, (~keep).sum())
        inputs = {k: clean.take_rows(v, keep) for k, v in inputs.items()}
        labels, mask = labels[keep], mask[keep]
    return Split(inputs=inputs, labels=labels, mask=mask)


def load_mmimdb(data_config: Any) -> Dataset:
    """Builds (once) and loads MM-IMDb as numpy (or streamed) train/validation/test."""
    manual_dir = common.require_manual_dir(
        data_config, dataset=NAME, example=f"/path/to/folder/containing/{FILENAME}"
    )
    builder = build_mmimdb(resolve_data_dir(data_config), manual_dir)
    class_names = tuple(builder.info.metadata["class_names"])
    shapes = {"text": (TEXT_DIM,), "image": (IMAGE_DIM,)}
    arrays = stream.read_split(
        builder, "full", shapes, ("genres",), streaming=stream.enabled(data_config)
    )
    n = len(arrays["genres"])
    train_end, val_end = split_boundaries(data_config, builder.info.metadata["file_split"], n)
    spec = DatasetSpec(
        name=NAME,
        modalities=(
            ModalitySpec("text", (TEXT_DIM,), "vector"),
            ModalitySpec("image", (IMAGE_DIM,), "vector"),
        ),
        task="multilabel",
        num_outputs=len(class_names),
        class_names=class_names,
    )
    return Dataset(
        spec=spec,
        train=_to_split(arrays, slice(0, train_end), "train"),
        validation=_to_split(arrays, slice(train_end, val_end), "validation"),
        test=_to_split(arrays, slice(val_end, n), "test"),
    )
