"""Streaming: splits read from their array_record files on demand, not held in memory.

Shape legend: N rows of a split, S a per-sample shape, F features (last axis).

With `data.streaming = True` a loader returns splits whose `inputs` are
`StreamedArray`s: (N, *S) float32 arrays that read only the rows asked for
(`x[rows]`), through a grain `MapDataset` over the tfds data source of the
split, and apply the loader's own transformation as they read. Labels and
masks (N and N x M values) stay in memory. So the training sampler, which
gathers `x[rows]` for one process's rows of a batch, and the evaluation, which
reads consecutive ranges, work unchanged, and host memory no longer grows with
the dataset.

A loader is written once for both paths: `read_split` gives the split's
inputs as numpy arrays or as `StreamedArray`s, and `clean.take_rows`,
`clean.zero_rows`, `transformed` and `standardised_dataset` take either, so
a streamed split holds exactly the numbers the in-memory one does.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from robult_jax.data import clean, normalize
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

CHUNK = 4096  # rows per read in whole-split passes
Read = Callable[[np.ndarray], list]  # record indices -> their decoded examples (dicts)


def enabled(data_config: Any) -> bool:
    """`data.streaming` (False when the loader's config has no such field)."""
    return bool(getattr(data_config, "streaming", False))


def fit_steps(x_TxF: np.ndarray, steps: int) -> np.ndarray:
    """The first `steps` steps of one record, zero-padded at the end when shorter."""
    x = x_TxF[:steps]
    return np.pad(x, [(0, steps - len(x))] + [(0, 0)] * (x.ndim - 1))


def stack(examples: list[dict], key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """(n, ...) values of `key` in `examples`; with `shape`, each fitted to it (`fit_steps`)."""
    values = [np.asarray(ex[key]) for ex in examples]
    if shape is not None:  # variable-length records (tfds shape (None, ...))
        values = [fit_steps(v, shape[0]) for v in values]
    return np.stack(values)


def read_records(
    read: Read, n: int, keys: Sequence[str], shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    """`keys` of records 0..n-1, stacked (`stack`, fitted to `shapes`), `CHUNK` records a read.

    Batched reads: one call per record costs a Python round trip each, one call
    for everything would hold every decoded record at once.
    """
    if not keys:
        return {}
    shapes = shapes or {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for start in range(0, n, CHUNK):
        examples = read(np.arange(start, min(n, start + CHUNK)))
        for k in keys:
            parts[k].append(stack(examples, k, shapes.get(k)))
    return {k: np.concatenate(v) for k, v in parts.items()}


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

    `records` (N,) are the rows' record indices. A read turns the records'
    `key` values into rows, in this order: with `fit`, each record is cut or
    zero-padded along its first axis to `sample_shape` (variable-length
    sequences); stacked and cast to float32; passed through `transform` (the
    loader's own elementwise scaling, float32 in and out; None: none);
    standardised with `stats` (None: not); and set to zero in the rows
    `zeroed` (N,) marks (a modality marked missing by cleaning). Indexing
    (`x[rows]`, `x[a:b]`) returns a new numpy array; `np.asarray(x)` reads
    everything.
    """

    reader: RecordReader
    key: str
    records: np.ndarray
    sample_shape: tuple[int, ...]
    fit: bool = False
    transform: Callable[[np.ndarray], np.ndarray] | None = None
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
        if not examples:
            return np.zeros((0, *self.sample_shape), np.float32)
        x = stack(examples, self.key, self.sample_shape if self.fit else None)
        x = x.astype(np.float32)
        if self.transform is not None:
            x = self.transform(x)
        if self.stats is not None:
            x = normalize.standardise(x, self.stats).astype(np.float32)
        if self.zeroed is not None:
            x[self.zeroed[rows]] = 0
        return x

    def take(self, rows: np.ndarray | slice) -> StreamedArray:
        """The rows `rows` (indices, a slice or a bool mask), still streamed."""
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


def read_split(
    builder, split: str, inputs: dict[str, tuple[int, ...]], fields: Sequence[str] = (), *,
    streaming: bool, fit: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """tfds split `split` of `builder`: its `inputs` {key: per-sample shape}, float32, and
    its `fields` (labels, ids: read in memory either way), by key.

    `streaming`: the inputs are `StreamedArray`s over every record (nothing read
    yet) and the fields are read in one chunked pass; else everything is read
    into numpy in one chunked pass. With `fit`, each input record is cut or
    zero-padded along its first axis to its shape (`fit_steps`), on both paths.
    """
    from robult_jax.data import tfds_io  # tensorflow-datasets: ~1 s to import

    if not streaming:
        shapes = inputs if fit else None
        arrays = tfds_io.read_split(builder, split, (*inputs, *fields), shapes)
        return {
            k: x.astype(np.float32, copy=False) if k in inputs else x for k, x in arrays.items()
        }
    reader = RecordReader(builder.as_data_source(split))
    records = np.arange(len(reader), dtype=np.int64)
    streamed = {k: StreamedArray(reader, k, records, s, fit=fit) for k, s in inputs.items()}
    return {**streamed, **read_records(reader.read, len(reader), fields)}


def transformed(x, fn: Callable[[np.ndarray], np.ndarray]):
    """`fn(x)` of a float32 numpy array; a streamed one applies `fn` as it reads."""
    return dataclasses.replace(x, transform=fn) if isinstance(x, StreamedArray) else fn(x)


def standardised(x, stats: normalize.Stats):
    """(x - mean) / std as float32; a streamed array standardises as it reads."""
    if isinstance(x, StreamedArray):
        return dataclasses.replace(x, stats=stats)
    return normalize.standardise(x, stats).astype(np.float32)


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


def standardised_dataset(
    spec: DatasetSpec, train: Split, validation: Split, test: Split
) -> Dataset:
    """The Dataset of three splits, each modality standardised with `train`'s statistics only.

    Statistics by `fit_stats` over the training rows whose values are finite (a
    NaN, a missing value, would make every row NaN), recorded in `input_stats`
    for `robult_jax.predict`; numpy and streamed splits alike.
    """
    kinds = {m.name: m.kind for m in spec.modalities}
    stats = {
        name: fit_stats(x, ~clean.nonfinite_rows_of(x), kinds[name])
        for name, x in train.inputs.items()
    }

    def apply(split: Split) -> Split:
        inputs = {name: standardised(x, stats[name]) for name, x in split.inputs.items()}
        return Split(inputs=inputs, labels=split.labels, mask=split.mask)

    return Dataset(spec, apply(train), apply(validation), apply(test), input_stats=stats)


# ---------------------------------------------------------------------------
# data.name = "tfds": any array_record tfds dataset directory.

_KINDS = {1: "vector", 2: "timeseries", 3: "image"}


def _field(data_config: Any, name: str, default: Any) -> Any:
    value = data_config.get(name, default) if hasattr(data_config, "get") else default
    return default if value is None else value


def load_tfds(data_config: Any) -> Dataset:
    """A dataset from a tfds array_record directory, streamed or in memory (module docstring)."""
    import tensorflow_datasets as tfds

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
    streaming = enabled(data_config)
    splits = {}
    for s in ("train", "validation", "test"):
        arrays = read_split(
            builder, _field(data_config, f"{s}_split", s), shapes, (label,), streaming=streaming
        )
        splits[s] = Split.complete({n: arrays[n] for n in names}, arrays[label].astype(np.int32))
    if _field(data_config, "standardize", True):
        return standardised_dataset(spec, **splits)
    return Dataset(spec, **splits)
