"""Workdir I/O goes through etils.epath: local paths as str, pathlib.Path or epath.Path,
and a remote-like `fake://` file system (tests/fake_remote.py) through the same code.

The slow tests train for real: one run on a local workdir while every builtin
`open` / `os.*` file call is audited (none may come from robult_jax outside
files.py), and the same run, resumed, with a corrupt checkpoint set aside, and
predicted from, on `fake://`, which must give the same files and numbers.
"""

import builtins
import io
import json
import os
import shutil
import sys

import fake_remote
import helpers
import jax
import numpy as np
import pytest
from etils import epath

import robult_jax
from robult_jax import compare, files, masks, metric_writer, predict, report, train
from robult_jax import workdir as workdir_lib
from robult_jax.data import load_dataset, sampler

KINDS = ("str", "pathlib", "epath", "fake")


@pytest.fixture
def remote(monkeypatch, tmp_path):
    """`fake://bucket/...` stored under tmp_path/remote; the cwd is an empty folder."""
    root = tmp_path / "remote"
    root.mkdir()
    backend = fake_remote.install(monkeypatch, str(root))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # code that bypasses epath would create "fake:" here
    yield backend
    assert os.listdir(cwd) == [], "a fake:// path was used as a local one"


def _dir(kind: str, tmp_path, name: str = "run"):
    """A workdir of each kind; the fake one lives under tmp_path/remote (see `remote`)."""
    local = tmp_path / name
    return {
        "str": str(local),
        "pathlib": local,
        "epath": epath.Path(local),
        "fake": f"fake://bucket/{name}",
    }[kind]


def _where(kind: str, tmp_path, path) -> str:
    """The local file behind `path` (to check what was really written)."""
    path = os.fspath(path)
    if kind == "fake":
        return os.path.join(tmp_path, "remote", path[len("fake://") :])
    return path


@pytest.fixture(params=KINDS)
def kind(request):
    if request.param == "fake":
        request.getfixturevalue("remote")
    return request.param


def _warnings(monkeypatch) -> list[str]:
    seen = []
    monkeypatch.setattr(files.logging, "warning", lambda msg, *a: seen.append(msg % a))
    return seen


def test_atomic_write_and_read_back_every_path_kind(kind, tmp_path):
    workdir = _dir(kind, tmp_path)
    path = files.as_path(workdir) / "sub" / "config.json"
    files.atomic_write(path, b'{"a": 1}')
    files.atomic_write(path, b'{"a": 2}')  # over an existing file
    assert files.read_json(path) == {"a": 2}
    local = _where(kind, tmp_path, path)
    assert open(local, "rb").read() == b'{"a": 2}'
    assert os.listdir(os.path.dirname(local)) == ["config.json"]  # no temp file left
    assert files.is_local(workdir) == (kind != "fake")
    with pytest.raises(TypeError):
        files.atomic_write(path, object())  # a failed write keeps the old file
    assert files.read_json(path) == {"a": 2}
    assert os.listdir(os.path.dirname(local)) == ["config.json"]


def test_appender_appends_locally_and_rewrites_whole_objects_remotely(kind, tmp_path):
    path = files.as_path(_dir(kind, tmp_path)) / "metrics.jsonl"
    files.atomic_write(path, b"1\n")
    out = files.Appender(path)  # reads what is there when remote
    out.append(b"2\n")
    files.Appender(path).append(b"3\n")  # a second writer, after the first's append
    assert path.read_bytes() == b"1\n2\n3\n"


def test_metric_writer_resume_drops_replayed_rows_every_path_kind(kind, tmp_path):
    workdir = _dir(kind, tmp_path)
    files.as_path(workdir).mkdir(parents=True, exist_ok=True)  # as the trainer does first
    writer = metric_writer.MetricWriter(workdir)
    for step in (2, 4, 6):
        writer.write(step, {"train/loss": step / 10})
    path = files.as_path(workdir) / "metrics.jsonl"
    files.atomic_write(path, path.read_bytes() + b'{"step": 8, "tr')  # cut short by a kill
    writer = metric_writer.MetricWriter(workdir, resume_step=4)
    writer.write(6, {"train/loss": 0.5})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in rows] == [(2, 0.2), (4, 0.4), (6, 0.5)]


