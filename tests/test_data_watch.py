"""Tests for the watch tfds builder, load_watch, the registry and the data types.

The builder reads a tiny fake watch_dataset.npy written here, so seglearn is
not needed; each build takes well under a second.
"""

import importlib.util
import os
import types

import numpy as np
import pytest

from robult_jax.data import (
    Dataset,
    DatasetSpec,
    ModalitySpec,
    Split,
    load_dataset,
    register_dataset,
    registered_datasets,
    resolve_data_dir,
)

watch = pytest.importorskip("robult_jax.data.watch")

# (subject, length) per recording; lengths cover 0, 1 and several windows.
RECORDINGS = [
    (1, 260), (1, 99), (2, 150), (3, 100), (4, 149), (5, 201), (6, 310),
    (7, 250), (7, 180), (8, 260), (9, 120), (10, 351), (10, 100),
]  # fmt: skip


def _fake_source(path, seed=0, bad_width=False):
    rng = np.random.default_rng(seed)
    xs, ys, subjects = [], [], []
    for i, (subj, length) in enumerate(RECORDINGS):
        # Subject-dependent offset and scale: val/test statistics differ from train.
        x = rng.normal(subj * 0.5, 1.0 + subj * 0.1, size=(length, 5 if bad_width else 6))
        xs.append(x)
        ys.append(i % 7)
        subjects.append(subj)
    data = {
        "X": xs,
        "y": np.array(ys),
        "subject": np.array(subjects),
        "side": np.zeros(len(xs)),
    }
    np.save(path, data, allow_pickle=True)
    return data


def _expected_windows(data, subjects):
    """Brute-force windowing: every start divisible by 50 that fits 100 samples."""
    wins, labels = [], []
    for x, y, s in zip(data["X"], data["y"], data["subject"], strict=True):
        if s not in subjects:
            continue
        for start in range(len(x)):
            if start % 50 == 0 and start + 100 <= len(x):
                wins.append(x[start : start + 100].astype(np.float32))
                labels.append(y)
    return np.stack(wins), np.array(labels)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    src = str(root / "watch_dataset.npy")
    data = _fake_source(src)
    cfg = types.SimpleNamespace(name="watch", data_dir=str(root / "tfds"), val_subject=7)
    ds = watch.load_watch(cfg, source_path=src)
    return data, ds, cfg, src


def test_window_counts_and_subject_split(built):
    data, ds, _, _ = built
    train_w, _ = _expected_windows(data, {1, 2, 3, 4, 5, 6})
    val_w, _ = _expected_windows(data, {7})
    test_w, _ = _expected_windows(data, {8, 9, 10})
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (
        len(train_w),
        len(val_w),
        len(test_w),
    )
    assert isinstance(ds, Dataset)
    assert ds.spec.num_outputs == 7 and ds.spec.task == "multiclass"
    assert ds.spec.modality_names == ("acc", "gyro")
    assert ds.train.inputs["acc"].shape == (len(train_w), 100, 3)
    assert ds.train.labels.dtype == np.int32
    assert ds.train.mask.shape == (len(train_w), 2) and ds.train.mask.all()


def test_normalisation_fitted_on_train_windows_only(built):
    data, ds, _, _ = built
    train_w, train_y = _expected_windows(data, {1, 2, 3, 4, 5, 6})
    test_w, test_y = _expected_windows(data, {8, 9, 10})
    flat = train_w.reshape(-1, 6).astype(np.float64)
    mu, sd = flat.mean(0), flat.std(0)
    # Windows keep recording order, and the test split uses train statistics.
    expected_test = ((test_w - mu) / sd).astype(np.float32)
    np.testing.assert_allclose(ds.test.inputs["acc"], expected_test[..., :3], atol=1e-4)
    np.testing.assert_allclose(ds.test.inputs["gyro"], expected_test[..., 3:], atol=1e-4)
    np.testing.assert_array_equal(ds.test.labels, test_y)
    np.testing.assert_array_equal(ds.train.labels, train_y)
    for name in ("acc", "gyro"):
        x = ds.train.inputs[name].reshape(-1, 3)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(x.std(0), 1.0, atol=1e-4)
        # Validation and test subjects have larger offsets: not centred by train stats.
        assert np.all(ds.validation.inputs[name].reshape(-1, 3).mean(0) > 0.2)
        assert np.all(ds.test.inputs[name].reshape(-1, 3).mean(0) > 0.5)


