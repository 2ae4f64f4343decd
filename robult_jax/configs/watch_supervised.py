"""Baseline `supervised` on `watch`: encoders + fusion + classifier, L_sup only.

Same data, labels, modality dropout and schedule as configs/watch.py.

Run:
  python -m robult_jax.main --config configs/watch_supervised.py --workdir runs/watch_sup
"""

from robult_jax.configs import watch


def get_config(architecture: str = "paper"):
    config = watch.get_config(architecture)
    config.method = "supervised"
    config.loss.w_lb = 0.0
    config.loss.w_ulb = 0.0
    config.loss.w_rec = 0.0
    return config