def test_fake_remote_refuses_appends_like_an_object_store(remote, tmp_path):
    path = epath.Path("fake://bucket/x.txt")
    path.write_text("a")
    with pytest.raises(OSError, match="cannot be appended"):
        path.open("a")
    files.Appender(path).append(b"b")  # goes through a whole rewrite instead
    assert path.read_text() == "ab" and remote.appends == 1


def test_workdir_lock_on_every_path_kind(kind, tmp_path, monkeypatch):
    workdir = _dir(kind, tmp_path)
    files.as_path(workdir).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(files, "_warned_unlocked", False)
    seen = _warnings(monkeypatch)
    for _ in range(2):
        with files.WorkdirLock(workdir) as lock:
            assert isinstance(lock.path, str)
    lock_file = _where(kind, tmp_path, files.as_path(workdir) / files.LOCK_NAME)
    if kind == "fake":  # no flock on a remote file system: one warning, no lock file
        assert len(seen) == 1 and "no file locks" in seen[0]
        assert not os.path.exists(lock_file)
    else:
        assert seen == [] and str(os.getpid()) in open(lock_file).read()
        holder = files.WorkdirLock(workdir).__enter__()  # a live holder: the next one stops
        try:
            with pytest.raises(files.WorkdirBusyError):
                with files.WorkdirLock(workdir):
                    pass
        finally:
            holder.__exit__()


def test_move_sets_a_directory_aside(kind, tmp_path):
    root = files.as_path(_dir(kind, tmp_path))
    files.atomic_write(root / "checkpoints" / "4" / "state" / "x", b"data")
    files.move(root / "checkpoints" / "4", root / "corrupt" / "checkpoints-4")
    assert not (root / "checkpoints" / "4").exists()
    assert (root / "corrupt" / "checkpoints-4" / "state" / "x").read_bytes() == b"data"


def test_masks_label_split_results_and_config_every_path_kind(kind, tmp_path):
    workdir = _dir(kind, tmp_path)
    root = files.as_path(workdir)
    mask = np.array([[True, False], [True, True]])
    masks.save_masks(root / "eval_masks.npz", {"rate=0.5/seed=0": mask}, {"split": "test"})
    loaded, meta = masks.load_masks(root / "eval_masks.npz")
    assert (loaded["rate=0.5/seed=0"] == mask).all() and meta == {"split": "test"}

    sampler.save_label_split(root / "label_split.json", np.array([3, 1]), rate=0.5, seed=0)
    idx, _ = sampler.load_label_split(root / "label_split.json", rate=0.5, seed=0)
    assert idx.tolist() == [3, 1]

    config = helpers.raw_config()
    workdir_lib.write_workdir_config(workdir, config)
    workdir_lib.check_workdir_config(workdir, config)  # the same: no error
    with pytest.raises(ValueError, match="different config"):
        workdir_lib.check_workdir_config(workdir, helpers.raw_config(seed=1))
    workdir_lib.write_workdir_data(workdir, {"name": "d", "variant": "", "fingerprint": "f"})
    with pytest.raises(ValueError, match="other data"):
        workdir_lib.check_workdir_data(workdir, {"name": "d", "variant": "", "fingerprint": "g"})

    results = {
        "dataset": "d",
        "method": "m",
        "subsets": {"a": {"accuracy": 0.5}, "a+b": {"accuracy": 0.75}},
        "random_missing": {"0": {"accuracy": {"mean": 0.75, "std": 0.0, "values": [0.75]}}},
    }
    paths = report.write_results(workdir, results)
    assert files.read_json(paths["json"])["subsets"]["a"]["accuracy"] == 0.5
    assert open(_where(kind, tmp_path, paths["png"]), "rb").read(4) == b"\x89PNG"
    os.remove(_where(kind, tmp_path, paths["md"]))
    report.run(["report", os.fspath(workdir)])  # rewrites them from results.json
    assert "0.750" in (root / "results.md").read_text()
    assert compare.run_dir(workdir, config).startswith(os.fspath(root) + "/runs/")


