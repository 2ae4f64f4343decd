"""Golden numbers: step-1 loss terms, gradient norm and parameter norm, both architectures.

The values below were produced by this code on the tiny synthetic config
(configs/synthetic.py, multiclass) on one CPU device; the "fused" values are
also what the project's first trainer (commit 17a1916, before the two
architectures) logged for the same config, to float32 rounding (step 2's loss
differs by 1e-7 relative: optax's cross-entropy instead of a hand-written one).
Any change to the model, the losses, the sampler, the initialisation or the
optimiser moves them.

When such a change is *intended*, update the numbers on purpose: run
  PYTHONPATH=. .venv/bin/python tests/test_golden.py
which prints the current values as a dict to paste below, and say in the
commit message why they moved.
"""

import helpers
import jax
import numpy as np
import pytest

from robult_jax import models, objective, tasks, train
from robult_jax.data import load_dataset, sampler

GOLDEN = {
    "paper": {
        "grad_norm": [37.24985885620117, 34.65126419067383],
        "labeled_accuracy": [0.25, 0.125],
        "learning_rate": [0.0, 0.0010000000474974513],
        "loss": [11.585474014282227, 13.12289047241211],
        "loss_lb": [4.153951168060303, 5.034073829650879],
        "loss_rec": [0.726020872592926, 0.7013077735900879],
        "loss_sup": [1.155456304550171, 1.172440528869629],
        "loss_ulb": [4.581826210021973, 5.122014045715332],
        "loss_uni": [0.9682199358940125, 1.0930538177490234],
        "param_norm": [34.41204833984375, 34.41277313232422],
    },
    "fused": {
        "grad_norm": [52.742191314697266, 32.43208694458008],
        "labeled_accuracy": [0.25, 0.5],
        "learning_rate": [0.0, 0.0010000000474974513],
        "loss": [12.105804443359375, 11.117851257324219],
        "loss_lb": [5.4503607749938965, 5.1642842292785645],
        "loss_rec": [0.37142276763916016, 0.37774601578712463],
        "loss_sup": [1.127813696861267, 1.0630486011505127],
        "loss_ulb": [5.156207084655762, 4.512772560119629],
        "param_norm": [30.987287521362305, 30.986373901367188],
    },
}


def step_metrics(architecture: str, num_steps: int = 2) -> list[dict[str, float]]:
    """Metrics of the first `num_steps` train steps, on one device, no mesh."""
    config = helpers.typed_config(architecture)
    dataset = load_dataset(config.data)
    idx = sampler.label_split(
        dataset.train.labels, config.sampling.label_rate, config.sampling.label_seed
    )
    batches = train.make_sampler(config, dataset.train, idx)  # the trainer's own batches
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
    schedule = objective.make_schedule(config.optim, config.train.num_steps)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    state = train.init_state(config, model, tx, dataset.spec, init_key, batches.batch(0))
    step = jax.jit(
        objective.make_train_step(model, tx, config.loss, tasks.get("multiclass"), schedule)
    )
    rows = []
    for s in range(num_steps):
        state, metrics = step(state, batches.batch(s), train_key)
        rows.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return rows


@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_golden_first_steps(architecture):
    got = step_metrics(architecture)
    want = GOLDEN[architecture]
    assert sorted(got[0]) == sorted(want), "logged metrics changed; see the module docstring"
    for key, values in want.items():
        np.testing.assert_allclose([r[key] for r in got], values, rtol=2e-5, err_msg=key)


if __name__ == "__main__":
    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    for arch in ("paper", "fused"):
        rows = step_metrics(arch)
        print(f'    "{arch}": {{')
        for key in sorted(rows[0]):
            print(f'        "{key}": [{", ".join(repr(r[key]) for r in rows)}],')
        print("    },")
