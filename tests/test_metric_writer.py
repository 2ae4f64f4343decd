"""MetricWriter: metrics.jsonl and the optional TensorBoard event files agree.

Event files are read back without TensorFlow or the `tensorboard` package: the
TFRecord framing (length, crc, data, crc) is parsed here and each record with
tensorboardX's own `Event` protobuf. TensorBoard's resume rule is applied as
it does: a `SessionLog.START` at step p hides earlier events at steps >= p.
"""

import json
import logging
import os
import struct
import subprocess
import sys

import jax
import pytest

from robult_jax.metric_writer import MetricWriter


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _event_files(workdir) -> list[str]:
    logdir = os.path.join(workdir, "tensorboard")
    # TensorBoard reads a run's event files in the order of their names.
    return [os.path.join(logdir, n) for n in sorted(os.listdir(logdir)) if "tfevents" in n]


def _events(path: str) -> list:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    events = []
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[at + 8 : at + 12])[0] == masked_crc32c(header)
        record = data[at + 12 : at + 12 + length]
        assert struct.unpack("<I", data[at + 12 + length : at + 16 + length])[0] == (
            masked_crc32c(record)
        )
        events.append(Event.FromString(record))
        at += 16 + length
    return events


def _visible_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows them, purges applied."""
    from tensorboardX.proto.event_pb2 import SessionLog

    shown: dict[str, list[tuple[int, float]]] = {}
    for path in _event_files(workdir):
        for event in _events(path):
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                shown = {t: [(s, v) for s, v in sv if s < event.step] for t, sv in shown.items()}
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    shown.setdefault(value.tag, []).append((event.step, value.simple_value))
    return shown


def _summary_tags(workdir) -> list[str]:
    return [
        value.tag
        for path in _event_files(workdir)
        for event in _events(path)
        for value in event.summary.value
    ]


def _write(writer, steps, offset=0.0):
    for step in steps:
        writer.write(step, {"train/loss": step / 100 + offset, "train/learning_rate": 1e-3})


def test_rows_go_to_metrics_jsonl_and_tensorboard_with_the_same_keys(tmp_path):
    pytest.importorskip("tensorboardX")
    writer = MetricWriter(str(tmp_path), tensorboard=True)
    _write(writer, [1, 2])
    writer.write(2, {"eval/val/score": 0.75})
    writer.close()
    writer.close()  # twice is fine

    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 2]
    shown = _visible_scalars(tmp_path)
    assert shown == {
        "train/loss": [(1, pytest.approx(0.01)), (2, pytest.approx(0.02))],
        "train/learning_rate": [(1, pytest.approx(1e-3)), (2, pytest.approx(1e-3))],
        "eval/val/score": [(2, 0.75)],
    }
    # Both sinks carry the same wall time for a row.
    times = [e.wall_time for e in _events(_event_files(tmp_path)[0]) if e.summary.value]
    assert times[0] == pytest.approx(rows[0]["time"])


def test_hyper_parameters_are_recorded_once_as_text_and_hparams(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    config = {
        "optim": {"learning_rate": 3e-4, "name": "adamw"},
        "train": {"num_steps": 40, "progress_bar": False},
        "data": {"modalities": ("acc", "gyro"), "max_rows": None},
    }
    writer = MetricWriter(str(tmp_path), tensorboard=True)
    writer.write_hparams(config)
    writer.write_hparams(config)
    _write(writer, [1])
    writer.close()
    resumed = MetricWriter(str(tmp_path), resume_step=1, tensorboard=True)
    resumed.write_hparams(config)  # this workdir has them already
    resumed.close()

    tags = _summary_tags(tmp_path)
    assert tags.count("config/text_summary") == 1
    assert tags.count("_hparams_/session_start_info") == 1
    events = [e for p in _event_files(tmp_path) for e in _events(p)]
    (text,) = [
        v.tensor.string_val[0].decode()
        for e in events
        for v in e.summary.value
        if v.tag == "config/text_summary"
    ]
    assert "| `optim.learning_rate` | 0.0003 |" in text and "| `train.num_steps` | 40 |" in text
    (info,) = [
        v.metadata.plugin_data.content
        for e in events
        for v in e.summary.value
        if v.tag == "_hparams_/session_start_info"
    ]
    hp = HParamsPluginData.FromString(info).session_start_info.hparams
    assert hp["optim.learning_rate"].number_value == pytest.approx(3e-4)
    assert hp["optim.name"].string_value == "adamw"
    assert hp["train.num_steps"].number_value == 40
    assert hp["train.progress_bar"].bool_value is False
    assert hp["data.modalities"].string_value == '["acc", "gyro"]'
    assert "data.max_rows" not in hp  # None has no hparams type


def test_a_resumed_run_shows_each_step_once_in_both_sinks(tmp_path):
    pytest.importorskip("tensorboardX")
    first = MetricWriter(str(tmp_path), tensorboard=True)
    _write(first, [10, 20, 30])  # killed after step 30, last checkpoint at 20
    first.close()
    resumed = MetricWriter(str(tmp_path), resume_step=20, tensorboard=True)
    _write(resumed, [30, 40], offset=1.0)  # the replay (values differ here to tell them apart)
    resumed.close()

    # A second event file, even when opened within the same second as the first.
    files = _event_files(tmp_path)
    assert len(files) == 2
    purge = [e for e in _events(files[1]) if e.HasField("session_log")]
    assert [e.step for e in purge] == [21]
    want = [(10, 0.1), (20, 0.2), (30, 1.3), (40, 1.4)]
    assert [(r["step"], r["train/loss"]) for r in _rows(tmp_path)] == want
    assert _visible_scalars(tmp_path)["train/loss"] == [(s, pytest.approx(v)) for s, v in want]


def test_disabled_tensorboard_writes_no_directory(tmp_path):
    writer = MetricWriter(str(tmp_path))
    _write(writer, [1])
    writer.write_hparams({"a": 1})
    writer.close()
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
    assert len(_rows(tmp_path)) == 1


def test_without_tensorboardx_one_warning_and_json_lines_only(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    with caplog.at_level(logging.WARNING):
        writer = MetricWriter(str(tmp_path), tensorboard=True)
        writer.write_hparams({"a": 1})
        _write(writer, [1, 2])
        writer.close()
    warnings = [r for r in caplog.records if "tensorboardX" in r.getMessage()]
    assert len(warnings) == 1 and "pip install tensorboardX" in warnings[0].getMessage()
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2]


def test_only_process_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    writer = MetricWriter(str(tmp_path), tensorboard=True)
    writer.write_hparams({"a": 1})
    _write(writer, [1])
    writer.close()
    assert os.listdir(tmp_path) == []


_PROBE = """
import sys
from robult_jax import metric_writer
{before}
metric_writer._tensorboardx()
print("after writer:", "torch" in sys.modules)
import torch
print("torch:", torch.__name__, getattr(torch, "FAKE", False))
"""


@pytest.mark.parametrize("torch_first", [False, True])
def test_tensorboardx_loads_without_importing_torch(tmp_path, torch_first):
    """A stand-in `torch` package first on the path shows whether anything imports it."""
    pytest.importorskip("tensorboardX")
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("FAKE = True\n\n\nclass Tensor:\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]))
    before = "import torch" if torch_first else ""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(before=before)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # Not imported on its own account; a torch the program imported first is left alone;
    # and `import torch` works afterwards either way.
    assert f"after writer: {torch_first}" in out, out
    assert "torch: torch True" in out, out
