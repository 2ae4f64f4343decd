"""train.profile_steps: a jax.profiler trace of chosen steps, and `robult-jax profile`."""

import gzip
import json
import os

import fake_remote
import helpers
import jax
import pytest

from robult_jax import config as config_lib
from robult_jax import profiling, train


def _config(**overrides):
    """test_train.py's cheap config (same programs, shared through the compile cache)."""
    return helpers.raw_config(**{
        "model.encoders": {"a": "mlp", "b": "mlp"},
        "train.num_steps": 8,
        "train.log_every": 2,
        "train.eval_every": 4,
        "train.checkpoint_every": 4,
        **overrides,
    })  # fmt: skip


def _trace_files(root) -> dict[str, list[str]]:
    """{run folder: its file names} under <root>/profile/plugins/profile."""
    runs = os.path.join(root, "profile", "plugins", "profile")
    return {run: sorted(os.listdir(os.path.join(runs, run))) for run in sorted(os.listdir(runs))}


def _event(name, ts, dur, op=None, module="jit_f", tid=1, **args):
    if op is not None:
        args.update(hlo_op=op, hlo_module=module)
    return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name, "args": args}


def test_op_summary_counts_each_ops_own_time_by_kind_and_step(tmp_path):
    events = [
        _event("train", 0, 100, step_num=3),
        _event("train", 100, 100, step_num=4),
        # A while op of 50 us whose body ran two fusions of 10 and 15 us.
        _event("while.2", 0, 50, op="while.2"),
        _event("fusion.1", 5, 10, op="fusion.1"),
        _event("fusion.7", 20, 15, op="fusion.7"),
        _event("dot.3", 60, 30, op="dot.3"),
        _event("dot", 10, 40, op="dot", tid=2),  # side by side, on another thread
        _event("convolution.1", 120, 8, op="convolution.1", module="jit_g"),
        _event("PjitFunction(f)", 0, 500),  # host events are not ops
    ]
    path = tmp_path / "t.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    summary = profiling.op_summary(path)
    assert summary["steps"] == 2
    assert list(summary["programs"]) == ["jit_f", "jit_g"]  # most time first
    f = summary["programs"]["jit_f"]
    assert f["ops"] == [("dot", 70.0, 2), ("fusion", 25.0, 2), ("while", 25.0, 1)]
    assert f["total_us"] == 120.0
    text = profiling.format_summary(summary, top=2)
    assert "2 train steps traced" in text and "(1 more kinds)" in text
    assert "0.035" in text  # dot: 70 us over 2 steps, in ms


@pytest.mark.parametrize(
    "first,count,run_start,run_stop,traced",
    [
        (10, 5, 0, 100, (10, 15)),
        (10, 5, 12, 100, (12, 15)),  # resumed inside the range: what is left of it
        (10, 5, 0, 12, (10, 12)),  # paused inside the range
        (10, 5, 15, 100, None),  # resumed after it
        (10, 0, 0, 100, None),  # off
    ],
)
def test_step_range_is_the_overlap_with_this_invocation(first, count, run_start, run_stop, traced):
    trace = profiling.StepTrace(
        "unused", first=first, count=count, run_start=run_start, run_stop=run_stop
    )
    assert (trace.start, trace.stop) == traced if traced else not trace.enabled


def test_the_trace_waits_for_earlier_steps_and_ends_after_its_last(tmp_path, monkeypatch):
    """Steps run asynchronously: device work of steps before the trace must not be in it."""
    calls = []
    monkeypatch.setattr(profiling.jax, "block_until_ready", lambda x: calls.append(("wait", x)))
    monkeypatch.setattr(
        profiling.jax.profiler, "start_trace", lambda d, **kw: calls.append(("start", d))
    )
    monkeypatch.setattr(profiling.jax.profiler, "stop_trace", lambda: calls.append(("stop",)))
    trace = profiling.StepTrace(tmp_path, first=2, count=2, run_start=0, run_stop=10)
    for step in range(5):
        trace.begin(step, f"state before {step}")
        trace.end(step, f"outputs of {step}")
    trace.close()
    assert calls == [
        ("wait", "state before 2"),
        ("start", str(tmp_path / "profile")),
        ("wait", "outputs of 3"),
        ("stop",),
    ]


