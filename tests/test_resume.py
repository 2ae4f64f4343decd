"""What a resume reads is checked: corrupt checkpoints, changed data, changed config.

Runs here are in-process (`train.train_and_evaluate`); kills and signals with
real processes are in test_faults.py.
"""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest
from test_train import _config

from robult_jax import checkpointing, train


def _state(value: float = 1.0) -> dict:
    return {"w": np.full((3,), value, np.float32), "step": np.int32(0)}


def _abstract(state):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def _data_files(directory) -> list[str]:
    """The checkpoint's array data files (Orbax's OCDBT stores them in d/ folders)."""
    paths = [
        os.path.join(r, f) for r, _, fs in os.walk(os.path.join(directory, "state")) for f in fs
    ]
    return [p for p in paths if os.path.basename(os.path.dirname(p)) == "d"]


def _flip_bytes(directory) -> None:
    """Flips 16 bytes in the middle of every data file (not every file is read on restore)."""
    for path in _data_files(directory):
        with open(path, "rb") as f:
            data = bytearray(f.read())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        with open(path, "wb") as f:
            f.write(bytes(data))


def _truncate(directory) -> None:
    for path in _data_files(directory):
        os.truncate(path, os.path.getsize(path) // 3)


def test_a_checkpoint_whose_bytes_differ_from_its_digest_is_set_aside(tmp_path, caplog):
    ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
    ckpt.save(1, _state(1.0))
    ckpt.save(2, _state(2.0))
    ckpt.close()
    # Rewrite step 2's digest: the values still restore, finite, but are not what was saved.
    meta = tmp_path / "checkpoints" / "2" / "digest" / "metadata"
    meta.write_text(json.dumps({"sha256": "0" * 64}))
    ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
    with caplog.at_level(logging.WARNING):
        state = ckpt.restore_latest(_abstract(_state()))
    np.testing.assert_array_equal(state["w"], 1.0)  # fell back to step 1
    assert "does not match the digest" in caplog.text and "previous checkpoint" in caplog.text
    assert [d.split("-")[:2] for d in os.listdir(tmp_path / "corrupt")] == [["checkpoints", "2"]]
    assert ckpt._latest.all_steps() == [1]
    ckpt.close()


def test_a_checkpoint_with_non_finite_values_is_rejected(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3, read_only=False)
    ckpt.save(1, _state(np.nan))  # saved with a matching digest: only the value check sees it
    ckpt.close()
    reader = checkpointing.Checkpointer(str(tmp_path), keep=3, read_only=True)
    with pytest.raises(checkpointing.CorruptCheckpointError, match="non-finite values in"):
        reader.restore_latest(_abstract(_state()))
    assert os.path.isdir(tmp_path / "checkpoints" / "1")  # read-only: left where it is
    reader.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run (8 steps; checkpoints at 4 and 8, evaluations at 4 and 8)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train.train_and_evaluate(_config(), str(workdir))
    return workdir


def _outputs(workdir) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    timing = ("time", "train/steps_per_sec")
    return {
        "rows": [{k: v for k, v in r.items() if k not in timing} for r in rows],
        # Everything but the wall times of the invocation that wrote it.
        "results.json": {
            **json.loads((workdir / "results.json").read_text()),
            "wall_time_s": 0,
            "timing_s": 0,
        },
        "results.md": (workdir / "results.md").read_bytes(),
    }


@pytest.mark.slow
def test_two_runs_with_one_seed_write_identical_metrics_and_results(tmp_path, finished):
    train.train_and_evaluate(_config(), str(tmp_path / "again"))
    assert _outputs(tmp_path / "again") == _outputs(finished)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_flip_bytes, _truncate])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, finished, damage):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    damage(workdir / "checkpoints" / "8")
    train.train_and_evaluate(_config(), str(workdir))  # resumes from 4, replays 5..8
    assert _outputs(workdir) == _outputs(finished)
    (corrupt,) = os.listdir(workdir / "corrupt")
    assert corrupt.startswith("checkpoints-8-")
    digest = "checkpoints/8/digest/metadata"
    assert (workdir / digest).read_text() == (finished / digest).read_text()


@pytest.mark.slow
def test_a_corrupt_best_checkpoint_is_never_evaluated_and_can_be_rebuilt(tmp_path, finished):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    (best,) = os.listdir(workdir / "best")
    _flip_bytes(workdir / "best" / best)
    with pytest.raises(checkpointing.CorruptCheckpointError, match="nothing was evaluated"):
        train.train_and_evaluate(_config(), str(workdir))
    assert _outputs(workdir) == _outputs(finished)  # the good results were not overwritten
    assert os.listdir(workdir / "best") == []
    # What the message says to do: replay training in place, which rebuilds it exactly.
    shutil.rmtree(workdir / "checkpoints")
    train.train_and_evaluate(_config(), str(workdir))
    assert _outputs(workdir) == _outputs(finished)


def _snapshot(workdir) -> dict:
    return {
        os.path.relpath(os.path.join(r, f), workdir): (workdir / r / f).read_bytes()
        for r, _, fs in os.walk(workdir)
        for f in fs
        if f != ".lock"
    }


def _arrays_config(path):
    config = _config()
    config.data = {
        "name": "arrays",
        "path": str(path),
        "modalities": {"a": "vector", "b": "timeseries"},
        "task": "multiclass",
    }
    return config


def _write_arrays(path, seed=0):
    rng = np.random.default_rng(seed)
    n = 64
    np.savez(
        path,
        a=rng.normal(size=(n, 8)).astype(np.float32),
        b=rng.normal(size=(n, 16, 3)).astype(np.float32),
        labels=np.arange(n) % 3,
    )


def test_changed_data_stops_the_resume_and_touches_nothing(tmp_path):
    data, workdir = tmp_path / "d.npz", tmp_path / "run"
    _write_arrays(data)
    train.train_and_evaluate(_arrays_config(data), str(workdir), pause_at_step=2)
    assert json.loads((workdir / "data.json").read_text())["name"] == "arrays"
    before = _snapshot(workdir)
    _write_arrays(data, seed=1)  # the user overwrites their data file
    with pytest.raises(ValueError, match="(?s)trained on other data.*fingerprint: saved"):
        train.train_and_evaluate(_arrays_config(data), str(workdir))
    assert _snapshot(workdir) == before


def test_num_steps_cannot_change_on_resume(tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(_config(), str(workdir), pause_at_step=1)
    before = _snapshot(workdir)
    with pytest.raises(ValueError, match="(?s)train.num_steps: saved 8, now 16.*schedule depends"):
        train.train_and_evaluate(_config(**{"train.num_steps": 16}), str(workdir))
    assert _snapshot(workdir) == before


def test_a_failed_checkpoint_write_is_one_clear_error(tmp_path, monkeypatch):
    """As Orbax reports a full disk (its TensorStore error, JSON spec appended)."""
    ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
    ckpt.save(1, _state())

    def full(*args, **kwargs):
        raise ValueError(
            'RESOURCE_EXHAUSTED: Error writing "w/0": Failed to write 10014 bytes to file 5: '
            'No space left on device [os_error_code=28] [tensorstore_spec={"driver": "zarr"}]'
        )

    monkeypatch.setattr(ckpt._latest, "save", full)
    with pytest.raises(checkpointing.CheckpointWriteError, match=r"checkpoint 2 .*\(No space left"):
        ckpt.save(2, _state(2.0))
    monkeypatch.undo()
    assert ckpt._latest.all_steps() == [1]  # the complete one is untouched
    ckpt.close()
