"""Streamed splits (data.streaming=True) give exactly the in-memory path's data and batches."""

import helpers
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_train import _config

from robult_jax import train
from robult_jax.data import load_dataset, normalize, sampler, stream, tfds_io
from robult_jax.data.synthetic import make_synthetic

SIZES = {"train": 96, "validation": 32, "test": 32}  # the synthetic config's: same programs


class TinyMultimodal(tfds_io.ArrayRecordBuilder, skip_registration=True):
    """The synthetic dataset as array_record, with NaN in a few rows."""

    VERSION = tfds.core.Version("1.0.0")

    def _features(self):
        return {
            "a": tfds.features.Tensor(shape=(8,), dtype=np.float32),
            "b": tfds.features.Tensor(shape=(16, 3), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=3),
        }

    def _split_generators(self, dl_manager):
        data = make_synthetic(num_train=96, num_val=32, num_test=32)
        return {s: self._generate_examples(getattr(data, s), s) for s in SIZES}

    def _generate_examples(self, split, name):
        for i in range(len(split)):
            a, b = split.inputs["a"][i].copy(), split.inputs["b"][i].copy()
            if name == "train" and i in (3, 50):
                a[2] = np.nan  # modality a missing in rows 3 and 50
            if name == "train" and i == 50:
                b[0, 0] = np.inf  # and b too: row 50 is dropped
            yield i, {"a": a, "b": b, "label": int(split.labels[i])}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    builder = TinyMultimodal(data_dir=str(tmp_path_factory.mktemp("tfds")))
    tfds_io.prepare(builder, dataset="tiny")
    return builder.data_path


def _data_config(tfds_dir, streaming):
    return ml_collections.ConfigDict(
        {"name": "tfds", "tfds_dir": str(tfds_dir), "streaming": streaming, "on_nonfinite": "mask"}
    )


def _both(tfds_dir):
    return [load_dataset(_data_config(tfds_dir, s)) for s in (False, True)]


def test_streamed_and_in_memory_datasets_are_the_same(tfds_dir):
    memory, streamed = _both(tfds_dir)
    assert isinstance(streamed.train.inputs["a"], stream.StreamedArray)
    assert not stream.is_streamed(memory) and stream.is_streamed(streamed)
    assert memory.cleaning["train"] == {
        "nonfinite_masked": {"a": 2, "b": 1},
        "dropped_all_missing": 1,
    }
    helpers.assert_same_dataset(memory, streamed)


def test_streamed_batches_equal_in_memory_batches(tfds_dir):
    memory, streamed = _both(tfds_dir)
    helpers.assert_same_batches(memory, streamed, steps=(0, 1, 5, 40), eval_batch=10)


def test_each_process_reads_only_its_half_of_a_batch(tfds_dir):
    _, streamed = _both(tfds_dir)
    reader = streamed.train.inputs["a"].reader
    reads = []
    original = reader.read
    reader.read = lambda records: reads.append(len(records)) or original(records)
    s = sampler.SemiSupervisedSampler(
        streamed.train, np.arange(20), labeled_batch=8, unlabeled_batch=8,
        modality_dropout=0.0, seed=0,
    )  # fmt: skip
    halves = [s.batch(3, rows=slice(0, 8)), s.batch(3, rows=slice(8, 16))]
    assert reads == [8, 8, 8, 8]  # each half reads its 8 records (both modalities share them)
    whole = s.batch(3)
    for name in whole["inputs"]:
        joined = np.concatenate([h["inputs"][name] for h in halves])
        np.testing.assert_array_equal(joined, whole["inputs"][name])


@pytest.mark.parametrize("shape,kind", [((700, 5), "vector"), ((300, 20, 3), "timeseries")])
def test_chunked_statistics_are_bit_identical_to_in_memory_ones(monkeypatch, shape, kind):
    monkeypatch.setattr(stream, "CHUNK", 64)  # many chunks, one ragged
    x = (np.random.default_rng(0).normal(size=shape) * 7 + 3).astype(np.float32)
    present = np.random.default_rng(1).random(len(x)) < 0.8
    want = normalize.fit_stats(x, present, kind)
    got = stream.fit_stats(x, present, kind)
    for k in ("mean", "std"):
        np.testing.assert_array_equal(got[k], want[k])


def test_a_loader_that_cannot_stream_refuses_streaming():
    config = _config()
    config.data.streaming = True
    with pytest.raises(ValueError, match="data.streaming=True, but the 'synthetic' loader") as e:
        load_dataset(config.data)
    assert "streaming loaders: avmnist, mfeat, mmimdb, mosei, mosi, tfds, watch" in str(e.value)


@pytest.mark.slow
def test_a_streamed_run_trains_and_evaluates_like_an_in_memory_run(tfds_dir, tmp_path):
    results = []
    for streaming in (False, True):
        config = _config()
        config.data = _data_config(tfds_dir, streaming)
        results.append(train.train_and_evaluate(config, str(tmp_path / f"s{streaming}")))
    memory, streamed = results
    assert memory["data_fingerprint"] == streamed["data_fingerprint"]
    assert memory["subsets"] == streamed["subsets"]
    assert memory["random_missing"] == streamed["random_missing"]
