"""Trainer tests on the synthetic dataset: one step, resume, bad input, failure safety."""

import json
import os

import chex
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import checkpointing, models, objective, parallel, tasks, train
from robult_jax import config as config_lib
from robult_jax.data import load_dataset, register_dataset, sampler
from robult_jax.data.synthetic import make_synthetic


def _config(architecture="paper", **overrides):
    """The synthetic config made cheaper to compile; every test shares its programs.

    XLA compilation dominates these tests. Programs are cached per session
    (conftest.py), and the schedule's length is compiled into the train step,
    so all tests keep `train.num_steps` (and the model) identical.
    """
    defaults = {
        "model.encoders": {"a": "mlp", "b": "mlp"},
        "train.num_steps": 8,
        "train.log_every": 2,
        "train.eval_every": 4,
        "train.checkpoint_every": 4,
    }
    if architecture == "fused":
        defaults["model.fusion"] = "mean"
    return helpers.raw_config(architecture, **{**defaults, **overrides})


def _params(workdir, config):
    """Latest checkpointed params of a workdir."""
    ckpt = checkpointing.Checkpointer(workdir, keep=2)
    config = config_lib.from_config_dict(config)
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


@pytest.mark.slow
def test_one_step_loss_matches_independent_recomputation(tmp_path):
    """The logged step-1 loss is the objective at the initial params; one row per step."""
    raw = _config(**{"train.log_every": 1, "train.eval_every": 1})
    assert train.train_and_evaluate(raw, str(tmp_path), pause_at_step=2) is None
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [x["step"] for x in lines] == [1, 2]  # train and eval metrics share one row
    logged = lines[0]
    for key in ("loss_sup", "loss_uni", "loss_lb", "loss_ulb", "loss_rec", "learning_rate"):
        assert np.isfinite(logged[f"train/{key}"]), key
    assert {"train/grad_norm", "train/param_norm", "eval/val/score"} <= set(logged)
    # Step 1 compiles: throughput is only measured from the second step on.
    assert "train/steps_per_sec" not in logged and lines[1]["train/steps_per_sec"] > 0
    assert logged["train/learning_rate"] == 0.0  # warm-up starts at 0

    config = config_lib.from_config_dict(raw)
    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
    idx, _ = sampler.load_label_split(str(tmp_path / "label_split.json"))
    s = train.make_sampler(config, dataset.train, idx)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    state = train.init_state(config, model, tx, dataset.spec, init_key, s.batch(0))
    loss, _ = objective.compute_losses(
        state.params,
        model,
        jax.tree.map(jnp.asarray, s.batch(0)),
        jax.random.fold_in(train_key, 0),
        state,
        config.loss,
        tasks.get("multiclass"),
    )
    np.testing.assert_allclose(logged["train/loss"], float(loss), rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_training_learns_and_writes_results(tmp_path, architecture):
    # 40 steps (its own compile): 8 are too few for the paper's own fusion stems.
    config = _config(architecture, **{"train.num_steps": 40, "train.eval_every": 20})
    results = train.train_and_evaluate(config, str(tmp_path))
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    losses = [x["train/loss"] for x in rows if "train/loss" in x]
    assert losses[-1] < losses[0]
    for name in ("results.json", "results.md", "results.png", "config.json", "label_split.json"):
        assert (tmp_path / name).exists(), name
    assert set(results["subsets"]) == {"a", "b", "a+b"}
    assert results["mask_hashes"] and results["commit"]
    assert results["architecture"] == architecture
    # Provenance: software, devices, size and time, besides the config and commit.
    assert results["software"]["jax"] == jax.__version__
    assert results["software"]["flax"] and results["software"]["orbax-checkpoint"]
    assert results["devices"] == {
        "platform": "cpu", "kind": "cpu", "count": 4, "processes": 1,
    }  # fmt: skip
    assert results["num_parameters"] == sum(
        np.size(x) for x in jax.tree.leaves(_params(str(tmp_path), config).params)
    )
    assert results["wall_time_s"] > 0
    timing = results["timing_s"]
    assert list(timing) == list(train.PhaseTimes.PHASES)
    assert all(v >= 0 for v in timing.values()), timing
    # The phases split the invocation: together no more than its wall time, and
    # most of it (the rest is the final results dict and rounding).
    assert (
        0.8 * results["wall_time_s"] - 0.2 <= sum(timing.values()) <= results["wall_time_s"] + 0.1
    )
    assert timing["first_step"] > 0 and timing["train"] > 0 and timing["test_evaluation"] > 0
    assert (
        results["data_fingerprint"]
        == json.loads((tmp_path / "data.json").read_text())["fingerprint"]
    )
    # The synthetic classes are easy (chance is 1/3): both modalities together beat it clearly.
    assert results["subsets"]["a+b"]["accuracy"] > 0.7


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_train_step_on_four_devices_matches_one_device(architecture):
    """The global-batch losses and gradients do not depend on how the batch is split."""
    config = config_lib.from_config_dict(_config(architecture))
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
    schedule = objective.make_schedule(config.optim, config.train.num_steps)
    step = objective.make_train_step(model, tx, config.loss, tasks.get("multiclass"), schedule)
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
        assert key in results[0], key
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, err_msg=key)


