"""Dataset registry: `load_dataset(data_config)` dispatches on `data_config.name`.

Loaders are registered by name. Built-in loaders are imported lazily, so that
`import robult_jax.data` does not pay for tensorflow-datasets (about 1 s) until
a dataset is actually loaded.

Data config fields read here:
  name:     registered dataset name, e.g. "watch".
  data_dir: where built datasets are cached. None or "" means the environment
            variable ROBULT_JAX_DATA_DIR if set, else
            ~/.cache/robult_jax/tensorflow_datasets.
  on_nonfinite: "mask" (default, also when the field is absent): NaN / inf in a
            modality marks it missing for that sample; "error": stop instead
            (see `robult_jax.data.clean`).
  streaming: True: the loader returns splits read from disk on demand
            (`robult_jax.data.stream`), cleaned in chunked passes; loaders that
            cannot stream (not in STREAMING_LOADERS) refuse it. False or absent:
            whole splits in memory.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from robult_jax.data import clean, stream  # stream imports grain only when it reads
from robult_jax.data.types import Dataset

DATA_DIR_ENV = "ROBULT_JAX_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/robult_jax/tensorflow_datasets"

Loader = Callable[[Any], Dataset]

# Built-in loaders as "module:function", imported on first use.
_BUILTIN: dict[str, str] = {
    "watch": "robult_jax.data.watch:load_watch",
    "mfeat": "robult_jax.data.mfeat:load_mfeat",
    "synthetic": "robult_jax.data.synthetic:load_synthetic",
    "arrays": "robult_jax.data.arrays:load_arrays",
    "tfds": "robult_jax.data.stream:load_tfds",  # any array_record tfds directory
    "av_digits": "robult_jax.data.av_digits:load_av_digits",
    "avmnist": "robult_jax.data.benchmarks.avmnist:load_avmnist",
    "mmimdb": "robult_jax.data.benchmarks.mmimdb:load_mmimdb",
    "mosi": "robult_jax.data.benchmarks.affect:load_mosi",
    "mosei": "robult_jax.data.benchmarks.affect:load_mosei",
}
_REGISTRY: dict[str, Loader] = {}
# Built-in loaders that honour data.streaming. Not synthetic (made in memory), arrays
# (a user's .npz / .npy files) and av_digits (statistics of whole float32 arrays).
STREAMING_LOADERS = ("avmnist", "mfeat", "mmimdb", "mosei", "mosi", "tfds", "watch")


def register_dataset(name: str, fn: Loader, *, overwrite: bool = False) -> None:
    """Registers `fn(data_config) -> Dataset` under `name`."""
    if not overwrite and (name in _REGISTRY or name in _BUILTIN):
        raise ValueError(
            f"Dataset {name!r} is already registered; pass overwrite=True to replace it."
        )
    _BUILTIN.pop(name, None)
    _REGISTRY[name] = fn


def registered_datasets() -> tuple[str, ...]:
    return tuple(sorted(set(_REGISTRY) | set(_BUILTIN)))


def get_loader(name: str) -> Loader:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        module_name, fn_name = _BUILTIN[name].split(":")
        fn = getattr(importlib.import_module(module_name), fn_name)
        _REGISTRY[name] = fn
        return fn
    raise ValueError(
        f"Unknown data.name {name!r}; registered datasets: {', '.join(registered_datasets())}."
    )


def load_dataset(data_config: Any) -> Dataset:
    """Loads the dataset named by `data_config.name` (a string: config.py checks it),
    cleaned by `clean.clean_dataset` (NaN / inf, rows with no modality; counts in
    `Dataset.cleaning`), whichever loader built it.
    """
    dataset = get_loader(data_config.name)(data_config)
    if not isinstance(dataset, Dataset):
        # Only a Dataset can be cleaned; anything else (a test's stand-in) is the caller's.
        return dataset
    mode = clean.on_nonfinite_mode(data_config)
    if stream.enabled(data_config) and not stream.is_streamed(dataset):
        raise ValueError(
            f"data.streaming=True, but the {data_config.name!r} loader reads whole splits into "
            f"memory; set data.streaming=False (streaming loaders: {', '.join(STREAMING_LOADERS)})."
        )
    return clean.clean_dataset(dataset, on_nonfinite=mode)


def resolve_data_dir(data_config: Any) -> str:
    """Directory where built datasets are cached (see module docstring)."""
    data_dir = getattr(data_config, "data_dir", None)
    if not data_dir:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
