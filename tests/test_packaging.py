"""`pip install robult_jax` (the core, no extras) gives working losses and models.

A fresh virtual environment in tmp_path gets the repository installed as a
user would get it: a built wheel with only the `dependencies` of
pyproject.toml (pip takes them from its index and cache: network to PyPI is
needed). Then, from a directory outside the repository, one loss is jitted on
tiny arrays, the model modules are imported, and the heavy optional packages
(TensorFlow, tensorflow-datasets, matplotlib) must be absent.

Why a copy of the sources: pip builds a local directory in place, leaving
`build/` and `*.egg-info` in the tree; building from a copy leaves the
repository untouched (and proves the wheel needs no other file of it).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the build reads: the project table, the readme and license it names,
# and the package (configs included).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "robult_jax")
# Not in the core install: the data, plot and train extras bring them.
ABSENT = ("tensorflow", "tensorflow_datasets", "matplotlib")
INSTALL_TIMEOUT_S = 1200  # ~1 min here (local wheels); from PyPI alone ~175 MB of wheels
RUN_TIMEOUT_S = 300

SNIPPET = f"""
import importlib.util, json, math
import jax, jax.numpy as jnp
import robult_jax
from robult_jax import losses
import robult_jax.models, robult_jax.encoders, robult_jax.config  # the model code

loss = jax.jit(lambda logits, labels: losses.supervised_loss(logits, labels).mean())
value = float(loss(jnp.zeros((2, 4)), jnp.array([0, 3])))
assert math.isclose(value, math.log(4.0), rel_tol=1e-6), value
print(json.dumps({{
    "loss": value,
    "robult_jax": robult_jax.__file__,
    "present": [m for m in {ABSENT!r} if importlib.util.find_spec(m) is not None],
}}))
"""


def _run(cmd, timeout, **kwargs) -> subprocess.CompletedProcess:
    """Runs `cmd`; on a non-zero exit or a timeout, fails with the tail of its output."""
    __tracebackhide__ = True  # the failure message says it all
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(
            f"timed out after {timeout} s: {' '.join(cmd)}\n"
            f"--- stdout (tail) ---\n{(out or '')[-3000:]}\n"
            f"--- stderr (tail) ---\n{(err or '')[-3000:]}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"exit {proc.returncode} after {time.monotonic() - start:.0f} s: {' '.join(cmd)}\n"
            f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.mark.slow
def test_core_install_in_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], RUN_TIMEOUT_S)
    py = str(venv / "bin" / "python")
    # The environment of this test run, less what would point the new venv's
    # Python at this one's packages or at the repository.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"JAX_PLATFORMS": "cpu", "PYTHONNOUSERSITE": "1", "PIP_NO_INPUT": "1"}
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    _run([*pip, str(src)], INSTALL_TIMEOUT_S, env=env, cwd=tmp_path)

    outside = tmp_path / "elsewhere"  # neither the repository nor the copy: no local import
    outside.mkdir()
    proc = _run([py, "-c", SNIPPET], RUN_TIMEOUT_S, env=env, cwd=outside)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["robult_jax"].startswith(str(venv)), result["robult_jax"]
    assert result["present"] == [], f"the core install pulled {result['present']}"

    # The console script of [project.scripts]; `--help` lists the commands
    # without importing them.
    script = venv / "bin" / "robult-jax"
    assert script.exists()
    usage = _run([str(script), "--help"], RUN_TIMEOUT_S, env=env, cwd=outside).stdout
    assert "train" in usage and "predict" in usage, usage