def test_tensorboard_is_skipped_with_one_warning_where_tensorboardx_cannot_write(
    remote, monkeypatch
):
    seen = []
    monkeypatch.setattr(metric_writer.logging, "warning", lambda msg, *a: seen.append(msg % a))
    writer = metric_writer.MetricWriter("fake://bucket/run", tensorboard=True)
    writer.write(1, {"train/loss": 1.0})
    writer.write_hparams({"seed": 0})
    writer.close()
    assert writer._tb is None and len(seen) == 1 and "fake://" in seen[0]
    assert not epath.Path("fake://bucket/run/tensorboard").exists()
    assert metric_writer._remote_tensorboard_unsupported("/local/tensorboard") is None


# ---------------------------------------------------------------- real runs


def _config():
    """tests/test_train.py's cheap synthetic config (its compiled programs are shared)."""
    return helpers.raw_config(
        **{
            "model.encoders": {"a": "mlp", "b": "mlp"},
            "train.num_steps": 8,
            "train.log_every": 2,
            "train.eval_every": 4,
            "train.checkpoint_every": 4,
            "train.tensorboard": True,
        }
    )


_AUDITED = {
    builtins: ("open",),
    os: ("open", "replace", "rename", "makedirs", "mkdir", "remove", "unlink", "listdir"),
    os.path: ("exists", "isfile", "isdir"),
    shutil: ("rmtree", "move", "copyfile"),
}
# Libraries that do their own file I/O; robult_jax code reaching the file
# system through them is fine (epath is the abstraction; Orbax and tensorboardX
# take epath paths or strings and handle remote schemes themselves).
_THROUGH = (os.sep + "etils" + os.sep, os.sep + "orbax" + os.sep, os.sep + "tensorboardX" + os.sep)


def _audit(monkeypatch, workdir: str) -> list[str]:
    """Records each file call on `workdir` made by robult_jax code other than files.py.

    Walking out from the call, the first frame that belongs to epath, Orbax,
    tensorboardX or files.py makes it allowed; one in another robult_jax
    module makes it a violation (numpy, json and the standard library in
    between are looked through: `np.load(path)` opens the file for its caller).
    """
    package = os.path.dirname(os.path.abspath(robult_jax.__file__)) + os.sep
    allowed_file = os.path.join(package, "files.py")
    workdir = os.path.abspath(workdir)
    violations: list[str] = []

    def check(path):
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return  # a file descriptor
        if not os.path.abspath(path).startswith(workdir):
            return
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if name == allowed_file or any(t in name for t in _THROUGH):
                return
            if name.startswith(package):
                violations.append(f"{name}:{frame.f_lineno}: {path}")
                return
            frame = frame.f_back

    def wrap(fn):
        def audited(path, *args, **kwargs):
            check(path)
            return fn(path, *args, **kwargs)

        return audited

    for module, names in _AUDITED.items():
        for name in names:
            monkeypatch.setattr(module, name, wrap(getattr(module, name)))
    return violations


def test_the_auditor_catches_a_direct_open_from_robult_jax(tmp_path, monkeypatch):
    violations = _audit(monkeypatch, str(tmp_path))
    fake_module = os.path.join(os.path.dirname(robult_jax.__file__), "not_a_module.py")
    code = compile("open(p, 'w').close(); np.load(q)", fake_module, "exec")
    np.save(tmp_path / "a.npy", np.zeros(2))
    files.atomic_write(tmp_path / "ok.json", b"{}")  # files.py itself: allowed
    exec(code, {"p": str(tmp_path / "x"), "q": str(tmp_path / "a.npy"), "np": np})
    assert len(violations) == 2 and all("not_a_module.py" in v for v in violations)


