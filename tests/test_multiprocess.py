"""`robult-jax train --distributed` as 2 processes x 2 CPU devices equals 1 process x 4.

The multi-host code path (jax.distributed, each process sampling its own rows
of the global batch, cross-process checkpoints and evaluation), started from
the command line as a user would, on one machine over the gloo CPU
collectives. Its checkpoints then restore in single-process programs: a
resumed run continues from one, and predict uses its best.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from test_train import _config

from robult_jax import distributed, predict, train
from robult_jax.data import load_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The trainer tests' config (same programs, same run) as a config file for the CLI.
CONFIG_FILE = f"""
import sys
sys.path.insert(0, {HERE!r})
from test_train import _config


def get_config():
    return _config()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, workdir, num_processes: int, devices_each: int) -> list[str]:
    """Runs `python -m robult_jax train --distributed` as `num_processes` local processes.

    Returns each process's stderr. The processes are killed if any fails or the
    test is interrupted; output goes to files (a full pipe would stall a process
    and with it the other, which waits in a collective).
    """
    config = tmp_path / "mp_config.py"
    config.write_text(CONFIG_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["ROBULT_JAX_COMPILE_CACHE"] = str(tmp_path / "xla_cache")  # not the user's cache
    port = _free_port()
    procs, logs = [], []
    try:
        for i in range(num_processes):
            log = open(tmp_path / f"process_{i}.log", "w+")
            logs.append(log)
            command = [
                sys.executable, "-m", "robult_jax", "train", "--config", str(config),
                "--workdir", str(workdir), "--distributed",
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={num_processes}", f"--process_id={i}",
                f"--jax_num_cpu_devices={devices_each}",
                "--jax_cpu_collectives_implementation=gloo",
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            )
        for p in procs:
            p.wait(timeout=600)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
        for p, out in zip(procs, outputs, strict=True):
            assert p.returncode == 0, out[-3000:]
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def _assert_results_close(actual: dict, expected: dict, atol=1e-6):
    for subset, metrics in expected["subsets"].items():
        for name, value in metrics.items():
            np.testing.assert_allclose(
                actual["subsets"][subset][name], value, atol=atol, err_msg=f"{subset}/{name}"
            )
    for rate, row in expected["random_missing"].items():
        for name, value in row.items():  # one value per mask seed
            np.testing.assert_allclose(
                actual["random_missing"][rate][name]["values"], value["values"], atol=atol,
                err_msg=f"{rate}/{name}",
            )  # fmt: skip


@pytest.mark.slow
def test_two_processes_from_the_command_line_match_one_process(tmp_path):
    multi = tmp_path / "multi"
    _launch(tmp_path, multi, num_processes=2, devices_each=2)
    results = json.loads((multi / "results.json").read_text())
    assert results["devices"]["count"] == 4 and results["devices"]["processes"] == 2
    # Process 0 alone wrote the workdir's files: one metrics row per logged step.
    rows = [json.loads(x) for x in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]

    single = train.train_and_evaluate(_config(), str(tmp_path / "single"))
    _assert_results_close(results, single)
    single_rows = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
    single_rows = [json.loads(x) for x in single_rows]
    for got, want in zip(rows, single_rows, strict=True):
        np.testing.assert_allclose(got["train/loss"], want["train/loss"], rtol=1e-5)

    # The 2-process periodic checkpoint of step 4 resumes in one process and goes on.
    resumed = tmp_path / "resumed"
    shutil.copytree(multi, resumed)
    shutil.rmtree(resumed / "checkpoints" / "8")
    again = train.train_and_evaluate(_config(), str(resumed))
    _assert_results_close(again, single)

    # predict restores the 2-process best checkpoint in one process.
    test = load_dataset(train.config_lib.from_config_dict(_config()).data).test
    got = predict.predict_arrays(predict.load_trained(multi), test.inputs, test.mask)
    want = predict.predict_arrays(predict.load_trained(tmp_path / "single"), test.inputs, test.mask)
    assert set(got) == set(want)
    for key in want:
        if want[key].dtype.kind == "f":
            np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
        else:  # predicted class ids and names
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_distributed_settings_are_checked_before_anything_starts(tmp_path, monkeypatch):
    for value, want in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(distributed.ENV, value)
        assert distributed.requested_by_env() is want
    monkeypatch.setenv(distributed.ENV, "maybe")
    with pytest.raises(ValueError, match="ROBULT_JAX_DISTRIBUTED='maybe'"):
        distributed.requested_by_env()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop(distributed.ENV)
    workdir = tmp_path / "w"
    out = subprocess.run(
        [sys.executable, "-m", "robult_jax", "train", "--config", "synthetic",
         "--workdir", str(workdir), "--num_processes=2"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2 and "need --distributed" in out.stderr, out.stderr[-2000:]
    assert not workdir.exists()
