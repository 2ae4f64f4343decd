"""Baseline `infonce` on `watch`: + plain cross-modal InfoNCE on all samples, no PU weights.

Run:
  python -m robult_jax.main --config configs/watch_infonce.py --workdir runs/watch_infonce
"""

from robult_jax.configs import watch


def get_config(architecture: str = "paper"):
    config = watch.get_config(architecture)
    config.method = "infonce"
    config.loss.pu_mode = "none"
    config.loss.w_rec = 0.0
    return config
