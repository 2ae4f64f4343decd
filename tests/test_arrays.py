"""The "arrays" loader: a user's .npz / directory of .npy as a Dataset, and its errors."""

import time

import ml_collections
import numpy as np
import pytest

from robult_jax.data import Dataset, load_dataset, register_dataset
from robult_jax.data.arrays import load_arrays
from robult_jax.data.synthetic import make_synthetic

N = 20


def _arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "gyro": rng.normal(size=(N, 7, 2)),
        "acc": rng.normal(size=(N, 5)) * 3.0 + 1.0,
        "labels": np.arange(N) % 2,
        "split": np.array(["train"] * 12 + ["validation"] * 4 + ["test"] * 4),
    }


def _config(path, modalities=None, **fields) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {"name": "arrays", "path": str(path), "normalize": False, **fields}
    )
    if modalities is None:
        # Given in reverse order on purpose: the spec (and mask columns) sort the names.
        config.modalities = ml_collections.ConfigDict()
        config.modalities.gyro = "timeseries"
        config.modalities.acc = "vector"
    else:
        config.modalities = ml_collections.ConfigDict(modalities)
    return config


def _npz(tmp_path, arrays: dict, name: str = "d.npz"):
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def _npy_dir(tmp_path, arrays: dict):
    d = tmp_path / "dir"
    d.mkdir()
    for k, v in arrays.items():
        np.save(d / f"{k}.npy", v)
    return d


def test_npz_round_trip_with_explicit_split(tmp_path):
    a = _arrays()
    register_dataset("arrays", load_arrays, overwrite=True)
    ds = load_dataset(_config(_npz(tmp_path, a)))
    assert ds.spec.modality_names == ("acc", "gyro")
    assert [(m.shape, m.kind) for m in ds.spec.modalities] == [
        ((5,), "vector"),
        ((7, 2), "timeseries"),
    ]
    assert (ds.spec.task, ds.spec.num_outputs, ds.spec.class_names) == ("multiclass", 2, ("0", "1"))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 4, 4)
    np.testing.assert_array_equal(ds.validation.inputs["gyro"], a["gyro"][12:16].astype(np.float32))
    np.testing.assert_array_equal(ds.test.labels, a["labels"][16:])
    assert ds.train.labels.dtype == np.int32 and ds.train.mask.all()
    assert ds.input_stats is None


def test_directory_of_npy_equals_npz(tmp_path):
    a = _arrays()
    a["split"] = np.repeat([0, 1, 2], [12, 4, 4])  # ints work too
    from_npz = load_arrays(_config(_npz(tmp_path, a), normalize=True))
    from_dir = load_arrays(_config(_npy_dir(tmp_path, a), normalize=True))
    for s in ("train", "validation", "test"):
        x, y = getattr(from_npz, s), getattr(from_dir, s)
        for k in x.inputs:
            np.testing.assert_array_equal(x.inputs[k], y.inputs[k])
        np.testing.assert_array_equal(x.labels, y.labels)
    assert len(from_dir.test) == 4


def test_nan_and_mask_mark_missing_and_zero_the_values(tmp_path):
    a = _arrays()
    a["acc"][2, 1] = np.nan  # one NaN is enough
    a["gyro"][3] = np.nan
    mask = np.ones((N, 2), bool)  # columns: acc, gyro (sorted)
    mask[4, 1] = False
    mask[13, 0] = False  # validation row 1
    ds = load_arrays(_config(_npz(tmp_path, {**a, "mask": mask})))
    expected = np.ones((12, 2), bool)
    expected[2, 0] = expected[3, 1] = expected[4, 1] = False
    np.testing.assert_array_equal(ds.train.mask, expected)
    assert not ds.train.inputs["acc"][2].any() and not ds.train.inputs["gyro"][[3, 4]].any()
    assert np.isfinite(ds.train.inputs["acc"]).all()
    assert not ds.validation.mask[1, 0] and ds.validation.mask[1, 1]


