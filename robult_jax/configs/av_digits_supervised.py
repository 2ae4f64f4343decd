"""Baseline `supervised` on `av_digits`, AV-MNIST-style (synthetic audio): L_sup only.

Same data, labels, modality dropout and schedule as configs/av_digits.py.

Run:
  python -m robult_jax.main --config configs/av_digits_supervised.py --workdir runs/av_digits_sup
"""

from robult_jax.configs import av_digits


def get_config(architecture: str = "paper"):
    config = av_digits.get_config(architecture)
    config.method = "supervised"
    config.loss.w_lb = 0.0
    config.loss.w_ulb = 0.0
    config.loss.w_rec = 0.0
    return config
