"""Robult on CMU-MOSEI sentiment regression (vision, audio, text sequences), 5% labels.

Same model and loader as configs/mosi.py; needs mosei_senti_data.pkl,
downloaded by hand (see robult_jax/data/benchmarks/affect.py).

Run:
  python -m robult_jax.main --config configs/mosei.py --workdir runs/mosei \
    --config.data.manual_dir=/path/to/folder/containing/mosei_senti_data.pkl
"""

import ml_collections

from robult_jax.configs import mosi


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = mosi.get_config(architecture)
    config.data.name = "mosei"
    config.data.pickle = "mosei_senti_data.pkl"  # file in manual_dir
    config.sampling.label_rate = 0.05  # of about 16k training samples
    config.sampling.labeled_batch = 64  # global; a multiple of 8
    config.sampling.unlabeled_batch = 192  # global; a multiple of 8
    config.train.num_steps = 5000
    config.train.eval_every = 500
    config.train.checkpoint_every = 1000
    return config
