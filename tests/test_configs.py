"""Every config file loads, validates, and is locked against typos on the command line."""

import glob
import json
import os
import subprocess
import sys

import helpers
import ml_collections
import pytest

from robult_jax import config as config_lib
from robult_jax import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("__init__.py")
)


def _load(path, *args):
    return configs.load(":".join([path, *args]))


def test_there_are_configs():
    assert any(p.endswith("watch.py") for p in CONFIGS)


@pytest.mark.parametrize("architecture", config_lib.ARCHITECTURES)
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_validates(path, architecture):
    config = _load(path, architecture)
    assert isinstance(config, ml_collections.ConfigDict)
    assert "run" in (_doc := open(path).read().split('"""')[1]).lower() and "--config" in _doc
    typed = config_lib.from_config_dict(config)
    assert typed.model.architecture == architecture
    # The paper trains on complete samples; "fused" needs dropout to learn the subsets.
    assert (typed.sampling.modality_dropout > 0) == (architecture == "fused")


def test_every_config_accepts_data_streaming():
    # Locked configs reject unknown fields: --config.data.streaming=True must parse for all.
    for path in CONFIGS:
        assert _load(path).data.streaming is False, path


def test_default_architecture_is_the_papers():
    for path in CONFIGS:
        assert _load(path).model.architecture == "paper", path


def test_baseline_configs_switch_the_loss_terms():
    sup = _load(os.path.join(ROOT, "configs", "watch_supervised.py"))
    rob = _load(os.path.join(ROOT, "configs", "watch.py"))
    assert (sup.loss.w_lb, sup.loss.w_ulb, sup.loss.w_rec) == (0.0, 0.0, 0.0)
    assert min(rob.loss.w_lb, rob.loss.w_ulb, rob.loss.w_rec, rob.loss.w_sup) > 0
    assert (rob.method, _load(os.path.join(ROOT, "configs", "watch.py"), "fused").method) == (
        "robult", "robult_fused",
    )  # fmt: skip


@pytest.mark.parametrize(
    "architecture,field,value,message",
    [
        ("paper", "model.combine", "max", "model.combine='max' is not one of mean_probs, "),
        ("paper", "model.fusion_stems", "both", "one of own, shared"),
        ("paper", "loss.rec_target", "x", "loss.rec_target='x' is not one of h_i, h_0"),
        ("paper", "model.unique_dim", 8, r"'paper' does not use model.unique_dim=8 \(set to"),
        (
            "paper",
            "model.architecture",
            "fused",
            "'fused' does not use model.fusion_stems='own', "
            "model.combine='mean_probs', loss.w_uni=1.0, loss.rec_target='h_i' .* and needs "
            "model.fusion, model.unique_dim, model.proj_dim .*configs/watch.py:fused",
        ),
        ("fused", "loss.w_uni", 0.5, "'fused' does not use loss.w_uni=0.5"),
        ("fused", "model.fusion", "sum", "model.fusion='sum' is not one of attention, mean"),
        ("paper", "model.architecture", "both", "model.architecture='both' is not one of"),
        ("paper", "model.latent_dim", 0, r"model.latent_dim=0 is outside \[1, inf\]"),
        ("paper", "model.dropout_rate", 1.0, "model.dropout_rate=1.0 is outside"),
        ("paper", "model.seq_layers", 0, "model.seq_layers=0"),
        ("paper", "model.seq_width", -1, "model.seq_width=-1"),
        ("paper", "model.encoders", {"a": "lstm"}, r"model.encoders\['a'\]='lstm' is not one"),
        ("paper", "model.cnn1d_features", (8, 0), "model.cnn1d_features=.* non-empty sequence"),
        ("paper", "eval.mask_seeds", (), "eval.mask_seeds=.* non-empty sequence of seeds"),
        ("paper", "eval.per_modality_rates", ((0.5, 2.0),), "eval.per_modality_rates entry"),
        ("paper", "seed", -1, r"seed=-1 is outside \[0, inf\]"),
        ("fused", "model.num_heads", 3, "divisible by model.num_heads=3"),
        ("paper", "loss.temperature", 0.0, "loss.temperature=0.0 is outside"),
        ("paper", "loss.w_sup", 0.0, r"loss.w_sup=0.0 is outside \(0, inf\]"),
        ("paper", "loss.w_rec", -1.0, "loss.w_rec=-1.0 is outside"),
        ("paper", "optim.grad_clip_norm", -1.0, "optim.grad_clip_norm=-1.0 is outside"),
        ("paper", "optim.weight_decay", -0.1, "optim.weight_decay=-0.1 is outside"),
        ("paper", "optim.warmup_steps", -5, "optim.warmup_steps=-5 is outside"),
        ("paper", "eval.batch_size", 0, "eval.batch_size=0 is outside"),
        ("paper", "eval.split", "train", "eval.split='train' is not one of test, validation"),
        ("paper", "eval.missing_rates", (0.5, 1.0), "eval.missing_rates=.* must be a sequence"),
        ("paper", "sampling.label_rate", 1.5, r"sampling.label_rate=1.5 is outside \(0, 1\]"),
        ("paper", "train.keep_checkpoints", 0, r"train.keep_checkpoints=0 is outside \[1, inf\]"),
    ],
)
def test_bad_values_are_one_clear_message(architecture, field, value, message):
    with pytest.raises(ValueError, match=message):
        helpers.typed_config(architecture, **{field: value})


