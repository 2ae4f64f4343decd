"""Building and reading this project's tfds array_record datasets (no TensorFlow).

Every dataset (the packaged ones and the user-supplied benchmarks) converts
its source once into an array_record tfds dataset and then reads whole splits
into numpy arrays; these two steps are the same for all of them. watch and
av_digits record their source file's `file_sha256`, to detect a cache built
from another file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import tensorflow_datasets as tfds

BuilderT = TypeVar("BuilderT", bound=tfds.core.DatasetBuilder)


def build_once(
    make_builder: Callable[[str | None], BuilderT],
    *,
    source: str | None,
    find_source: Callable[[], str],
    check_source: Callable[[BuilderT, str | None], None],
    dataset: str,
) -> BuilderT:
    """The builder of a packaged dataset, built from its local source on first use.

    `make_builder(source)` makes the builder; an already built dataset is only
    checked against its source (`check_source`), which need not be installed
    any more. Otherwise the source is resolved *before* building, so that a
    missing package fails with its own install hint rather than inside tfds.
    """
    builder = make_builder(source)
    if builder.is_prepared():
        check_source(builder, source)
        return builder
    builder = make_builder(source or find_source())
    prepare(builder, dataset=dataset)
    return builder


def file_sha256(path: str) -> str:
    """sha256 of the file at `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(
    builder: tfds.core.DatasetBuilder, *, dataset: str, manual_dir: str | None = None
) -> None:
    """Runs `download_and_prepare`: nothing is downloaded, sources are local files."""
    kwargs = {}
    if manual_dir is not None:
        kwargs["download_config"] = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
        builder.download_and_prepare(**kwargs)
    except Exception as e:
        # tfds writes into a temporary `incomplete.*` directory and renames it
        # only on success, so a failed build normally leaves nothing behind.
        e.add_note(
            f"Building the {dataset} dataset failed; if {builder.data_dir} exists, delete it "
            f"before retrying."
        )
        raise


def read_split(
    builder: tfds.core.DatasetBuilder, split: str, keys: Sequence[str]
) -> dict[str, np.ndarray]:
    """Every example of `split` as stacked numpy arrays, one per key."""
    source = builder.as_data_source(split)
    n = len(source)
    features = builder.info.features
    if n == 0:
        return {k: np.zeros((0, *_static_shape(features[k])), features[k].np_dtype) for k in keys}
    out: dict[str, np.ndarray] = {}
    # Batched reads in chunks: one call per example costs a Python round trip
    # each, one call for everything would hold every decoded dict at once.
    chunk = 4096
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for start in range(0, n, chunk):
        examples = source.__getitems__(list(range(start, min(n, start + chunk))))
        for k in keys:
            parts[k].append(np.stack([np.asarray(ex[k]) for ex in examples]))
    for k in keys:
        out[k] = np.concatenate(parts[k]) if len(parts[k]) > 1 else parts[k][0]
    return out


def _static_shape(feature: Any) -> tuple[int, ...]:
    return tuple(0 if d is None else d for d in feature.shape)
