"""Shared test set-up: the synthetic config (configs/synthetic.py), raw and typed."""

import ml_collections

from robult_jax import config as config_lib
from robult_jax.configs import synthetic


def raw_config(architecture: str = "paper", **overrides) -> ml_collections.ConfigDict:
    """configs/synthetic.py with dotted overrides, e.g. `**{"train.num_steps": 4}`."""
    config = synthetic.get_config(architecture)
    for dotted, value in overrides.items():
        node = config
        *path, leaf = dotted.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def typed_config(architecture: str = "paper", **overrides) -> config_lib.Config:
    return config_lib.from_config_dict(raw_config(architecture, **overrides))
