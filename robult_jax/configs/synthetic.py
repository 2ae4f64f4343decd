"""Robult on a tiny synthetic dataset made in code: smoke runs and tests (seconds).

Run:
  python -m robult_jax.main --config configs/synthetic.py --workdir runs/synthetic
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True is refused: the data is made in memory
    config.data.data_dir = ""  # unused: nothing is written or read
    config.data.num_classes = 3
    config.data.num_train = 96
    config.data.num_val = 32
    config.data.num_test = 32
    # name -> per-sample shape; 1 dim = vector (mlp), 2 dims = time series (cnn1d)
    config.data.modality_shapes = ml_collections.ConfigDict({"a": (8,), "b": (16, 3)})
    config.data.noise = 0.5
    config.data.task = "multiclass"  # | "multilabel" | "regression" (see data/synthetic.py)
    config.data.synthetic_seed = 0  # the dataset itself; config.seed drives training
    config.sampling.label_rate = 0.25
    config.sampling.label_seed = 0
    config.sampling.labeled_batch = 8
    config.sampling.unlabeled_batch = 8

    config.model.latent_dim = 16
    if architecture == "fused":
        config.model.unique_dim = 8
        config.model.proj_dim = 16
    config.model.hidden_dim = 32
    config.model.num_heads = 2
    config.model.encoders = ml_collections.ConfigDict({"a": "mlp", "b": "cnn1d"})

    config.optim.warmup_steps = 2
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    config.train.progress_bar = False
    config.train.tensorboard = False
    config.eval.batch_size = 16
    config.eval.missing_rates = (0.0, 0.5)
    config.eval.mask_seeds = (0, 1)
    return config
