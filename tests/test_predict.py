"""predict: one tiny training run on an "arrays" dataset, then predictions on new data.

The run (module-scoped, tens of seconds of compilation) trains configs/arrays_example.py
on a .npz written here; every test reads its workdir.
"""

import json
import os
import shutil
import subprocess
import sys
import types

import chex
import jax
import ml_collections
import numpy as np
import pytest

from robult_jax import evaluate, parallel, predict, train
from robult_jax.configs import arrays_example
from robult_jax.data import load_dataset, register_dataset
from robult_jax.data.arrays import load_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_VAL, N_TEST = 72, 24, 24

# Every test here reads one trained workdir (the module fixture trains it: ~12 s).
pytestmark = pytest.mark.slow


def _write_data(path) -> dict:
    """Raw (offset, scaled) arrays with 3 classes; NaN marks a few missing entries in train."""
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_VAL + N_TEST
    labels = np.arange(n) % 3
    protos_a, protos_b = rng.normal(size=(3, 6)), rng.normal(size=(3, 12, 2))
    a = 10.0 + 5.0 * (protos_a[labels] + 0.5 * rng.normal(size=(n, 6)))
    b = -3.0 + 0.1 * (protos_b[labels] + 0.5 * rng.normal(size=(n, 12, 2)))
    a[[1, 5]] = np.nan
    b[2, 3, 1] = np.nan
    split = np.repeat(np.array(["train", "validation", "test"]), [N_TRAIN, N_VAL, N_TEST])
    data = {"a": a, "b": b, "labels": labels, "split": split}
    np.savez(path, **data)
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = _write_data(root / "data.npz")
    register_dataset("arrays", load_arrays, overwrite=True)
    config = arrays_example.get_config()
    config.data.path = str(root / "data.npz")
    config.data.modalities = ml_collections.ConfigDict({"a": "vector", "b": "timeseries"})
    config.sampling.label_rate = 0.5
    config.sampling.labeled_batch = 8
    config.sampling.unlabeled_batch = 8
    # A model cheap to compile: prediction does not depend on which encoders it has.
    config.model.encoders = ml_collections.ConfigDict({"a": "mlp", "b": "mlp"})
    config.model.fusion_stems = "shared"
    config.model.latent_dim, config.model.hidden_dim = 16, 32
    config.optim.warmup_steps = 1
    config.train.num_steps = 4
    config.train.log_every = config.train.eval_every = 2
    config.train.checkpoint_every = 4
    config.train.progress_bar = False
    config.eval.batch_size = 16
    config.eval.missing_rates = (0.0,)
    config.eval.mask_seeds = (0,)
    workdir = str(root / "workdir")
    results = train.train_and_evaluate(config, workdir)
    trained = predict.load_trained(workdir)
    return types.SimpleNamespace(
        root=root, data=data, config=config, workdir=workdir, results=results, trained=trained
    )


def _test_rows(data: dict, *keys: str) -> dict:
    rows = np.flatnonzero(data["split"] == "test")
    return {k: data[k][rows].copy() for k in keys}


def _trainer_logits(run, mask_NxM: np.ndarray) -> np.ndarray:
    """The trainer's own evaluation path on the loaded (normalised) test split."""
    dataset = load_dataset(run.config.data)
    mesh = parallel.make_mesh()
    return evaluate.predict_split(
        evaluate.make_predict_fn(run.trained.model, mesh),
        run.trained.params,
        dataset.test,
        mask_NxM,
        batch_size=run.config.eval.batch_size,
        mesh=mesh,
    )


def test_workdir_records_what_prediction_needs(run):
    spec = json.load(open(os.path.join(run.workdir, "dataset_spec.json")))
    assert [m["name"] for m in spec["modalities"]] == ["a", "b"]
    assert spec["class_names"] == ["0", "1", "2"]
    stats = np.load(os.path.join(run.workdir, "input_stats.npz"))
    assert sorted(stats.files) == ["a/mean", "a/std", "b/mean", "b/std"]
    train_a = run.data["a"][:N_TRAIN]
    present = ~np.isnan(train_a).any(axis=1)
    np.testing.assert_allclose(stats["a/mean"], train_a[present].mean(axis=0))
    assert run.trained.best_step in (2, 4)


