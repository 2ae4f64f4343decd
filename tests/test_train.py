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
    """The synthetic config made cheaper to compile; every test shares its programs.

    XLA compilation dominates these tests. Programs are cached per session
    (conftest.py), and the schedule's length is compiled into the train step,
    so all tests keep `train.num_steps` (and the model) identical.
    """
    config = synthetic.get_config()
    config.model.fusion = "mean"
    config.model.encoders = {"a": "mlp", "b": "mlp"}
    config.train.num_steps = 8
    config.train.log_every = 2
    config.train.eval_every = 4
    config.train.checkpoint_every = 4
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
    abstract = jax.eval_shape(
        lambda: train.create_state(config, model, tx, dataset.spec, jax.random.key(0), s.batch(0))
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    return restored


def test_one_step_loss_matches_independent_recomputation(tmp_path):
    """Golden one-step test: the logged step-1 loss is the objective at the initial params."""
    config = _config(**{"train.log_every": 1})
    assert train.train_and_evaluate(config, str(tmp_path), pause_at_step=1) is None
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    logged = next(x for x in lines if "train/loss" in x)
    assert logged["step"] == 1
    for key in ("train/loss_sup", "train/loss_lb", "train/loss_ulb", "train/loss_rec"):
        assert np.isfinite(logged[key])
    assert {"train/grad_norm", "train/param_norm"} <= set(logged)

    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
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
    state = train.init_state(config, model, tx, dataset.spec, init_key, s.batch(0))
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
    config = _config(**{"train.log_every": 1})
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
    assert results["subsets"]["a+b"]["accuracy"] > 0.5


@pytest.mark.parametrize("task,metric", [("multilabel", "macro_f1"), ("regression", "mae")])
def test_other_task_types_train_and_report_their_metrics(tmp_path, task, metric):
    config = _config(**{"data.task": task})
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["task"] == task and results["primary_metric"] == metric
    for section in ("subsets", "random_missing"):
        assert all(metric in r for r in results[section].values())
    assert np.isfinite(results["subsets"]["a+b"][metric])
    assert (
        metric in (tmp_path / "results.md").read_text()
        or task in (tmp_path / "results.md").read_text()
    )


def test_resume_continues_exactly_as_uninterrupted(tmp_path):
    config = _config(**{"train.checkpoint_every": 100})
    straight, paused = str(tmp_path / "straight"), str(tmp_path / "paused")
    train.train_and_evaluate(config, straight)
    assert train.train_and_evaluate(config, paused, pause_at_step=4) is None
    assert _params(paused, config).step == 4
    train.train_and_evaluate(config, paused)
    a, b = _params(straight, config), _params(paused, config)
    assert int(a.step) == int(b.step) == 8
    chex.assert_trees_all_close(a.params, b.params, atol=1e-6)
    chex.assert_trees_all_close(a.centroids_CxP, b.centroids_CxP, atol=1e-6)


def test_train_step_on_four_devices_matches_one_device():
    """The global-batch losses and gradients do not depend on how the batch is split."""
    config = _config()
    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
    s = sampler.SemiSupervisedSampler(
        dataset.train,
        sampler.label_split(dataset.train.labels, 0.25, 0),
        labeled_batch=8,
        unlabeled_batch=8,
        modality_dropout=0.3,
        seed=0,
    )
    state = train.init_state(config, model, tx, dataset.spec, jax.random.key(0), s.batch(0))
    step = objective.make_train_step(model, tx, config.loss, "multiclass")
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        mesh = parallel.make_mesh(devices)
        batch = parallel.shard_batch(s.batch(3), mesh)
        assert len(batch["mask"].sharding.device_set) == len(devices)
        jitted = jax.jit(step, donate_argnums=(0,))  # the trainer's exact program
        # A copy: on one device, device_put may return `state` itself, which the
        # donation would then delete before the second mesh gets it.
        copy = jax.tree.map(jnp.copy, state)
        _, metrics = jitted(parallel.replicate(copy, mesh), batch, jax.random.key(1))
        results.append(jax.device_get(metrics))
    for key in ("loss", "loss_sup", "loss_lb", "loss_ulb", "loss_rec", "grad_norm"):
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, err_msg=key)


def test_different_config_never_touches_existing_workdir(tmp_path):
    config = _config()
    train.train_and_evaluate(config, str(tmp_path), pause_at_step=2)
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
    config = _config(**{"data.name": "synthetic_nan"})
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


def test_train_and_test_missing_patterns_are_configurable_and_saved(tmp_path):
    """Per-modality train-time dropout, per-modality test patterns, masks saved with hashes."""
    from robult_jax import masks as masks_lib

    config = _config(
        **{
            "data.modality_dropout_rates": (0.6, 0.0),
            "eval.per_modality_rates": ((0.0, 0.5), (0.5, 0.0)),
        }
    )
    results = train.train_and_evaluate(config, str(tmp_path))
    assert set(results["per_modality_missing"]) == {"a=0,b=0.5", "a=0.5,b=0"}
    assert "missing per modality a=0.5,b=0" in (tmp_path / "results.md").read_text()
    saved, meta = masks_lib.load_masks(str(tmp_path / "eval_masks.npz"))
    assert meta["modalities"] == ["a", "b"]
    for name, mask in saved.items():
        assert results["mask_hashes"][name] == masks_lib.mask_hash(mask)
    # Pattern (0.5, 0): modality b is never dropped at test time.
    assert saved["rate=a=0.5,b=0/seed=0"][:, 1].all()
    assert not saved["rate=a=0.5,b=0/seed=0"][:, 0].all()


def test_per_modality_rates_must_match_the_modalities(tmp_path):
    with pytest.raises(ValueError, match="data.modality_dropout_rates"):
        train.train_and_evaluate(_config(**{"data.modality_dropout_rates": (0.1,)}), str(tmp_path))
    with pytest.raises(ValueError, match="eval.per_modality_rates"):
        train.train_and_evaluate(
            _config(**{"eval.per_modality_rates": ((0.1, 0.2, 0.3),)}), str(tmp_path)
        )
