"""CMU-MOSI through the whole trainer, on a fixture file in the published format.

Covers what no unit test does together: the affect builder, `configs/mosi.py`,
the transformer sequence encoders, the regression task (L1, label-kernel PU
weights, MAE-based model selection) and the regression metrics.
"""

import os

import numpy as np
import pytest
from test_data_benchmarks import _write_affect

from robult_jax import train
from robult_jax.configs import mosi


@pytest.mark.slow
def test_mosi_config_trains_and_evaluates_on_a_fixture(tmp_path):
    _write_affect(os.path.join(tmp_path, "mosi_data.pkl"))
    config = mosi.get_config()
    config.data.manual_dir = str(tmp_path)
    config.data.data_dir = str(tmp_path / "tfds")
    config.sampling.label_rate = 0.5
    config.sampling.labeled_batch = 4
    config.sampling.unlabeled_batch = 4
    for field, value in dict(latent_dim=16, hidden_dim=16).items():
        config.model[field] = value
    config.model.num_heads = 2
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.train.progress_bar = False
    config.eval.batch_size = 4
    config.eval.missing_rates = (0.0, 0.5)
    config.eval.mask_seeds = (0,)
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["task"] == "regression" and results["primary_metric"] == "mae"
    assert config.model.encoders["text"] == "transformer"
    full = results["subsets"]["vision+audio+text"]
    assert {"mae", "pearson", "acc2", "acc7"} <= set(full)
    # Fixture labels lie in [-3, 3]: any finite model output gives a finite, bounded MAE.
    assert np.isfinite(full["mae"]) and 0 <= full["mae"] < 10
