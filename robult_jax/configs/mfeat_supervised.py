"""Baseline `supervised` on `mfeat`: encoders + fusion + classifier, L_sup only.

Same data, labels, view dropout and schedule as configs/mfeat.py.

Run:
  python -m robult_jax.main --config configs/mfeat_supervised.py --workdir runs/mfeat_sup
"""

from robult_jax.configs import mfeat


def get_config(architecture: str = "paper"):
    config = mfeat.get_config(architecture)
    config.method = "supervised"
    config.loss.w_lb = 0.0
    config.loss.w_ulb = 0.0
    config.loss.w_rec = 0.0
    return config
