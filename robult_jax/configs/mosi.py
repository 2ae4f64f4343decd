"""Robult on CMU-MOSI sentiment regression (vision, audio, text sequences), 10% labels.

Needs a MultiBench affect pickle (mosi_data.pkl, or mosi_raw.pkl via
--config.data.pickle=mosi_raw.pkl), downloaded by hand (see
robult_jax/data/benchmarks/affect.py for where to get it).

Run:
  python -m robult_jax.main --config configs/mosi.py --workdir runs/mosi \
    --config.data.manual_dir=/path/to/folder/containing/mosi_data.pkl
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "mosi"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True: inputs read from disk on demand, not held in memory
    config.data.data_dir = ""  # tfds cache dir; "" = $ROBULT_JAX_DATA_DIR or ~/.cache/robult_jax
    config.data.manual_dir = ""  # required: folder holding the pickle
    config.data.pickle = "mosi_data.pkl"  # file in manual_dir; the variant is detected from it
    config.data.seq_len = 50  # steps kept per sequence (valid steps first, then zero padding)
    config.sampling.label_rate = 0.1  # fraction of training samples whose sentiment is used
    config.sampling.label_seed = 0  # seed of the labeled/unlabeled split
    config.sampling.labeled_batch = 32  # global; a multiple of 8 so it shards over devices
    config.sampling.unlabeled_batch = 96  # global; a multiple of 8

    # (T, D + 1) sequences whose last channel marks the valid steps.
    config.model.encoders = ml_collections.ConfigDict(
        {"vision": "transformer", "audio": "transformer", "text": "transformer"}
    )

    config.train.num_steps = 2000
    config.train.eval_every = 200
    config.train.checkpoint_every = 500
    return config
