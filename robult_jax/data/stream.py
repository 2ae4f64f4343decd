"""Streaming: splits read from their array_record files on demand, not held in memory.

Shape legend: N rows of a split, S a per-sample shape, F features (last axis).

With `data.streaming = True` a loader returns splits whose `inputs` are
`StreamedArray`s: (N, *S) float32 arrays that read only the rows asked for
(`x[rows]`), through a grain `MapDataset` over the tfds data source of the
split, and apply the loader's normalisation as they read. Labels and masks
(N and N x M values) stay in memory. So the training sampler, which gathers
`x[rows]` for one process's rows of a batch, and the evaluation, which reads
consecutive ranges, work unchanged, and host memory no longer grows with the
dataset.

Everything that needs a pass over whole splits does it in chunks of `CHUNK`
rows, with the same numbers as the in-memory path:
  - `fit_stats`: normalisation statistics, bit-identical to
    `normalize.fit_stats` for vector and time-series modalities (numpy sums
    leading axes row by row in order, and so do the chunks here);
  - cleaning and the fingerprint: `clean.clean_dataset` and `clean.fingerprint`
    themselves, which scan a `StreamedArray` chunk by chunk and zero or slice
    it lazily (the same rules, counts and digest as in memory).

`load_tfds` (data.name = "tfds") reads any array_record tfds dataset directory
this way or in memory. Data config fields:
  tfds_dir:    the built dataset's version directory (with dataset_info.json).
  modalities:  feature keys used as modalities; () = every float Tensor feature.
  label:       the ClassLabel feature (default "label").
  train_split, validation_split, test_split: tfds split names, slicing allowed
               ("train[:90%]"); defaults "train", "validation", "test".
  standardize: per-feature standardisation with train statistics (default True).
  streaming:   read from disk on demand (default False: whole splits in memory).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from robult_jax.data import clean, normalize
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

CHUNK = 4096  # rows per read in whole-split passes


class _BatchedSource:
    """A tfds data source with grain's batched-read method (`_getitems`).

    tfds sources read many records in one call (`__getitems__`, ~3x faster
    than one call per record here); grain's `MapDataset.source` uses such a
    method when the source has it.
    """

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int):
        return self._source[index]

    def _getitems(self, indices: Sequence[int]):
        return self._source.__getitems__(list(indices))


class RecordReader:
    """The records of one tfds split, read by index through a grain `MapDataset`.

    Remembers the last read, so that the modalities of one batch (read one
    after the other by the sampler) decode their records once.
    """

    def __init__(self, source):
        import grain

        self.dataset = grain.MapDataset.source(_BatchedSource(source))
        self._lock = threading.Lock()  # the prefetch thread and evaluation may both read
        self._last: tuple[bytes, list] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, records: np.ndarray) -> list[dict]:
        key = records.tobytes()
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            examples = list(self.dataset._getitems(records.tolist())) if len(records) else []
            self._last = (key, examples)
            return examples


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedArray:
    """(N, *S) float32 rows of one modality, read on demand from a `RecordReader`.

    `records` (N,) are the rows' record indices; `stats` the standardisation
    applied on read (None: none); `zeroed` (N,) rows that read as zeros (a
    modality marked missing by cleaning). Indexing (`x[rows]`, `x[a:b]`)
    returns a new numpy array; `np.asarray(x)` reads everything.
    """

    reader: RecordReader
    key: str
    records: np.ndarray
    sample_shape: tuple[int, ...]
    stats: dict[str, np.ndarray] | None = None
    zeroed: np.ndarray | None = None

    dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.records), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, int | np.integer):
            return self[np.asarray([index])][0]
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if rows.dtype == np.bool_:
            rows = np.flatnonzero(rows)
        examples = self.reader.read(self.records[rows])
        if examples:
            raw = np.stack([np.asarray(ex[self.key]) for ex in examples])
        else:
            raw = np.zeros((0, *self.sample_shape), np.float32)
        if self.stats is None:
            x = raw.astype(np.float32)
        else:
            x = normalize.standardise(raw, self.stats).astype(np.float32)
        if self.zeroed is not None:
            x[self.zeroed[rows]] = 0
        return x

    def take(self, rows: np.ndarray) -> StreamedArray:
        """The rows `rows` (indices or a bool mask), still streamed."""
        zeroed = None if self.zeroed is None else self.zeroed[rows]
        return dataclasses.replace(self, records=self.records[rows], zeroed=zeroed)

    def with_zeroed(self, rows_N: np.ndarray) -> StreamedArray:
        zeroed = rows_N if self.zeroed is None else self.zeroed | rows_N
        return dataclasses.replace(self, zeroed=zeroed)

    def chunks(self, size: int | None = None) -> Iterator[np.ndarray]:
        size = size or CHUNK
        for start in range(0, len(self), size):
            yield self[start : start + size]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        del copy  # always a new array
        parts = list(self.chunks())
        x = np.concatenate(parts) if parts else self[np.arange(0)]
        return x if dtype is None else x.astype(dtype)


def is_streamed(dataset: Dataset) -> bool:
    return any(
        isinstance(x, StreamedArray)
        for split in (dataset.train, dataset.validation, dataset.test)
        for x in split.inputs.values()
    )


def _chunks(x, size: int | None = None) -> Iterator[np.ndarray]:
    """Row chunks of a numpy or streamed array (`CHUNK` rows by default)."""
    size = size or CHUNK
    if isinstance(x, StreamedArray):
        yield from x.chunks(size)
    else:
        for start in range(0, len(x), size):
            yield x[start : start + size]


def fit_stats(x_NxS, present_N: np.ndarray, kind: str) -> normalize.Stats:
    """`normalize.fit_stats(x, present_N, kind)` in chunked passes over numpy or streamed rows.

    Bit-identical to it for vector and time-series modalities: numpy reduces
    the leading axes of a C-ordered array row by row, in order, and the running
    sum here is carried into each chunk's reduction as its first row. A 2-D
    image (one statistic for all pixels) is reduced in the same chunked order,
    which differs from numpy's pairwise sum in the last bits: streamed and
    in-memory runs of `load_tfds` both use this function.
    """
    shape = x_NxS.shape[1:]
    width = 1 if kind == "image" and len(shape) == 2 else shape[-1]

    def running_sum(rows_of) -> tuple[np.ndarray, int]:
        acc, count = np.zeros(width), 0
        for start, chunk in zip(range(0, len(x_NxS), CHUNK), _chunks(x_NxS), strict=True):
            chunk = np.asarray(chunk, np.float64)[present_N[start : start + CHUNK]]
            flat = rows_of(chunk.reshape(-1, width))
            acc, count = np.concatenate([acc[None], flat]).sum(axis=0), count + len(flat)
        return acc, count

    total, count = running_sum(lambda flat: flat)
    mean = total / count
    squares, _ = running_sum(lambda flat: (flat - mean) * (flat - mean))
    std = np.sqrt(squares / count)
    std = np.maximum(std, 1e-6)
    if width == 1 and kind == "image" and len(shape) == 2:
        mean, std = mean.reshape(()), std.reshape(())
    if kind == "sequence":  # the last channel is a 0/1 validity flag
        mean[..., -1], std[..., -1] = 0.0, 1.0
    return {"mean": mean, "std": std}


# ---------------------------------------------------------------------------
# data.name = "tfds": any array_record tfds dataset directory.

_KINDS = {1: "vector", 2: "timeseries", 3: "image"}


def _field(data_config: Any, name: str, default: Any) -> Any:
    value = data_config.get(name, default) if hasattr(data_config, "get") else default
    return default if value is None else value


def _labels(reader: RecordReader, key: str) -> np.ndarray:
    """(N,) int32 labels of every record: one chunked pass (tfds decodes whole records)."""
    n = len(reader)
    parts = [
        np.asarray([ex[key] for ex in reader.read(np.arange(s, min(n, s + CHUNK)))], np.int32)
        for s in range(0, n, CHUNK)
    ]
    return np.concatenate(parts)


def load_tfds(data_config: Any) -> Dataset:
    """A dataset from a tfds array_record directory, streamed or in memory (module docstring)."""
    import tensorflow_datasets as tfds

    from robult_jax.data import tfds_io

    path = _field(data_config, "tfds_dir", "")
    if not path:
        raise ValueError("data.tfds_dir must name a built tfds dataset's version directory.")
    builder = tfds.builder_from_directory(str(path))
    features = builder.info.features
    label = _field(data_config, "label", "label")
    if label not in features or not isinstance(features[label], tfds.features.ClassLabel):
        raise ValueError(f"data.label={label!r} is not a ClassLabel feature of {path}.")
    floats = [k for k, f in features.items() if k != label and np.dtype(f.np_dtype).kind == "f"]
    names = tuple(_field(data_config, "modalities", ()) or floats)
    unknown = [n for n in names if n not in floats]
    if unknown:
        raise ValueError(f"data.modalities {unknown} are not float features of {path}: {floats}.")
    shapes = {n: tuple(features[n].shape) for n in names}
    spec = DatasetSpec(
        name=builder.name,
        modalities=tuple(ModalitySpec(n, shapes[n], _KINDS[len(shapes[n])]) for n in names),
        task="multiclass",
        num_outputs=features[label].num_classes,
        class_names=tuple(features[label].names),
    )
    splits = {
        s: _field(data_config, f"{s}_split", s) for s in ("train", "validation", "test")
    }  # fmt: skip
    streaming = bool(_field(data_config, "streaming", False))
    if streaming:
        raw = {}
        for s, tfds_split in splits.items():
            reader = RecordReader(builder.as_data_source(tfds_split))
            records = np.arange(len(reader), dtype=np.int64)
            inputs = {n: StreamedArray(reader, n, records, shapes[n]) for n in names}
            raw[s] = (inputs, _labels(reader, label))
    else:
        raw = {}
        for s, tfds_split in splits.items():
            arrays = tfds_io.read_split(builder, tfds_split, (*names, label))
            inputs = {n: arrays[n].astype(np.float32) for n in names}
            raw[s] = (inputs, arrays[label].astype(np.int32))
    stats = None
    if _field(data_config, "standardize", True):
        kinds = {m.name: m.kind for m in spec.modalities}
        train_inputs = raw["train"][0]
        # Fitted on finite rows only: a NaN (a missing value) would make every row NaN.
        stats = {
            n: fit_stats(train_inputs[n], ~clean.nonfinite_rows_of(train_inputs[n]), kinds[n])
            for n in names
        }

    def split(s: str) -> Split:
        inputs, labels = raw[s]
        if stats is not None:
            inputs = {
                n: dataclasses.replace(x, stats=stats[n])
                if streaming
                else normalize.standardise(x, stats[n]).astype(np.float32)
                for n, x in inputs.items()
            }
        return Split.complete(inputs, labels)

    return Dataset(spec, split("train"), split("validation"), split("test"), input_stats=stats)
