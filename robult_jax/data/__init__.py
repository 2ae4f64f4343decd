"""Datasets: in-memory containers, the loader registry and batch samplers.

`load_dataset(data_config)` returns a `Dataset` of numpy splits, cleaned
(`robult_jax.data.clean`); `fingerprint(dataset)` is its content hash. See
docs/interfaces.md (Data) for the contract.
"""

from robult_jax.data.clean import fingerprint
from robult_jax.data.registry import (
    load_dataset,
    register_dataset,
    registered_datasets,
    resolve_data_dir,
)
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

__all__ = [
    "Dataset",
    "DatasetSpec",
    "ModalitySpec",
    "Split",
    "fingerprint",
    "load_dataset",
    "register_dataset",
    "registered_datasets",
    "resolve_data_dir",
]
