"""The objective on rows that miss a modality in training (docs/method.md 2.1, "paper").

A row without every modality has no h_0 and no s: the fused term of L_sup, both
contrastive terms (as anchor and as candidate) and L_rec with target h_0 must
not depend on it, while its present modalities still train the unimodal terms
and L_rec with target h_i.
"""

import functools

import helpers
import jax
import numpy as np
import pytest

from robult_jax import models, objective, tasks, train
from robult_jax.data import load_dataset, sampler


@functools.cache
def _setup(rec_target: str):
    config = helpers.typed_config(**{"loss.rec_target": rec_target, "model.dropout_rate": 0.0})
    dataset = load_dataset(config.data)
    batches = sampler.SemiSupervisedSampler(
        dataset.train,
        sampler.label_split(dataset.train.labels, 0.25, 0),
        labeled_batch=8,
        unlabeled_batch=8,
        modality_dropout=0.0,
        seed=0,
    )
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
    state = train.init_state(config, model, tx, dataset.spec, jax.random.key(0), batches.batch(0))
    task = tasks.get("multiclass")

    @jax.jit
    def terms(batch):
        _, aux = objective.compute_losses(
            state.params, model, batch, jax.random.key(1), state, config.loss, task
        )
        return aux["terms"]

    return batches.batch(0), terms


@pytest.mark.parametrize("rec_target", ["h_i", "h_0"])
def test_incomplete_rows_leave_every_term_that_needs_h0(rec_target):
    batch, terms = _setup(rec_target)
    # Row 2 (labeled) and row 11 (unlabeled) lack modality "b"; their "a" is present.
    batch = dict(batch, mask=batch["mask"].copy(), inputs=dict(batch["inputs"]))
    batch["mask"][[2, 11], 1] = False
    batch["inputs"]["b"] = batch["inputs"]["b"].copy()
    batch["inputs"]["b"][[2, 11]] = 0.0
    base = terms(batch)

    changed = dict(batch, inputs=dict(batch["inputs"]))
    changed["inputs"]["a"] = batch["inputs"]["a"].copy()
    changed["inputs"]["a"][[2, 11]] += 3.0  # the incomplete rows' present modality
    other = terms(changed)

    fused_terms = ["sup", "lb", "ulb"] + (["rec"] if rec_target == "h_0" else [])
    for name in fused_terms:
        np.testing.assert_array_equal(base[name], other[name], err_msg=name)
    for name in ["uni"] + (["rec"] if rec_target == "h_i" else []):
        assert not np.allclose(base[name], other[name]), name  # still trained by those rows

    # The test can fail: the same change on a complete row moves the fused terms.
    complete = dict(batch, inputs=dict(batch["inputs"]))
    complete["inputs"]["a"] = batch["inputs"]["a"].copy()
    complete["inputs"]["a"][[3, 12]] += 3.0
    moved = terms(complete)
    for name in ["sup", "lb", "ulb"]:
        assert not np.allclose(base[name], moved[name]), name
