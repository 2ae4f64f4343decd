"""Tests for the AV-MNIST, MM-IMDb and CMU-MOSI/MOSEI builders of user-supplied files.

Every fixture is a tiny file written here in the published on-disk format
(recipes: docs/benchmark_formats.md), 20 samples each; nothing
is downloaded. Each build takes about a second.
"""

import importlib.util
import json
import logging
import os
import pickle
import types

import h5py
import numpy as np
import pytest

from robult_jax import config as config_lib
from robult_jax.data import load_dataset, register_dataset
from robult_jax.data.benchmarks import affect, avmnist, mmimdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENRES = (
    "Drama Comedy Romance Thriller Crime Action Adventure Horror Documentary Mystery Sci-Fi "
    "Fantasy Family Biography War History Music Animation Musical Western Sport Short Film-Noir"
).split()


def _config(name):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _cfg(**fields):
    return types.SimpleNamespace(**fields)


# ----------------------------------------------------------------------------- AV-MNIST


def _write_avmnist(root, n_train=16, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    base = root / "avmnist"
    (base / "image").mkdir(parents=True)
    (base / "audio").mkdir()
    (root / "avmnist" / "avmnist_temp").mkdir()  # leftover folder in the archive: ignored
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        out[split] = {
            "image": rng.normal(0.0, 50.0, size=(n, 784)),  # float64, PCA-centred
            "audio": rng.integers(0, 256, size=(n, 112, 112), dtype=np.uint8),
            "label": (np.arange(n) % 10).astype(np.uint8),
        }
        np.save(base / "image" / f"{split}_data.npy", out[split]["image"])
        np.save(base / "audio" / f"{split}_data.npy", out[split]["audio"])
        np.save(base / f"{split}_labels.npy", out[split]["label"])
    return out


@pytest.fixture(scope="module")
def av(tmp_path_factory):
    root = tmp_path_factory.mktemp("av")
    raw = _write_avmnist(root / "manual")
    cfg = _cfg(name="avmnist", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"))
    cfg.val_rows = 4
    return raw, avmnist.load_avmnist(cfg), cfg


def test_avmnist_shapes_splits_and_scaling(av):
    raw, ds, _ = av
    assert ds.spec.modality_names == ("image", "audio")
    assert [m.kind for m in ds.spec.modalities] == ["image", "image"]
    assert (ds.spec.task, ds.spec.num_outputs) == ("multiclass", 10)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 4, 4)
    # Validation = the last 4 train rows, unshuffled; both modalities / 255.
    cases = [
        (ds.train, slice(0, 12), "train"),
        (ds.validation, slice(12, 16), "train"),
        (ds.test, slice(None), "test"),
    ]
    for split, rows, src in cases:
        img = raw[src]["image"][rows].reshape(-1, 28, 28) / 255.0
        np.testing.assert_allclose(split.inputs["image"], img, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            split.inputs["audio"], raw[src]["audio"][rows] / 255.0, atol=1e-6
        )
        np.testing.assert_array_equal(split.labels, raw[src]["label"][rows])
        assert split.inputs["image"].dtype == split.inputs["audio"].dtype == np.float32
        assert split.labels.dtype == np.int32 and split.mask.all()
    assert ds.train.inputs["audio"].shape[1:] == (112, 112)


def test_avmnist_accepts_the_avmnist_folder_itself_and_reuses_the_cache(av):
    raw, _, cfg = av
    cfg2 = _cfg(**{**vars(cfg), "manual_dir": os.path.join(cfg.manual_dir, "avmnist")})
    ds = avmnist.load_avmnist(cfg2)
    np.testing.assert_array_equal(ds.test.labels, raw["test"]["label"])


def test_avmnist_config_and_model(av):
    _, ds, cfg = av
    config = _config("avmnist")
    with config.unlocked():
        config.data.manual_dir, config.data.data_dir, config.data.val_rows = (
            cfg.manual_dir, cfg.data_dir, 4,
        )  # fmt: skip
    register_dataset("avmnist", avmnist.load_avmnist, overwrite=True)
    ds2 = load_dataset(config.data)
    assert len(ds2.validation) == 4
    typed = config_lib.from_config_dict(config)
    config_lib.check_against_dataset(typed, ds.spec)
    from robult_jax import models

    models.build_model(typed.model, ds.spec)  # cnn2d accepts both 2-D modalities


def test_avmnist_errors(tmp_path, av):
    _, _, cfg = av
    with pytest.raises(ValueError, match=r"--config.data.manual_dir="):
        avmnist.load_avmnist(_cfg(name="avmnist", manual_dir="", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="data.val_rows=16 leaves no training rows"):
        avmnist.load_avmnist(_cfg(**{**vars(cfg), "val_rows": 16}))

    _write_avmnist(tmp_path / "m")
    os.remove(tmp_path / "m" / "avmnist" / "audio" / "test_data.npy")
    bad = _cfg(name="avmnist", manual_dir=str(tmp_path / "m"), data_dir=str(tmp_path / "t"))
    with pytest.raises(FileNotFoundError) as e:
        avmnist.load_avmnist(bad)
    msg = str(e.value)
    assert str(tmp_path / "m" / "avmnist" / "audio" / "test_data.npy") in msg
    assert "avmnist.tar.gz" in msg and "MultiBench" in msg

    # Truncated .npy file.
    path = tmp_path / "m" / "avmnist" / "audio" / "test_data.npy"
    np.save(path, np.zeros((4, 112, 112), np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"audio/test_data\.npy: cannot be read"):
        avmnist.load_avmnist(bad)
    # Wrong shape.
    np.save(path, np.zeros((4, 112, 100), np.uint8))
    with pytest.raises(ValueError, match=r"audio/test_data\.npy: shape \(4, 112, 100\)"):
        avmnist.load_avmnist(bad)
    # A cache built from other files is not silently reused.
    other = _cfg(**{**vars(bad), "data_dir": cfg.data_dir})
    np.save(path, np.zeros((4, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="built from different source files"):
        avmnist.load_avmnist(other)


# ----------------------------------------------------------------------------- MM-IMDb

NAN_ROW = 13  # a validation row whose plot has no word2vec word


def _write_mmimdb(path, *, split_attr=False, drop=(), text_dim=300, seed=0):
    rng = np.random.default_rng(seed)
    n = 20
    genres = (rng.random((n, 23)) < 0.2).astype(np.int32)
    genres[np.arange(n), rng.integers(0, 23, n)] = 1  # at least one genre per row
    data = {
        "features": rng.standard_normal((n, text_dim)).astype(np.float32),
        "vgg_features": np.maximum(rng.standard_normal((n, 4096)), 0).astype(np.float32),
        "genres": genres,
        "imdb_ids": np.array([f"{i:07d}".encode() for i in range(n)], dtype="S7"),
    }
    data["features"][NAN_ROW] = np.nan
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value)
        if "genres" not in drop:
            f["genres"].attrs["target_names"] = json.dumps(GENRES)
        if split_attr:  # Fuel's split table (without the h5py reference column)
            dt = [("split", "S5"), ("source", "S12"), ("start", "i8"), ("stop", "i8"),
                  ("available", "?"), ("comment", "S1")]  # fmt: skip
            rows = [(s, src, a, b, True, b"")
                    for s, a, b in ((b"train", 0, 12), (b"dev", 12, 16), (b"test", 16, 20))
                    for src in (b"features", b"genres")]  # fmt: skip
            f.attrs["split"] = np.array(rows, dtype=dt)
    return data


@pytest.fixture(scope="module")
def imdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb")
    (root / "manual").mkdir()
    raw = _write_mmimdb(root / "manual" / "multimodal_imdb.hdf5", split_attr=True)
    cfg = _cfg(name="mmimdb", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"))
    return raw, cfg


def test_mmimdb_splits_labels_and_nan_rows(imdb, caplog):
    raw, cfg = imdb
    with caplog.at_level(logging.INFO):
        ds = mmimdb.load_mmimdb(_cfg(**vars(cfg), train_end=12, val_end=16))
    assert "1 rows without text" in caplog.text
    assert (ds.spec.task, ds.spec.num_outputs) == ("multilabel", 23)
    assert ds.spec.class_names == tuple(GENRES)  # from genres.attrs['target_names']
    assert [(m.name, m.shape, m.kind) for m in ds.spec.modalities] == [
        ("text", (300,), "vector"), ("image", (4096,), "vector"),
    ]  # fmt: skip
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 4, 4)
    for split, rows in (
        (ds.train, slice(0, 12)),
        (ds.validation, slice(12, 16)),
        (ds.test, slice(16, 20)),
    ):
        assert split.labels.dtype == np.float32 and split.labels.shape == (len(split), 23)
        np.testing.assert_array_equal(split.labels, raw["genres"][rows])
        np.testing.assert_array_equal(split.inputs["image"], raw["vgg_features"][rows])
        assert np.isfinite(split.inputs["text"]).all()
    # The NaN text row: missing in the mask, zeroed; the image is kept.
    i = NAN_ROW - 12
    assert ds.validation.mask[i].tolist() == [False, True]
    assert (ds.validation.inputs["text"][i] == 0).all()
    assert ds.validation.mask.sum() == 2 * 4 - 1 and ds.train.mask.all() and ds.test.mask.all()
    np.testing.assert_array_equal(ds.train.inputs["text"], raw["features"][:12])


def test_mmimdb_boundaries_from_the_file_split_attribute(imdb):
    _, cfg = imdb
    ds = mmimdb.load_mmimdb(_cfg(**vars(cfg), train_end=0, val_end=0))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 4, 4)
    with pytest.raises(ValueError, match=r"0 < train_end < val_end < 20"):
        mmimdb.load_mmimdb(_cfg(**vars(cfg), train_end=16, val_end=12))


def test_mmimdb_config_and_model(imdb):
    _, cfg = imdb
    config = _config("mmimdb")
    assert (config.data.train_end, config.data.val_end) == (15552, 18160)
    with config.unlocked():
        config.data.manual_dir, config.data.data_dir = cfg.manual_dir, cfg.data_dir
        config.data.train_end, config.data.val_end = 10, 15
    register_dataset("mmimdb", mmimdb.load_mmimdb, overwrite=True)
    ds = load_dataset(config.data)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (10, 5, 5)
    typed = config_lib.from_config_dict(config)
    config_lib.check_against_dataset(typed, ds.spec)
    from robult_jax import models

    models.build_model(typed.model, ds.spec)


def test_mmimdb_errors(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    cfg = _cfg(name="mmimdb", manual_dir=str(manual), data_dir=str(tmp_path / "t"))
    with pytest.raises(FileNotFoundError) as e:
        mmimdb.load_mmimdb(cfg)
    assert str(manual / "multimodal_imdb.hdf5") in str(e.value)
    assert "archive.org/download/mmimdb/multimodal_imdb.hdf5" in str(e.value)

    path = manual / "multimodal_imdb.hdf5"
    _write_mmimdb(path)  # no split attribute, and the config sets no boundaries
    with pytest.raises(ValueError, match=r"--config.data.train_end=15552"):
        mmimdb.load_mmimdb(cfg)
    cases = [
        ({"drop": ("genres",)}, r"multimodal_imdb.hdf5: no dataset 'genres'"),
        ({"text_dim": 299}, r"multimodal_imdb.hdf5: features has shape \(20, 299\)"),
    ]
    for i, (kwargs, pattern) in enumerate(cases):
        os.remove(path)
        _write_mmimdb(path, **kwargs)
        with pytest.raises(ValueError, match=pattern):
            mmimdb.load_mmimdb(_cfg(**{**vars(cfg), "data_dir": str(tmp_path / f"c{i}")}))
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)  # truncated
    with pytest.raises(ValueError, match=r"multimodal_imdb.hdf5: cannot be opened"):
        mmimdb.load_mmimdb(_cfg(**{**vars(cfg), "data_dir": str(tmp_path / "t2")}))


# ----------------------------------------------------------------------------- MOSI / MOSEI

T = 50


def _write_affect(path, dims=(20, 5, 300), seed=0, mmsa=False):
    """Recipe: 12/4/4 left-padded samples, one all-zero-text sample, one -inf audio cell."""
    rng = np.random.default_rng(seed)
    data, lengths = {}, {}
    for key, n in (("train", 12), ("valid", 4), ("test", 4)):
        ls = rng.integers(1, T + 1, n)
        ls[0], ls[1] = T, 1  # both extremes
        names = ("vision", "audio", "text")
        xs = {m: np.zeros((n, T, d), np.float32) for m, d in zip(names, dims, strict=True)}
        for i, L in enumerate(ls):
            for x in xs.values():
                x[i, T - L :] = rng.standard_normal((L, x.shape[2]))
        labels = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
        labels[2] = 0.0
        data[key] = {**xs, "labels": labels, "id": np.array([[b"v", b"0", b"1"]] * n)}
        lengths[key] = ls
    data["train"]["text"][5] = 0.0  # no words: dropped
    data["train"]["audio"][3, T - 1, 2] = -np.inf
    if mmsa:
        data["train"]["regression_labels"] = data["train"].pop("labels")
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return data, lengths


@pytest.fixture(scope="module")
def mosi(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosi")
    (root / "manual").mkdir()
    raw, lengths = _write_affect(root / "manual" / "mosi_data.pkl")
    cfg = _cfg(name="mosi", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"))
    return raw, lengths, cfg


def _expected(x, L, seq_len=T):
    """Brute force: the last L (valid) steps first, then zeros; validity channel last."""
    out = np.zeros((seq_len, x.shape[1] + 1), np.float32)
    k = min(L, seq_len)
    out[:k, :-1] = x[T - L : T - L + k]
    out[:k, -1] = 1.0
    return out


def test_mosi_drop_inf_padding_and_labels(mosi, caplog):
    raw, lengths, cfg = mosi
    with caplog.at_level(logging.INFO):
        ds = affect.load_mosi(cfg)
    assert "dropped 1 of 12 samples" in caplog.text
    assert (ds.spec.name, ds.spec.task, ds.spec.num_outputs) == ("mosi", "regression", 1)
    assert [(m.name, m.shape, m.kind) for m in ds.spec.modalities] == [
        ("vision", (50, 21), "sequence"),
        ("audio", (50, 6), "sequence"),
        ("text", (50, 301), "sequence"),
    ]
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (11, 4, 4)
    for split, key in ((ds.train, "train"), (ds.validation, "valid"), (ds.test, "test")):
        keep = [i for i in range(len(raw[key]["labels"])) if raw[key]["text"][i].sum() != 0]
        assert split.labels.dtype == np.float32 and split.labels.shape == (len(keep),)
        np.testing.assert_array_equal(split.labels, raw[key]["labels"].reshape(-1)[keep])
        assert split.mask.all()
        for m in ("vision", "audio", "text"):
            x = np.nan_to_num(raw[key][m], neginf=0.0)
            want = np.stack([_expected(x[i], lengths[key][i]) for i in keep])
            np.testing.assert_array_equal(split.inputs[m], want)
    assert 0.0 in ds.train.labels  # an exact-zero sentiment survives
    # The -inf audio cell (train row 3, last step) is 0 at step L-1 of the moved row.
    assert np.isfinite(ds.train.inputs["audio"]).all()
    assert ds.train.inputs["audio"][3, lengths["train"][3] - 1, 2] == 0.0
    # Right padding: full-length row all valid; length-1 row valid at step 0 only.
    assert ds.train.inputs["text"][0, :, -1].all()
    assert ds.train.inputs["text"][1, :, -1].tolist() == [1.0] + [0.0] * 49


def test_mosi_seq_len_cut_and_pad(mosi):
    raw, lengths, cfg = mosi
    short = affect.load_mosi(_cfg(**vars(cfg), seq_len=40))
    long = affect.load_mosi(_cfg(**vars(cfg), seq_len=60))
    x = raw["test"]["vision"]
    np.testing.assert_array_equal(short.test.inputs["vision"][0], _expected(x[0], T, 40))
    assert long.test.inputs["vision"].shape == (4, 60, 21)
    assert not long.test.inputs["vision"][:, 50:].any()


def test_mosi_config_registry_and_model(mosi):
    _, _, cfg = mosi
    config = _config("mosi")
    with config.unlocked():
        config.data.manual_dir, config.data.data_dir = cfg.manual_dir, cfg.data_dir
    register_dataset("mosi", affect.load_mosi, overwrite=True)
    ds = load_dataset(config.data)
    assert len(ds.train) == 11
    config_lib.check_against_dataset(config_lib.from_config_dict(config), ds.spec)
    assert _config("mosei").data.pickle == "mosei_senti_data.pkl"


def test_mosei_variant(tmp_path):
    _write_affect(tmp_path / "mosei_senti_data.pkl", dims=(35, 74, 300))
    ds = affect.load_mosei(_cfg(manual_dir=str(tmp_path), data_dir=str(tmp_path / "t")))
    assert ds.spec.name == "mosei"
    assert [m.shape for m in ds.spec.modalities] == [(50, 36), (50, 75), (50, 301)]


def test_affect_errors(tmp_path):
    cfg = _cfg(name="mosi", manual_dir=str(tmp_path), data_dir=str(tmp_path / "t"))
    with pytest.raises(FileNotFoundError) as e:
        affect.load_mosi(cfg)
    assert str(tmp_path / "mosi_data.pkl") in str(e.value)
    assert "1uEK737LXB9jAlf9kyqRs6B9N6cDncodq" in str(e.value)
    with pytest.raises(ValueError, match=r"--config.data.manual_dir="):
        affect.load_mosi(_cfg(name="mosi", manual_dir=""))

    path = tmp_path / "mosi_data.pkl"
    cases = [
        ({"dims": (371, 81, 300)}, "MUStARD / UR-FUNNY"),
        ({"dims": (20, 5, 299)}, r"widths are \(20, 5, 299\)"),
        ({"mmsa": True}, "MMSA"),
    ]
    for i, (kwargs, pattern) in enumerate(cases):
        _write_affect(path, **kwargs)
        with pytest.raises(ValueError, match=r"mosi_data\.pkl.*" + pattern):
            affect.load_mosi(_cfg(**{**vars(cfg), "data_dir": str(tmp_path / f"t{i}")}))
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match=r"mosi_data\.pkl: cannot be unpickled"):
        affect.load_mosi(_cfg(**{**vars(cfg), "data_dir": str(tmp_path / "t9")}))
