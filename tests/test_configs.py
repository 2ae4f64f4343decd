"""Every config file loads, validates, and is locked against typos on the command line."""

import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import pytest

from robult_jax import config_validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("__init__.py")
)


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_there_are_configs():
    assert any(p.endswith("watch.py") for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_validates(path):
    config = _load(path)
    assert isinstance(config, ml_collections.ConfigDict)
    assert "run" in (_doc := open(path).read().split('"""')[1]).lower() and "--config" in _doc
    config_validation.validate_config(config)


def test_baseline_configs_switch_the_loss_terms():
    sup = _load(os.path.join(ROOT, "configs", "watch_supervised.py"))
    rob = _load(os.path.join(ROOT, "configs", "watch.py"))
    assert (sup.loss.w_lb, sup.loss.w_ulb, sup.loss.w_rec) == (0.0, 0.0, 0.0)
    assert min(rob.loss.w_lb, rob.loss.w_ulb, rob.loss.w_rec, rob.loss.w_sup) > 0


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
    assert out.returncode != 0
    assert "lable_rate" in out.stderr
    assert not (tmp_path / "w").exists()


def test_cli_bad_value_is_one_clear_message(tmp_path):
    out = _cli(
        "--config",
        "configs/synthetic.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.data.label_rate=1.5",
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "error: data.label_rate=1.5 is outside (0, 1]" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_trains_and_evaluates_end_to_end(tmp_path):
    out = _cli(
        "--config",
        "configs/synthetic.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.train.num_steps=6",
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "a+b" in out.stdout
    assert (tmp_path / "w" / "results.json").exists()
