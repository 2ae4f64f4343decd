"""Robult on AV-MNIST (MultiBench: MNIST image + spoken-digit spectrogram), 5% labels.

Needs the files of MultiBench's avmnist.tar.gz, unpacked by hand (see
robult_jax/data/benchmarks/avmnist.py for the layout and where to get it).

Run:
  python -m robult_jax.main --config configs/avmnist.py --workdir runs/avmnist \
    --config.data.manual_dir=/path/to/folder/containing/avmnist
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "avmnist"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True: inputs read from disk on demand, not held in memory
    config.data.data_dir = ""  # tfds cache dir; "" = $ROBULT_JAX_DATA_DIR or ~/.cache/robult_jax
    config.data.manual_dir = ""  # required: folder holding avmnist/ (or avmnist/ itself)
    config.data.val_rows = 5000  # the last k train rows are validation (MultiBench: 5000)
    config.sampling.label_rate = 0.05  # fraction of the 55000 training rows whose label is used
    config.sampling.label_seed = 0  # seed of the stratified labeled/unlabeled split
    config.sampling.labeled_batch = 64  # global; a multiple of 8 so it shards over devices
    config.sampling.unlabeled_batch = 192  # global; a multiple of 8

    # image (28, 28) and audio (112, 112) are both 2-D "image" modalities.
    config.model.encoders = ml_collections.ConfigDict({"image": "cnn2d", "audio": "cnn2d"})

    config.train.num_steps = 5000
    config.train.eval_every = 500
    config.train.checkpoint_every = 1000
    config.optim.warmup_steps = 200
    return config
