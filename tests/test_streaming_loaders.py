"""Every loader that streams (data.streaming=True) gives exactly its in-memory data and batches.

The fixtures are the tiny files of the loaders' own tests, in the published
formats (tests/test_data_*.py); each build takes about a second. MM-IMDb gets
NaN / inf rows (a modality missing, a row dropped), MOSI sequences longer and
shorter than data.seq_len.
"""

import types

import h5py
import helpers
import numpy as np
import pytest
from test_data_benchmarks import NAN_ROW, _write_affect, _write_avmnist, _write_mmimdb
from test_data_mfeat import _fake_source as _write_mfeat
from test_data_watch import _fake_source as _write_watch

from robult_jax.data import load_dataset, sampler, stream


def _both(**fields):
    """(in memory, streamed) datasets of one config, as `load_dataset` returns them."""
    return [load_dataset(types.SimpleNamespace(**fields, streaming=s)) for s in (False, True)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("streaming_loaders")


@pytest.fixture(scope="module")
def mmimdb(root):
    (root / "imdb").mkdir()
    path = root / "imdb" / "multimodal_imdb.hdf5"
    _write_mmimdb(path)
    with h5py.File(path, "r+") as f:
        f["features"][3, 5] = np.inf  # train row 3: text missing
        f["vgg_features"][NAN_ROW] = np.nan  # validation row 13: both missing, dropped
        f["vgg_features"][17, 0] = -np.inf  # test row 17: image missing
    fields = dict(name="mmimdb", manual_dir=str(root / "imdb"), data_dir=str(root / "t_imdb"))
    return _both(**fields, train_end=12, val_end=16)


@pytest.fixture(scope="module", params=[40, 60])  # T = 50: cut and padded sequences
def mosi(root, request):
    if not (root / "mosi").exists():
        (root / "mosi").mkdir()
        _write_affect(root / "mosi" / "mosi_data.pkl")
    fields = dict(name="mosi", manual_dir=str(root / "mosi"), data_dir=str(root / "t_mosi"))
    return _both(**fields, seq_len=request.param)


def test_mmimdb_streams_its_inputs_and_masks_nonfinite_rows_like_in_memory(mmimdb):
    memory, streamed = mmimdb
    assert stream.is_streamed(streamed) and not stream.is_streamed(memory)
    assert (len(memory.train), len(memory.validation), len(memory.test)) == (12, 3, 4)
    assert memory.train.mask[3].tolist() == [False, True]
    assert memory.test.mask[1].tolist() == [True, False]
    assert memory.train.labels.dtype == np.float32 and memory.train.labels.shape == (12, 23)
    helpers.assert_same_dataset(memory, streamed)


def test_mmimdb_batches_and_shares_of_eval_batches(mmimdb):
    memory, streamed = mmimdb
    helpers.assert_same_batches(memory, streamed, steps=(0, 1, 3), eval_batch=3)
    # One process's share of each evaluation batch: only its rows' inputs, the rest whole.
    whole = list(sampler.iterate_eval_batches(streamed.train, 8))
    shares = [list(sampler.iterate_eval_batches(streamed.train, 8, rows=slice(a, a + 4)))
              for a in (0, 4)]  # fmt: skip
    for batch, first, second in zip(whole, *shares, strict=True):
        for name, x in batch["inputs"].items():
            assert first["inputs"][name].shape[0] == 4
            np.testing.assert_array_equal(
                np.concatenate([first["inputs"][name], second["inputs"][name]]), x
            )
        for key in ("mask", "labels", "valid"):
            np.testing.assert_array_equal(first[key], batch[key])


def test_a_streamed_split_reads_only_the_rows_asked_for(mmimdb):
    memory, streamed = mmimdb
    x = streamed.validation.inputs["text"]  # rows 12, 14, 15 of "full" (13 dropped)
    reads = []
    original = x.reader.read
    x.reader.read = lambda records: reads.append(records.tolist()) or original(records)
    try:
        np.testing.assert_array_equal(x[[0, 2]], memory.validation.inputs["text"][[0, 2]])
        np.testing.assert_array_equal(x[1:2], memory.validation.inputs["text"][1:2])
    finally:
        x.reader.read = original
    assert reads == [[12, 15], [14]]


def test_mosi_streams_sequences_cut_or_padded_to_seq_len(mosi):
    memory, streamed = mosi
    seq_len = memory.spec.modalities[0].shape[0]
    x = streamed.train.inputs["text"]
    assert isinstance(x, stream.StreamedArray) and x.shape == (11, seq_len, 301)
    assert memory.train.labels.dtype == np.float32 and memory.train.labels.ndim == 1
    helpers.assert_same_dataset(memory, streamed)
    helpers.assert_same_batches(memory, streamed, steps=(0, 1, 2), eval_batch=3)


def test_avmnist_streams_its_scaled_inputs(root):
    _write_avmnist(root / "avm")
    fields = dict(name="avmnist", manual_dir=str(root / "avm"), data_dir=str(root / "t_avm"))
    memory, streamed = _both(**fields, val_rows=4)
    assert isinstance(streamed.train.inputs["audio"], stream.StreamedArray)
    assert memory.train.inputs["audio"].max() <= 1.0 and memory.input_stats is None
    helpers.assert_same_dataset(memory, streamed)


def test_watch_streams_its_standardised_windows(root):
    _write_watch(str(root / "watch.npy"))
    memory, streamed = _both(
        name="watch", data_dir=str(root / "t_watch"), val_subject=7,
        source_path=str(root / "watch.npy"),
    )  # fmt: skip
    assert isinstance(streamed.validation.inputs["acc"], stream.StreamedArray)
    helpers.assert_same_dataset(memory, streamed)


def test_mfeat_streams_its_standardised_views(root):
    _write_mfeat(str(root / "mfeat"))
    memory, streamed = _both(
        name="mfeat", data_dir=str(root / "t_mfeat"), source_dir=str(root / "mfeat")
    )
    assert isinstance(streamed.test.inputs["pix"], stream.StreamedArray)
    helpers.assert_same_dataset(memory, streamed)