def test_predictions_equal_trainer_evaluation_of_best_checkpoint(run):
    raw = _test_rows(run.data, "a", "b")
    out = predict.predict_arrays(run.trained, raw)
    expected = _trainer_logits(run, np.ones((N_TEST, 2), bool))
    chex.assert_shape(out["probabilities"], (N_TEST, 3))
    chex.assert_trees_all_close(out["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["predictions"], expected.argmax(axis=1))
    # The trainer reported test accuracy of the best checkpoint under full modalities.
    accuracy = np.mean(out["predictions"] == _test_rows(run.data, "labels")["labels"])
    assert accuracy == pytest.approx(run.results["subsets"]["a+b"]["accuracy"])
    assert out["mask"].all() and list(out["modality_names"]) == ["a", "b"]


def test_embeddings_come_with_the_predictions_and_are_zero_where_absent(run):
    raw = _test_rows(run.data, "a", "b")
    raw["b"][:3] = np.nan
    plain = predict.predict_arrays(run.trained, raw)
    out = predict.predict_arrays(run.trained, raw, embeddings=True)
    np.testing.assert_array_equal(out["logits"], plain["logits"])
    p = run.trained.config.model.embed_dim
    chex.assert_shape(out["s"], (N_TEST, p))
    chex.assert_shape(out["z"], (N_TEST, 2, p))
    chex.assert_shape(out["u"], (N_TEST, 2, run.trained.config.model.latent_dim))
    assert not out["z"][:3, 1].any() and not out["u"][:3, 1].any()
    np.testing.assert_allclose(np.linalg.norm(out["z"][3:], axis=-1), 1.0, rtol=1e-5)
    assert np.isfinite(out["s"]).all()


def test_nan_or_mask_marks_a_modality_missing_per_sample(run):
    raw = _test_rows(run.data, "a", "b")
    raw["a"][0] = np.nan
    raw["b"][1, 5, 0] = np.nan
    mask = np.ones((N_TEST, 2), bool)
    mask[2, 0] = False
    raw["a"][2] = 1e6  # masked: must not matter
    out = predict.predict_arrays(run.trained, raw, mask)
    expected_mask = np.ones((N_TEST, 2), bool)
    expected_mask[0, 0] = expected_mask[1, 1] = expected_mask[2, 0] = False
    np.testing.assert_array_equal(out["mask"], expected_mask)
    chex.assert_trees_all_close(out["logits"], _trainer_logits(run, expected_mask), atol=1e-5)


def test_absent_array_needs_an_all_false_mask_column(run):
    raw = _test_rows(run.data, "a")
    with pytest.raises(ValueError, match=r"inputs\['b'\] not found.*a \(N, 6\), b \(N, 12, 2\)"):
        predict.predict_arrays(run.trained, raw)
    mask = np.zeros((N_TEST, 2), bool)
    mask[:, 0] = True
    out = predict.predict_arrays(run.trained, raw, mask)
    chex.assert_trees_all_close(out["logits"], _trainer_logits(run, mask), atol=1e-5)


def test_bad_inputs_are_named(run):
    raw = _test_rows(run.data, "a", "b")
    with pytest.raises(ValueError, match=r"inputs\['b'\] has per-sample shape \(12, 3\)"):
        predict.predict_arrays(run.trained, {**raw, "b": np.zeros((N_TEST, 12, 3))})
    with pytest.raises(ValueError, match=r"inputs\['a'\] has 24 rows, inputs\['b'\] has 5 rows"):
        predict.predict_arrays(run.trained, {**raw, "b": raw["b"][:5]})
    with pytest.raises(ValueError, match=r"inputs\['mask'\]: the mask must be \(N, M\)"):
        predict.predict_arrays(run.trained, raw, np.ones((N_TEST, 3), bool))


def test_infinite_overflowing_and_absurd_inputs_are_refused(run):
    raw = _test_rows(run.data, "a", "b")
    for value in (np.inf, -np.inf, 1e300):  # 1e300 becomes inf as a float32
        bad = {**raw, "a": raw["a"].copy()}
        bad["a"][[3, 5], 1] = value
        with pytest.raises(
            ValueError,
            match=r"inputs\['a'\]: rows 3, 5 hold infinite values, or values that "
            r"overflow float32 after normalisation.*set those samples' 'a' to NaN",
        ):
            predict.predict_arrays(run.trained, bad)
    bad = {**raw, "b": raw["b"].copy()}
    bad["b"][4, 0, 0] = -9999.0  # a sentinel; "b" has a std of about 0.1: 1e5 stds out
    with pytest.raises(
        ValueError,
        match=r"inputs\['b'\]: rows 4 hold values up to .* training standard "
        r"deviations from the training mean \(more than 10000\)",
    ):
        predict.predict_arrays(run.trained, bad)
    # Masked out or NaN-marked, a sample's values do not matter; nearer values are fine.
    bad["b"][5] = np.inf
    bad["b"][6, 1, 1] = np.nan
    bad["b"][7, 0, 0] = raw["b"][7, 0, 0] + 10.0  # ~100 standard deviations
    mask = np.ones((N_TEST, 2), bool)
    mask[[4, 5], 1] = False
    out = predict.predict_arrays(run.trained, bad, mask)
    assert np.isfinite(out["probabilities"]).all()
    assert not out["mask"][[4, 5, 6], 1].any() and out["mask"][7].all()


def test_load_trained_says_to_train_first(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no training run.*train first"):
        predict.load_trained(str(tmp_path))
    for name in ("config.json", "dataset_spec.json"):
        shutil.copy(os.path.join(run.workdir, name), tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no best checkpoint.*train first"):
        predict.load_trained(str(tmp_path))


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "robult_jax.predict", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_predictions_and_rejects_bad_input(run, tmp_path):
    raw = _test_rows(run.data, "a", "b")
    raw["b"][:3] = np.nan
    np.savez(tmp_path / "new.npz", **raw, labels=np.zeros(N_TEST))
    out_path = tmp_path / "out" / "preds.npz"
    out = _cli(
        "--workdir", run.workdir, "--input", str(tmp_path / "new.npz"), "--output", str(out_path)
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 samples had a missing modality" in out.stdout
    preds = np.load(out_path)
    assert set(preds.files) == {
        "probabilities",
        "predictions",
        "logits",
        "mask",
        "modality_names",
        "class_names",
    }
    chex.assert_shape(preds["probabilities"], (N_TEST, 3))
    chex.assert_shape(preds["predictions"], (N_TEST,))
    assert list(preds["class_names"]) == ["0", "1", "2"]
    assert not preds["mask"][:3, 1].any() and preds["mask"][3:].all()
    here = predict.predict_arrays(run.trained, raw)
    chex.assert_trees_all_close(preds["probabilities"], here["probabilities"], atol=1e-5)

    np.savez(tmp_path / "bad.npz", a=raw["a"])
    out = _cli(
        "--workdir",
        run.workdir,
        "--input",
        str(tmp_path / "bad.npz"),
        "--output",
        str(tmp_path / "x.npz"),
    )
    assert out.returncode == 2
    assert f"error: {tmp_path / 'bad.npz'}['b'] not found" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "x.npz").exists()


def test_export_writes_the_best_parameters_alone_and_reads_the_workdir_only(run, tmp_path):
    from flax import serialization

    from robult_jax import export

    before = sorted(os.listdir(run.workdir))
    out = str(tmp_path / "params.msgpack")
    record = export.export_params(run.workdir, out)
    assert sorted(os.listdir(run.workdir)) == before
    with open(out, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    chex.assert_trees_all_equal(params, jax.device_get(run.trained.params))
    assert record["best_step"] == run.trained.best_step
    with open(out + ".json") as f:
        saved = json.load(f)
    assert saved["num_parameters"] == sum(x.size for x in jax.tree.leaves(params))
    assert saved["dataset_spec"]["name"] == run.trained.spec.name
    assert "opt_state" not in params
