"""Ablation `robult_no_rec` on `watch`: full Robult without the latent reconstruction loss.

Run:
  python -m robult_jax.main --config configs/watch_robult_no_rec.py --workdir runs/watch_norec
"""

from robult_jax.configs import watch


def get_config(architecture: str = "paper"):
    config = watch.get_config(architecture)
    config.method = "robult_no_rec"
    config.loss.w_rec = 0.0
    return config