def test_different_config_never_touches_existing_workdir(tmp_path):
    config = _config()
    train.train_and_evaluate(config, str(tmp_path), pause_at_step=2)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    saved_config = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="sampling.label_rate"):
        train.train_and_evaluate(_config(**{"sampling.label_rate": 0.5}), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert (tmp_path / "config.json").read_text() == saved_config


def test_a_label_split_left_by_a_failed_attempt_is_checked(tmp_path):
    """A first attempt that stopped right after writing label_split.json must not
    hand its split to a retry with another label rate."""
    sampler.save_label_split(str(tmp_path / "label_split.json"), np.arange(4), rate=0.25, seed=0)
    with pytest.raises(ValueError, match="sampling.label_rate=0.25, not the 0.5 asked for"):
        train.train_and_evaluate(_config(**{"sampling.label_rate": 0.5}), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_non_finite_loss_stops_with_step_and_keeps_checkpoints(tmp_path):
    def nan_dataset(data_config):
        ds = make_synthetic()
        # Finite (so not masked as missing by data.clean), but it overflows the encoders.
        ds.train.inputs["a"][:] = 1e30
        return ds

    register_dataset("synthetic_nan", nan_dataset, overwrite=True)
    config = _config(**{"data.name": "synthetic_nan"})
    with pytest.raises(train.NonFiniteLossError, match="step 2"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("sampling.label_rate", 0.0, "sampling.label_rate"),
        ("sampling.label_rate", 1.5, "sampling.label_rate"),
        ("sampling.modality_dropout", 1.0, "sampling.modality_dropout"),
        ("sampling.labeled_batch", 6, "not divisible by the number of devices"),
        ("data.name", "nope", "nope"),
        ("loss.pu_mode", "soft-ish", "loss.pu_mode"),
        ("model.encoders", {"a": "mlp", "c": "mlp"}, "model.encoders"),
        ("model.fusion", "mean", "'paper' does not use model.fusion='mean'"),
    ],
)
def test_bad_config_fails_before_writing(tmp_path, field, value, message):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(_config(**{field: value}), str(workdir))
    assert not (workdir / "checkpoints").exists()


def test_batch_sizes_are_checked_against_the_mesh_given(tmp_path):
    # 6 rows split over 2 of the 4 test devices, but not over 4 (nor 3 over 2).
    assert jax.device_count() == 4
    config = _config(**{"sampling.labeled_batch": 6, "sampling.unlabeled_batch": 3})
    with pytest.raises(ValueError, match=r"unlabeled_batch=3 is not divisible .* \(2\)"):
        train.train_and_evaluate(config, str(tmp_path / "run"), devices=jax.devices()[:2])
    with pytest.raises(ValueError, match=r"labeled_batch=6 is not divisible .* \(4\)"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_mesh_shards_batches_across_devices():
    mesh = parallel.make_mesh()
    batch = parallel.shard_batch({"x": np.arange(8, dtype=np.float32)}, mesh)
    assert len(batch["x"].sharding.device_set) == jax.device_count()


@pytest.mark.slow
def test_train_and_test_missing_patterns_are_configurable_and_saved(tmp_path):
    """Per-modality train-time dropout, per-modality test patterns, masks saved with hashes."""
    from robult_jax import masks as masks_lib

    config = _config(
        **{
            "sampling.modality_dropout_rates": (0.6, 0.0),
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
    with pytest.raises(ValueError, match="sampling.modality_dropout_rates"):
        rates = {"sampling.modality_dropout_rates": (0.1,)}
        train.train_and_evaluate(_config(**rates), str(tmp_path))
    with pytest.raises(ValueError, match="eval.per_modality_rates"):
        train.train_and_evaluate(
            _config(**{"eval.per_modality_rates": ((0.1, 0.2, 0.3),)}), str(tmp_path)
        )
