"""Robult on any array_record tfds dataset directory, in memory or streamed from disk.

Run:
  robult-jax train --config tfds --workdir runs/mine \
    --config.data.tfds_dir=/path/to/my_dataset/1.0.0 [--config.data.streaming=True]

The dataset (built by tfds with `file_format="array_record"`) needs a
ClassLabel feature (`data.label`) and float features, the modalities (by
default every float feature; kind by per-sample rank: 1 vector, 2 time series,
3 image; each gets the default encoder of its kind). `data.streaming=True`
reads rows from the files when a batch needs them (a grain MapDataset over the
tfds data source) instead of whole splits in host memory: statistics,
cleaning, batches and results equal the in-memory run's
(docs/many_devices.md).
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "tfds"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.tfds_dir = ""  # the dataset's version directory (holds dataset_info.json)
    config.data.streaming = False  # True: rows read from disk on demand, not held in memory
    config.data.label = "label"  # the ClassLabel feature
    config.data.modalities = ()  # float features used as modalities; () = all of them
    config.data.train_split = "train"
    config.data.validation_split = "validation"  # model selection; never the test split
    config.data.test_split = "test"
    config.data.standardize = True  # z-score each modality with training statistics
    config.model.encoders = ml_collections.ConfigDict()  # the default encoder of each kind
    return config