def test_default_split_is_seeded_and_stratified(tmp_path):
    n = 100
    rng = np.random.default_rng(1)
    arrays = {
        "acc": rng.normal(size=(n, 5)),
        "gyro": rng.normal(size=(n, 7, 2)),
        "labels": np.repeat([0, 1, 2], [50, 30, 20]),
    }
    path = _npz(tmp_path, arrays)
    ds = load_arrays(_config(path, val_fraction=0.2, test_fraction=0.1, split_seed=3))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (70, 20, 10)
    np.testing.assert_array_equal(np.bincount(ds.validation.labels), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(ds.test.labels), [5, 3, 2])
    again = load_arrays(_config(path, val_fraction=0.2, test_fraction=0.1, split_seed=3))
    np.testing.assert_array_equal(ds.test.inputs["acc"], again.test.inputs["acc"])
    other = load_arrays(_config(path, val_fraction=0.2, test_fraction=0.1, split_seed=4))
    assert not np.array_equal(ds.test.inputs["acc"], other.test.inputs["acc"])


def test_normalisation_is_fitted_on_present_train_entries_only(tmp_path):
    a = _arrays()
    a["acc"][5] = 1e6  # masked out below: must not enter the statistics
    a["acc"][12:] += 100.0  # validation / test: must not enter either
    a["gyro"][6] = np.nan
    mask = np.ones((N, 2), bool)
    mask[5, 0] = False
    ds = load_arrays(_config(_npz(tmp_path, {**a, "mask": mask}), normalize=True))
    keep = np.array([i for i in range(12) if i != 5])
    np.testing.assert_allclose(ds.input_stats["acc"]["mean"], a["acc"][keep].mean(axis=0))
    np.testing.assert_allclose(ds.input_stats["acc"]["std"], a["acc"][keep].std(axis=0))
    # Time series: one mean / std per channel, over present rows and all steps.
    gyro = a["gyro"][[i for i in range(12) if i != 6]]
    np.testing.assert_allclose(ds.input_stats["gyro"]["mean"], gyro.mean(axis=(0, 1)))
    assert ds.input_stats["gyro"]["std"].shape == (2,)
    x = ds.train.inputs["acc"][keep]
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-5)
    assert not ds.train.inputs["acc"][5].any() and not ds.train.inputs["gyro"][6].any()
    assert ds.test.inputs["acc"].mean() > 10  # shifted data stays shifted


def test_string_multilabel_and_regression_labels(tmp_path):
    a = _arrays()
    a["labels"] = np.array(["walk", "run", "sit", "run"] * 5)
    ds = load_arrays(_config(_npz(tmp_path, a, "s.npz")))
    assert ds.spec.class_names == ("run", "sit", "walk") and ds.train.labels[0] == 2
    a["labels"] = (np.arange(N * 3).reshape(N, 3) % 2).astype(bool)
    ds = load_arrays(_config(_npz(tmp_path, a, "m.npz"), task="multilabel"))
    assert ds.spec.num_outputs == 3 and ds.train.labels.dtype == np.float32
    a["labels"] = np.linspace(0, 1, N)
    ds = load_arrays(_config(_npz(tmp_path, a, "r.npz"), task="regression"))
    assert ds.spec.num_outputs == 1 and ds.test.labels.dtype == np.float32


def test_dataset_checks_input_stats_names():
    s = make_synthetic(num_train=6, num_val=3, num_test=3)
    with pytest.raises(ValueError, match="input_stats names 'zz'"):
        Dataset(s.spec, s.train, s.validation, s.test, input_stats={"zz": {}})