def test_unknown_and_missing_fields_are_named():
    config = helpers.raw_config()
    config.model.lable = 1  # the Python API does not lock configs: typos must still fail
    with pytest.raises(ValueError, match="model.lable is not a config field"):
        config_lib.from_config_dict(config)
    config = helpers.raw_config()
    del config.loss["sigma"]
    with pytest.raises(ValueError, match="lacks loss.sigma"):
        config_lib.from_config_dict(config)


def test_dataset_checks_name_the_modalities():
    from robult_jax.data.types import DatasetSpec, ModalitySpec

    spec = DatasetSpec(
        "d", (ModalitySpec("a", (8,), "vector"), ModalitySpec("b", (16, 3), "timeseries")),
        task="multiclass", num_outputs=3,
    )  # fmt: skip
    for field, value, message in [
        ("model.encoders", {"c": "mlp"}, "does not have; its modalities are: a, b"),
        ("model.encoders", {"a": "cnn2d"}, "rank"),
        ("model.encoders", {"b": "gru"}, "needs kind 'sequence'"),
        ("sampling.modality_dropout_rates", (0.1,), "in the order a, b"),
        ("eval.per_modality_rates", ((0.1, 0.2, 0.3),), "in the order a, b"),
    ]:
        with pytest.raises(ValueError, match=message):
            config_lib.check_against_dataset(helpers.typed_config(**{field: value}), spec)


def _cli(*args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "robult_jax.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_rejects_unknown_config_key(tmp_path):
    out = _cli(
        "--config",
        "configs/synthetic.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.data.lable_rate=0.1",
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "error: --config.data.lable_rate: 'lable_rate' is not a field" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_cli_workdir_it_cannot_write_is_one_clear_message(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    workdir = tmp_path / "file" / "w"
    out = _cli("--config", "configs/synthetic.py", "--workdir", str(workdir), cwd=ROOT)
    assert out.returncode == 2
    assert f"error: [Errno 20] Not a directory: '{workdir}'" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_bad_value_is_one_clear_message(tmp_path):
    out = _cli(
        "--config",
        "configs/synthetic.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.sampling.label_rate=1.5",
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "error: sampling.label_rate=1.5 is outside (0, 1]" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_trains_and_evaluates_end_to_end(tmp_path):
    out = _cli(
        "--config",
        "configs/synthetic.py:fused",
        "--workdir",
        str(tmp_path / "w"),
        "--config.train.num_steps=6",
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "a+b" in out.stdout
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert (results["architecture"], results["method"]) == ("fused", "robult_fused")


def test_cli_accepts_jax_flags(tmp_path):
    out = _cli(
        "--config", "configs/synthetic.py", "--workdir", str(tmp_path / "w"),
        "--jax_platforms=cpu", "--config.sampling.label_rate=1.5", cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-1000:]
    assert "Unknown command line flag" not in out.stderr
    assert "error: sampling.label_rate=1.5 is outside (0, 1]" in out.stderr