def _same_rows(a: str, b: str) -> None:
    rows = [
        [{k: v for k, v in json.loads(line).items() if k not in ("time", "train/steps_per_sec")}
         for line in files.as_path(d).joinpath("metrics.jsonl").read_text().splitlines()]
        for d in (a, b)
    ]  # fmt: skip
    assert rows[0] == rows[1] and [r["step"] for r in rows[0]] == [2, 4, 6, 8]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """A real run on a local workdir with every file call audited."""
    workdir = str(tmp_path_factory.mktemp("local") / "run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        violations = _audit(monkeypatch, workdir)
        assert train.train_and_evaluate(_config(), workdir, pause_at_step=4) is None
        results = train.train_and_evaluate(_config(), workdir)  # resumes
        trained = predict.load_trained(workdir)
    return workdir, results, trained, violations


@pytest.mark.slow
def test_no_robult_jax_module_bypasses_epath_on_a_workdir(local_run):
    workdir, _, _, violations = local_run
    assert violations == []
    assert os.path.exists(os.path.join(workdir, "tensorboard"))  # local: tensorboardX writes


@pytest.mark.slow
def test_train_resume_set_aside_predict_and_export_on_a_remote_workdir(
    local_run, remote, tmp_path, monkeypatch
):
    local_dir, local_results, local_trained, _ = local_run
    workdir = "fake://bucket/run"
    warned = _warnings(monkeypatch)
    monkeypatch.setattr(files, "_warned_unlocked", False)
    assert train.train_and_evaluate(_config(), workdir, pause_at_step=4) is None
    results = train.train_and_evaluate(_config(), workdir)
    assert sum("no file locks" in w for w in warned) == 1  # warned once, ran unlocked
    jax.tree.map(np.testing.assert_array_equal, results["subsets"], local_results["subsets"])
    _same_rows(workdir, local_dir)
    root = tmp_path / "remote" / "bucket" / "run"
    names = set(os.listdir(root))
    assert names >= {"config.json", "data.json", "label_split.json", "dataset_spec.json",
                     "metrics.jsonl", "eval_masks.npz", "results.json", "results.png",
                     "checkpoints", "best"}  # fmt: skip
    assert not names & {".lock", "tensorboard"} and remote.appends == 0
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]

    # A corrupt latest checkpoint is set aside (files.move) and training replays from 4.
    state_dir = root / "checkpoints" / "8"
    for dirpath, _, names in os.walk(state_dir):
        for name in names:
            if name != "_CHECKPOINT_METADATA":
                with open(os.path.join(dirpath, name), "r+b") as f:
                    f.write(b"garbage!")
    again = train.train_and_evaluate(_config(), workdir)
    assert [n.startswith("checkpoints-8-") for n in os.listdir(root / "corrupt")] == [True]
    assert again["subsets"] == results["subsets"]
    _same_rows(workdir, local_dir)

    trained = predict.load_trained(workdir)
    assert trained.best_step == local_trained.best_step
    jax.tree.map(np.testing.assert_array_equal, trained.params, local_trained.params)
    test = load_dataset(trained.config.data).test
    out = predict.predict_arrays(trained, test.inputs, test.mask)
    expected = predict.predict_arrays(local_trained, test.inputs, test.mask)
    np.testing.assert_array_equal(out["probabilities"], expected["probabilities"])
    predict.write_predictions("fake://bucket/preds.npz", out)
    with np.load(io.BytesIO(epath.Path("fake://bucket/preds.npz").read_bytes())) as f:
        np.testing.assert_array_equal(f["predictions"], out["predictions"])

    from robult_jax import export

    record = export.export_params(workdir, "fake://bucket/params.msgpack")
    assert record["workdir"] == workdir
    assert json.loads(epath.Path("fake://bucket/params.msgpack.json").read_text())["best_step"]
    loaded_masks, _ = masks.load_masks(f"{workdir}/eval_masks.npz")
    assert loaded_masks