def _error(tmp_path, arrays, match, *, npz=True, exc=ValueError, **fields):
    path = _npz(tmp_path, arrays) if npz else _npy_dir(tmp_path, arrays)
    with pytest.raises(exc, match=match):
        load_arrays(_config(path, **fields))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz not found"):
        load_arrays(_config(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="data.path is empty"):
        load_arrays(_config(""))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match=r"bad\.npz is not a readable \.npz file"):
        load_arrays(_config(tmp_path / "bad.npz"))
    a = _arrays()
    d = _npy_dir(tmp_path, a)
    (d / "acc.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"dir/acc\.npy could not be read"):
        load_arrays(_config(d))
    (d / "acc.npy").unlink()
    with pytest.raises(ValueError, match=r"acc\.npy not found \(named in data.modalities\); "):
        load_arrays(_config(d))


def test_absent_modality_lists_the_arrays_present(tmp_path):
    a = _arrays()
    del a["gyro"]
    _error(tmp_path, a, r"\['gyro'\] not found .*arrays present in .*: acc, labels, split")


def test_mismatched_lengths_name_both_arrays(tmp_path):
    a = _arrays()
    a["gyro"] = a["gyro"][:9]
    _error(tmp_path, a, r"array 'gyro' has 9 rows but 'labels' has 20")


def test_bad_labels(tmp_path):
    a = _arrays()
    a["labels"][4] = 5
    _error(tmp_path, a, r"labels must lie in 0..2 .*rows 4 hold \[5\]", num_classes=3)
    a["labels"][4] = -1
    _error(tmp_path, a, r"class ids must be >= 0; rows 4 hold \[-1\]")
    a["labels"][4] = N  # inferred: N + 1 classes for N rows
    _error(tmp_path, a, r"largest class id is 20 but there are only 20 rows.*data.num_classes")
    _error(tmp_path, a, r"data.num_classes=200000 is more than 100000", num_classes=200_000)
    a["labels"] = np.arange(N) * 0.5
    _error(tmp_path, a, r"must be integer class ids; rows 1, 3, 5")
    a["labels"] = np.array([{"x": 1}] * N, dtype=object)
    _error(tmp_path, a, r"\['labels'\] could not be read .*holds Python objects")


def test_rows_with_every_modality_missing_are_dropped_and_counted(tmp_path):
    a = _arrays()
    a["acc"][[3, 7, 14]] = np.nan  # train rows 3, 7 and validation row 2
    a["gyro"][[3, 7]] = np.nan
    mask = np.ones((N, 2), bool)
    mask[14, 1] = False
    register_dataset("arrays", load_arrays, overwrite=True)
    ds = load_dataset(_config(_npz(tmp_path, {**a, "mask": mask})))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (10, 3, 4)
    keep = [i for i in range(12) if i not in (3, 7)]
    np.testing.assert_array_equal(ds.train.inputs["acc"], a["acc"][keep].astype(np.float32))
    np.testing.assert_array_equal(ds.train.labels, a["labels"][keep])
    assert ds.train.mask.all() and ds.validation.mask.all()
    assert ds.cleaning["train"] == {
        "nonfinite_masked": {"acc": 2, "gyro": 2},
        "dropped_all_missing": 2,
    }
    # Row 14's gyro was masked out already: its NaN acc is counted, the mask bit is not.
    assert ds.cleaning["validation"] == {
        "nonfinite_masked": {"acc": 1, "gyro": 0},
        "dropped_all_missing": 1,
    }
    assert ds.cleaning["test"]["dropped_all_missing"] == 0


def test_inf_marks_missing_or_stops_with_on_nonfinite_error(tmp_path):
    a = _arrays()
    a["acc"][2, 0] = np.inf
    a["acc"][17, 1] = -np.inf
    a["gyro"][5, 0, 0] = 1e300  # beyond float32: would become inf
    a["gyro"][6] = np.nan  # NaN stays the missing marker, even with "error"
    path = _npz(tmp_path, a)
    ds = load_arrays(_config(path, normalize=True))
    assert not ds.train.mask[2, 0] and not ds.train.mask[5, 1] and not ds.test.mask[1, 0]
    assert not ds.train.inputs["acc"][2].any() and not ds.train.inputs["gyro"][5].any()
    assert np.isfinite(ds.input_stats["acc"]["mean"]).all()
    assert np.isfinite(ds.input_stats["gyro"]["std"]).all()
    assert ds.cleaning["train"]["nonfinite_masked"] == {"acc": 1, "gyro": 2}
    assert ds.cleaning["test"]["nonfinite_masked"] == {"acc": 1, "gyro": 0}
    with pytest.raises(ValueError, match=r"\['acc'\]: rows 2, 17 \(split train, test\) hold inf"):
        load_arrays(_config(path, on_nonfinite="error"))
    a["acc"][[2, 17]] = 0.0
    with pytest.raises(ValueError, match=r"\['gyro'\]: rows 5 \(split train\) hold infinite"):
        load_arrays(_config(_npz(tmp_path, a, "b.npz"), on_nonfinite="error"))
    mask = np.ones((N, 2), bool)
    mask[5, 1] = False  # a masked-out row may hold anything
    ds = load_arrays(_config(_npz(tmp_path, {**a, "mask": mask}, "c.npz"), on_nonfinite="error"))
    assert ds.cleaning["train"]["nonfinite_masked"] == {"acc": 0, "gyro": 1}
    with pytest.raises(ValueError, match=r"data.on_nonfinite='drop'; allowed: 'mask', 'error'"):
        load_arrays(_config(path, on_nonfinite="drop"))


def test_bad_inputs_mask_and_split(tmp_path):
    a = _arrays()
    a["acc"][:12] = np.nan
    _error(tmp_path, a, r"modality 'acc' is missing in every training row")
    a = _arrays()
    a["acc"][:12] = a["gyro"][:12] = np.nan
    _error(tmp_path, a, r"the 'train' split has no rows left: all 12 have every modality")
    a = _arrays()
    _error(tmp_path, a, r"'audio' is not a known kind", modalities={"acc": "audio"})
    _error(
        tmp_path,
        a,
        r"'acc' of kind 'timeseries' needs a per-sample shape of rank 2",
        modalities={"acc": "timeseries"},
    )
    a["split"][2] = "tran"
    _error(tmp_path, a, r"split values must be .*rows 2 hold \['tran'\]")
    a = _arrays()
    a["mask"] = np.ones((N, 3), bool)
    _error(tmp_path, a, r"the mask must be \(N, M\) = \(20, 2\) .*columns acc, gyro")
    a = _arrays()
    a["split"][12:16] = "test"
    _error(tmp_path, a, r"the 'validation' split has no rows")


@pytest.mark.parametrize(
    "labels",
    [
        np.arange(N) % 2 + 2**40,  # offset ids: once ~1e12 class names, then an OOM kill
        np.where(np.arange(N) % 2, np.iinfo(np.int64).max, 0),
        np.where(np.arange(N) % 2, np.iinfo(np.int64).min, 0),
        np.where(np.arange(N) % 2, np.iinfo(np.uint64).max, 0).astype(np.uint64),
        np.where(np.arange(N) % 2, 1e300, 0.0),
        np.where(np.arange(N) % 2, -1e300, 0.0),
    ],
)
def test_huge_class_ids_are_rejected_at_once(tmp_path, labels):
    path = _npz(tmp_path, {**_arrays(), "labels": labels})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"class ids must be >= 0|largest class id is"):
        load_arrays(_config(path))
    # Loading these tiny arrays takes milliseconds; anything scaling with the ids would not.
    assert time.perf_counter() - start < 1.0
    # The fix the message names works: the ids as strings become the class names.
    ds = load_arrays(_config(_npz(tmp_path, {**_arrays(), "labels": labels.astype(str)}, "s.npz")))
    assert ds.spec.num_outputs == 2 and set(ds.spec.class_names) == set(labels.astype(str))


def test_class_names_give_the_number_of_classes(tmp_path):
    a = _arrays()  # ids 0, 1; a third class never occurs
    ds = load_arrays(_config(_npz(tmp_path, a), class_names=("a", "b", "c")))
    assert ds.spec.num_outputs == 3 and ds.spec.class_names == ("a", "b", "c")
