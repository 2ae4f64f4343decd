"""Trainer tests on the synthetic dataset: one step, resume, bad input, failure safety."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from robult_jax import checkpointing, models, objective, parallel, train
from robult_jax.data import load_dataset, register_dataset, sampler
from robult_jax.data.synthetic import make_synthetic


def _config(**overrides):
    config = synthetic.get_config()
    for dotted, value in overrides.items():
        node = config
        *path, leaf = dotted.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def _params(workdir, config):
    """Latest checkpointed params of a workdir."""
    ckpt = checkpointing.Checkpointer(workdir, keep=2)
    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
    s = sampler.SemiSupervisedSampler(
        dataset.train,
        np.arange(8),
        labeled_batch=8,
        unlabeled_batch=8,
        modality_dropout=0.0,
        seed=0,
    )
    state = train.create_state(config, model, tx, dataset.spec, jax.random.key(0), s.batch(0))
    restored = ckpt.restore_latest(checkpointing.abstract_like(state))
    ckpt.close()
    return restored


def test_one_step_loss_matches_independent_recomputation(tmp_path):
    """Golden one-step test: the logged step-1 loss is the objective at the initial params."""
    config = _config(**{"train.num_steps": 1, "train.log_every": 1, "train.eval_every": 1})
    train.train_and_evaluate(config, str(tmp_path))
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    logged = next(x for x in lines if "train/loss" in x)
    assert logged["step"] == 1
    for key in ("train/loss_sup", "train/loss_lb", "train/loss_ulb", "train/loss_rec"):
        assert np.isfinite(logged[key])
    assert {"train/grad_norm", "train/param_norm"} <= set(logged)

    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, 1)
    idx, _ = sampler.load_label_split(str(tmp_path / "label_split.json"))
    s = sampler.SemiSupervisedSampler(
        dataset.train,
        idx,
        labeled_batch=config.data.labeled_batch,
        unlabeled_batch=config.data.unlabeled_batch,
        modality_dropout=config.data.modality_dropout,
        seed=config.seed,
    )
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    state = train.create_state(config, model, tx, dataset.spec, init_key, s.batch(0))
    loss, _ = objective.compute_losses(
        state.params,
        model,
        jax.tree.map(jnp.asarray, s.batch(0)),
        jax.random.fold_in(train_key, 0),
        state,
        config.loss,
        "multiclass",
    )
    np.testing.assert_allclose(logged["train/loss"], float(loss), rtol=1e-4)


def test_training_reduces_loss_and_writes_results(tmp_path):
    config = _config(**{"train.num_steps": 40, "train.log_every": 10})
    results = train.train_and_evaluate(config, str(tmp_path))
    losses = [
        json.loads(x)["train/loss"] for x in open(tmp_path / "metrics.jsonl") if "train/loss" in x
    ]
    assert losses[-1] < losses[0]
    for name in ("results.json", "results.md", "results.png", "config.json", "label_split.json"):
        assert (tmp_path / name).exists(), name
    assert set(results["subsets"]) == {"a", "b", "a+b"}
    assert results["mask_hashes"] and results["commit"]
    # The synthetic classes are easy: both modalities together beat chance clearly.
    assert results["subsets"]["a+b"]["accuracy"] > 0.6


def test_resume_continues_exactly_as_uninterrupted(tmp_path):
    config = _config(**{"train.num_steps": 10, "train.checkpoint_every": 100})
    straight, paused = str(tmp_path / "straight"), str(tmp_path / "paused")
    train.train_and_evaluate(config, straight)
    assert train.train_and_evaluate(config, paused, pause_at_step=4) is None
    assert _params(paused, config).step == 4
    train.train_and_evaluate(config, paused)
    a, b = _params(straight, config), _params(paused, config)
    assert int(a.step) == int(b.step) == 10
    chex.assert_trees_all_close(a.params, b.params, atol=1e-6)
    chex.assert_trees_all_close(a.centroids_CxP, b.centroids_CxP, atol=1e-6)


def test_one_device_and_four_devices_agree(tmp_path):
    config = _config(**{"train.num_steps": 3, "data.modality_dropout": 0.0})
    train.train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
    train.train_and_evaluate(config, str(tmp_path / "four"), devices=jax.devices()[:4])
    a, b = _params(str(tmp_path / "one"), config), _params(str(tmp_path / "four"), config)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-5)


def test_different_config_never_touches_existing_workdir(tmp_path):
    config = _config(**{"train.num_steps": 2})
    train.train_and_evaluate(config, str(tmp_path))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    saved_config = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="data.label_rate"):
        train.train_and_evaluate(_config(**{"data.label_rate": 0.5}), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert (tmp_path / "config.json").read_text() == saved_config


def test_non_finite_loss_stops_with_step_and_keeps_checkpoints(tmp_path):
    def nan_dataset(data_config):
        ds = make_synthetic()
        ds.train.inputs["a"][:] = np.nan
        return ds

    register_dataset("synthetic_nan", nan_dataset, overwrite=True)
    config = _config(**{"data.name": "synthetic_nan", "train.num_steps": 4, "train.log_every": 2})
    with pytest.raises(train.NonFiniteLossError, match="step 2"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("data.label_rate", 0.0, "data.label_rate"),
        ("data.label_rate", 1.5, "data.label_rate"),
        ("data.modality_dropout", 1.0, "data.modality_dropout"),
        ("data.labeled_batch", 6, "not divisible by the number of devices"),
        ("data.name", "nope", "nope"),
        ("loss.pu_mode", "soft-ish", "loss.pu_mode"),
        ("model.encoders", {"a": "mlp", "c": "mlp"}, "model.encoders"),
    ],
)
def test_bad_config_fails_before_writing(tmp_path, field, value, message):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(_config(**{field: value}), str(workdir))
    assert not (workdir / "checkpoints").exists()


def test_mesh_shards_batches_across_devices():
    mesh = parallel.make_mesh()
    batch = parallel.shard_batch({"x": np.arange(8, dtype=np.float32)}, mesh)
    assert len(batch["x"].sharding.device_set) == jax.device_count()
