"""Kills, signals and two writers, with real processes of the CLI (tests/fault_worker.py).

The promise under test: a run can be killed at any instant and restarted with
the same command, and ends with the parameters, metrics rows and results of an
uninterrupted run, bit for bit.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "fault_worker.py")
# Evaluations at 4, 8, 12; periodic checkpoints at 6, 12; a metrics row every step.
OVERRIDES = (
    "--config.train.num_steps=12",
    "--config.train.eval_every=4",
    "--config.train.checkpoint_every=6",
    "--config.train.log_every=1",
)
TIMING = ("time", "train/steps_per_sec")  # wall-clock fields: the only ones allowed to differ


def run_cli(workdir, fault: str = "", *, cache, wait=True, extra=()):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT,
        FAULT=fault,
        ROBULT_JAX_COMPILE_CACHE=cache,
    )
    cmd = [sys.executable, WORKER, "--config", "configs/synthetic.py", "--workdir", str(workdir)]
    proc = subprocess.Popen(
        [*cmd, *OVERRIDES, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def metrics_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def digest(workdir, name, step):
    with open(os.path.join(workdir, name, str(step), "digest", "metadata")) as f:
        return json.load(f)["sha256"]


def outcome(workdir):
    """Everything a finished run leaves that must not depend on how it got there."""
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    # Of the invocation that wrote them: the only fields that differ.
    results.pop("wall_time_s")
    results.pop("timing_s")
    best_step = results["best_step"]
    return {
        "results": results,
        "rows": metrics_rows(workdir),
        "latest_digest": digest(workdir, "checkpoints", 12),
        "best_digest": digest(workdir, "best", best_step),
        "results.md": (workdir / "results.md").read_text(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cache = str(root / "jax_cache")
    workdir = root / "reference"
    rc, out, err = run_cli(workdir, cache=cache)
    assert rc == 0, err
    return cache, outcome(workdir)


@pytest.mark.slow
def test_killed_and_signalled_at_every_point_ends_bit_identical(tmp_path, reference):
    cache, expected = reference
    workdir = tmp_path / "run"
    kills = [
        "kill_after_row:2",  # before the first checkpoint
        "kill_after_best:4",  # between an evaluation and the next periodic checkpoint
        "kill_in_save:checkpoints/6",  # during a periodic save
        "kill_in_save:best/8",  # during a best save
        "kill_in_final_eval",
    ]
    signals = {"signal_after_row:9:SIGTERM": 143, "signal_after_row:10:SIGINT": 130}
    for fault in kills[:4] + list(signals) + kills[4:]:
        rc, out, err = run_cli(workdir, fault, cache=cache)
        if fault in signals:
            step = fault.split(":")[1]
            assert rc == signals[fault], err
            # One line, saying where the checkpoint is and how to resume; no traceback.
            assert f"at step {step}; checkpoint saved in {workdir}/checkpoints/{step}" in err
            assert "Run the same command to resume." in err and "Traceback" not in err
            assert os.path.isdir(workdir / "checkpoints" / step)
        else:
            assert rc == -signal.SIGKILL, (fault, err)
    assert not (workdir / "results.json").exists()
    rc, out, err = run_cli(workdir, cache=cache)
    assert rc == 0, err
    assert outcome(workdir) == expected
    # The checkpoint killed mid-save was never taken for a complete one.
    assert sorted(os.listdir(workdir / "best")) == [str(expected["results"]["best_step"])]


@pytest.mark.slow
def test_second_run_on_a_held_workdir_stops_and_a_dead_holders_lock_is_taken_over(
    tmp_path, reference
):
    cache, expected = reference
    workdir = tmp_path / "run"
    first = run_cli(workdir, cache=cache, wait=False)
    lock = workdir / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and f'"pid": {first.pid}' in lock.read_text()):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)  # alive, holding the lock, doing nothing
    try:
        start = time.time()
        rc, out, err = run_cli(workdir, cache=cache)
        assert rc == 2 and f"is in use by process {first.pid} on host" in err, err
        assert "Traceback" not in err
        assert time.time() - start < 60
    finally:
        first.kill()  # SIGKILL: the lock is left behind, held by nobody
        first.communicate()
    rc, out, err = run_cli(workdir, cache=cache)
    assert rc == 0, err
    assert outcome(workdir) == expected