def test_a_trace_already_running_is_left_alone_with_a_warning(tmp_path, caplog):
    trace = profiling.StepTrace(tmp_path, first=0, count=2, run_start=0, run_stop=4)
    jax.profiler.start_trace(str(tmp_path / "mine"))
    try:
        for step in range(4):
            trace.begin(step, None)
            trace.end(step, None)
        trace.close()
    finally:
        jax.profiler.stop_trace()  # still the caller's, and still running
    assert "already running" in caplog.text
    assert not (tmp_path / "profile").exists() and (tmp_path / "mine").exists()


def test_a_trace_that_would_outlast_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train.profile_start=6 \\+ train.profile_steps=3"):
        train.train_and_evaluate(
            _config(**{"train.profile_steps": 3, "train.profile_start": 6}), str(tmp_path / "r")
        )
    assert not (tmp_path / "r").exists()
    config_lib.from_config_dict(_config(**{"train.profile_steps": 2, "train.profile_start": 6}))


@pytest.mark.slow
def test_training_writes_a_trace_of_the_chosen_steps_and_the_command_reads_it(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    # Nothing fetched before the trace (log, eval and checkpoint at step 8 only).
    config = _config(**{
        "train.profile_steps": 2, "train.profile_start": 3, "train.log_every": 8,
        "train.eval_every": 8, "train.checkpoint_every": 8,
    })  # fmt: skip
    results = train.train_and_evaluate(config, workdir)
    ((run, names),) = _trace_files(workdir).items()
    assert "perfetto_trace.json.gz" in names
    assert any(n.endswith(".xplane.pb") for n in names)
    assert any(n.endswith(".trace.json.gz") and n != "perfetto_trace.json.gz" for n in names)
    assert results["timing_s"]["profile"] > 0

    summary = profiling.op_summary(profiling.latest_trace(workdir))
    assert summary["steps"] == 2  # steps 3 and 4
    step = summary["programs"]["jit_train_step"]
    assert step["total_us"] > 0 and len(step["ops"]) > 5
    # Whole steps only: each op kind ran the same number of times in each traced step.
    assert all(count % 2 == 0 for _, _, count in step["ops"]), step["ops"]
    # Validation ran at step 8, after the trace: its program is not in it.
    assert not [m for m in summary["programs"] if "predict" in m]

    profiling.run(["robult-jax profile", workdir, "--top", "3"])
    out = capsys.readouterr().out
    assert "jit_train_step" in out and "2 train steps traced" in out

    # Resuming the finished run trains nothing and leaves the trace as it was.
    train.train_and_evaluate(config, workdir)
    assert _trace_files(workdir) == {run: names}


def test_the_command_says_how_to_get_a_trace(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        profiling.run(["robult-jax profile", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--config.train.profile_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        profiling.run(["robult-jax profile", str(tmp_path), "--top", "0"])
    assert exit_info.value.code == 2 and "--top 0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_remote_workdir_gets_the_trace_copied(tmp_path, monkeypatch):
    root = tmp_path / "remote"
    root.mkdir()
    fake_remote.install(monkeypatch, str(root))
    config = _config(**{"train.profile_steps": 1, "train.profile_start": 2})
    train.train_and_evaluate(config, "fake://bucket/run")
    ((_, names),) = _trace_files(root / "bucket" / "run").items()
    assert "perfetto_trace.json.gz" in names
    summary = profiling.op_summary(profiling.latest_trace("fake://bucket/run"))
    assert summary["steps"] == 1 and "jit_train_step" in summary["programs"]
