"""Shared plumbing for the builders of user-supplied benchmark files.

AV-MNIST, MM-IMDb and CMU-MOSI/MOSEI cannot be downloaded from here: users
fetch the processed files by hand and point `data.manual_dir` at them (the
tfds "manual_dir" convention). Each builder then converts them once into an
array_record tfds dataset under `resolve_data_dir(data_config)`, which tfds
reads without TensorFlow.

What lives here: the manual-dir and missing-file checks (one error that lists
every expected path and where it is published), a cheap source fingerprint
that detects a cache built from other files and the build-once helper.
Building and reading (`prepare`, `read_split`) live in `robult_jax.data.tfds_io`,
shared with the packaged datasets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

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


def cached_builder(
    builder: tfds.core.DatasetBuilder, source_fingerprint: str, *, dataset: str
) -> bool:
    """True if `builder` is already built from these same source files.

    A cache built from other files (e.g. a fixture, or another download) is
    an error rather than a silent mix-up: the user decides what to delete.
    """
    if not builder.is_prepared():
        return False
    built_from = builder.info.metadata.get("source_fingerprint")
    if built_from != source_fingerprint:
        raise ValueError(
            f"The cached {dataset} dataset in {builder.data_dir} was built from different "
            f"source files than the ones in data.manual_dir. Delete {builder.data_dir} to "
            f"rebuild it, or set data.data_dir to another cache directory."
        )
    return True