def test_val_subject_choice_and_bad_value(built):
    data, _, cfg, src = built
    cfg2 = types.SimpleNamespace(**{**vars(cfg), "val_subject": 1})
    ds = watch.load_watch(cfg2, source_path=src)
    assert len(ds.validation) == len(_expected_windows(data, {1})[0])
    assert len(ds.train) == len(_expected_windows(data, {2, 3, 4, 5, 6, 7})[0])
    with pytest.raises(ValueError, match=r"data\.val_subject.*\(1, 2, 3, 4, 5, 6, 7\)"):
        watch.load_watch(types.SimpleNamespace(**{**vars(cfg), "val_subject": 8}), source_path=src)


def test_registry_loads_watch_from_cache_and_detects_other_source(built, tmp_path):
    _, ds, cfg, src = built
    cfg2 = types.SimpleNamespace(**{**vars(cfg), "source_path": src})
    again = load_dataset(cfg2)  # already built: just loads
    np.testing.assert_array_equal(again.train.inputs["gyro"], ds.train.inputs["gyro"])
    other = str(tmp_path / "other.npy")
    _fake_source(other, seed=1)
    with pytest.raises(ValueError, match="different source file.*Delete"):
        watch.load_watch(cfg, source_path=other)


def test_missing_seglearn_gives_install_hint(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "seglearn" else real(name, *a)
    )
    cfg = types.SimpleNamespace(name="watch", data_dir=str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps seglearn==1\.2\.5"):
        watch.load_watch(cfg)


def test_failed_build_leaves_no_dataset_dir(tmp_path):
    bad, good = str(tmp_path / "bad.npy"), str(tmp_path / "good.npy")
    _fake_source(bad, bad_width=True)
    _fake_source(good)
    cfg = types.SimpleNamespace(name="watch", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match=r"X\[0\] has shape \(260, 5\)"):
        watch.load_watch(cfg, source_path=bad)
    version_dir = tmp_path / "tfds" / "robult_watch" / "1.0.0"
    assert not version_dir.exists()
    ds = watch.load_watch(cfg, source_path=good)  # the next build succeeds
    assert len(ds.test) > 0


def test_registry_unknown_and_register():
    with pytest.raises(ValueError, match="Unknown data.name 'nope'.*watch"):
        load_dataset(types.SimpleNamespace(name="nope"))
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("watch", lambda cfg: None)
    sentinel = object()
    register_dataset("_test_dummy", lambda cfg: sentinel, overwrite=True)
    assert "_test_dummy" in registered_datasets()
    assert load_dataset(types.SimpleNamespace(name="_test_dummy")) is sentinel


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBULT_JAX_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(types.SimpleNamespace(data_dir=None)) == str(tmp_path / "env")
    assert resolve_data_dir(types.SimpleNamespace(data_dir=str(tmp_path / "x"))) == str(
        tmp_path / "x"
    )
    monkeypatch.delenv("ROBULT_JAX_DATA_DIR")
    assert resolve_data_dir(types.SimpleNamespace()) == os.path.expanduser(
        "~/.cache/robult_jax/tensorflow_datasets"
    )


def test_types_validate_shapes():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"Split.mask must have shape \(N, M\)"):
        Split(inputs={"a": x}, labels=np.zeros(4, np.int32), mask=np.ones((4, 2), bool))
    with pytest.raises(ValueError, match="has 4 rows but labels have 3"):
        Split(inputs={"a": x}, labels=np.zeros(3, np.int32), mask=np.ones((3, 1), bool))
    with pytest.raises(ValueError, match=r"kind.*allowed"):
        ModalitySpec("a", (3,), "audio")
    with pytest.raises(ValueError, match=r"task.*allowed"):
        DatasetSpec("d", (ModalitySpec("a", (3,), "vector"),), "ranking", 2)
    spec = DatasetSpec("d", (ModalitySpec("a", (3,), "vector"),), "multiclass", 2)
    split = Split(
        inputs={"a": x}, labels=np.array([0, 1, 2, 0], np.int32), mask=np.ones((4, 1), bool)
    )
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        Dataset(spec=spec, train=split, validation=split, test=split)
