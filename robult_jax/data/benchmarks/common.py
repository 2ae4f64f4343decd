"""Shared plumbing for the builders of user-supplied benchmark files.

See the package docstring. Here: the manual-dir and missing-file checks (one
error that lists every expected path and where it is published), a cheap
fingerprint of the files that detects a cache built from other ones, the
builders' base class and the build-once helper.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from robult_jax.data import tfds_io

BuilderT = TypeVar("BuilderT", bound="ManualBuilder")

# Bytes hashed at each end of a source file. Hashing whole files would cost
# minutes on the multi-GB MM-IMDb hdf5; size + head + tail tells files apart.
_FINGERPRINT_BYTES = 1 << 20


def require_manual_dir(data_config: Any, *, dataset: str, example: str) -> str:
    """Absolute `data.manual_dir`; a clear error when it is unset."""
    manual_dir = getattr(data_config, "manual_dir", None)
    if not manual_dir:
        raise ValueError(
            f"data.manual_dir is empty, but the {dataset} dataset is read from files you "
            f"download yourself. Pass --config.data.manual_dir={example}"
        )
    return os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))


def check_files(
    manual_dir: str, relative_paths: Sequence[str], *, dataset: str, source: str
) -> list[str]:
    """Absolute paths of `relative_paths` under `manual_dir`; all must exist.

    Raises one FileNotFoundError naming every missing file by its full path
    and saying where the files are published.
    """
    paths = [os.path.join(manual_dir, p) for p in relative_paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        expected = "\n  ".join(paths)
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} of the expected file(s) are missing under "
            f"data.manual_dir={manual_dir}:\n  " + "\n  ".join(missing) + "\n"
            f"Expected layout:\n  {expected}\n"
            f"Where to get them: {source}"
        )
    return paths


def fingerprint(paths: Sequence[str]) -> str:
    """sha256 over each file's name, size, first and last MiB (cheap on big files)."""
    h = hashlib.sha256()
    for path in paths:
        size = os.path.getsize(path)
        h.update(f"{os.path.basename(path)}:{size}:".encode())
        with open(path, "rb") as f:
            h.update(f.read(_FINGERPRINT_BYTES))
            if size > _FINGERPRINT_BYTES:
                f.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
                h.update(f.read())
    return h.hexdigest()


class ManualBuilder(tfds_io.ArrayRecordBuilder, skip_registration=True):
    """A builder of user-supplied files that its loader has already read and checked.

    `source` maps each split to what `_generate_examples` reads, and
    `metadata` is recorded in `info.metadata`; without `source` the builder
    only reads its cache.
    """

    def __init__(
        self,
        *,
        source: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._source = source
        self._metadata = metadata or {}
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager  # the loader read and checked the files
        if self._source is None:
            raise ValueError(
                f"{type(self).__name__} needs source=... to build; its build_* function reads it."
            )
        self.info.metadata.update(self._metadata)
        return {split: self._generate_examples(s) for split, s in self._source.items()}


def chunked_examples(
    n: int, chunk: int, read_rows: Callable[[slice], dict[str, np.ndarray]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Examples 0..n-1 keyed by their "row", from `read_rows` of `chunk` rows at a time.

    Reading in chunks bounds the memory that big (memory-mapped) files need.
    """
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        arrays = {**read_rows(rows), "row": np.arange(rows.start, rows.stop, dtype=np.int32)}
        for i in range(rows.stop - rows.start):
            yield start + i, {k: v[i] for k, v in arrays.items()}


def build_once(
    make_builder: Callable[..., BuilderT],
    paths: Sequence[str],
    read: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    *,
    dataset: str,
    manual_dir: str,
) -> BuilderT:
    """The builder of the files at `paths`, built on first use.

    `make_builder(**kwargs)` makes the builder; `read()` reads and checks the
    files and returns its (source, metadata). A cache built from other files
    (e.g. a fixture, or another download) is an error rather than a silent
    mix-up: the user decides what to delete.
    """
    source_fingerprint = fingerprint(paths)
    builder = make_builder()
    if builder.is_prepared():
        if builder.info.metadata.get("source_fingerprint") != source_fingerprint:
            raise ValueError(
                f"The cached {dataset} dataset in {builder.data_dir} was built from different "
                f"source files than the ones in data.manual_dir. Delete {builder.data_dir} to "
                f"rebuild it, or set data.data_dir to another cache directory."
            )
        return builder
    source, metadata = read()
    metadata = {"source_fingerprint": source_fingerprint, **metadata}
    builder = make_builder(source=source, metadata=metadata)
    tfds_io.prepare(builder, dataset=dataset, manual_dir=manual_dir)
    # A fresh builder: the one that built holds the whole source in memory.
    return make_builder()
