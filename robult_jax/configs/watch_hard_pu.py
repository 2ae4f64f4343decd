"""Ablation `hard_pu` on `watch`: PU weights from hard pseudo-labels, no RBF proximity.

Run:
  python -m robult_jax.main --config configs/watch_hard_pu.py --workdir runs/watch_hard_pu
"""

from robult_jax.configs import watch


def get_config(architecture: str = "paper"):
    config = watch.get_config(architecture)
    config.method = "hard_pu"
    config.loss.pu_mode = "hard"
    return config
