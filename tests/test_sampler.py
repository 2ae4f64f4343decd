"""Tests for label splits, modality dropout and the semi-supervised sampler."""

import numpy as np
import pytest

from robult_jax.data import Split
from robult_jax.data.sampler import (
    SemiSupervisedSampler,
    iterate_eval_batches,
    label_split,
    load_label_split,
    modality_dropout_mask,
    save_label_split,
)


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts).astype(np.int32)


def _split(n=50, m=2, num_classes=5, seed=0, mask=None):
    rng = np.random.default_rng(seed)
    inputs = {
        "a": rng.normal(size=(n, 4)).astype(np.float32) + 1.0,
        "b": rng.normal(size=(n, 3, 2)).astype(np.float32) + 1.0,
    }
    inputs = dict(list(inputs.items())[:m])
    labels = (np.arange(n) % num_classes).astype(np.int32)
    mask = np.ones((n, m), bool) if mask is None else mask
    return Split(inputs=inputs, labels=labels, mask=mask)


# ---------------------------------------------------------------- label_split


def test_label_split_stratified_counts():
    labels = _labels([100, 40, 7, 1])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    idx = label_split(labels, 0.1, seed=3)
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    # round half up per class, at least one: 10, 4, round(0.7)=1, max(1, 0)=1.
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [10, 4, 1, 1])


def test_label_split_at_least_one_per_class_and_full_rate():
    labels = _labels([3, 3, 200])
    idx = label_split(labels, 0.01, seed=0)
    assert set(labels[idx].tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(label_split(labels, 1.0, seed=0), np.arange(len(labels)))


def test_label_split_reproducible_and_seed_dependent():
    labels = _labels([50, 50, 50])
    a = label_split(labels, 0.2, seed=7)
    np.testing.assert_array_equal(a, label_split(labels, 0.2, seed=7))
    assert not np.array_equal(a, label_split(labels, 0.2, seed=8))


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_label_split_bad_rate(rate):
    with pytest.raises(ValueError, match=r"data\.label_rate must be in \(0, 1\]"):
        label_split(_labels([5, 5]), rate, seed=0)


def test_label_split_unstratified_for_regression_labels():
    idx = label_split(np.linspace(0, 1, 40).astype(np.float32), 0.25, seed=0)
    assert len(idx) == 10 and len(np.unique(idx)) == 10


def test_save_load_label_split(tmp_path):
    idx = label_split(_labels([20, 20]), 0.3, seed=1)
    path = tmp_path / "labels.json"
    save_label_split(path, idx, rate=0.3, seed=1)
    loaded, info = load_label_split(path, rate=0.3, seed=1)
    np.testing.assert_array_equal(loaded, idx)
    assert info["rate"] == 0.3 and info["seed"] == 1 and info["num_labeled"] == len(idx)
    with pytest.raises(ValueError, match="label_rate"):
        load_label_split(path, rate=0.5)
    text = path.read_text().replace(f"[{idx[0]},", f"[{idx[0] + 1},")
    path.write_text(text)
    with pytest.raises(ValueError, match="sha256"):
        load_label_split(path)


# ------------------------------------------------------------ modality dropout


def test_dropout_never_all_absent_and_rate_close():
    rng = np.random.default_rng(0)
    mask = modality_dropout_mask(20000, 3, 0.5, rng)
    assert mask.shape == (20000, 3) and mask.dtype == bool
    assert mask.any(axis=1).all()
    # Without the keep-one rule the drop rate would be 0.5; the rule puts back
    # one modality in 1/8 of rows: expected drop rate 0.5 - 1/24.
    np.testing.assert_allclose(1 - mask.mean(), 0.5 - 1 / 24, atol=0.01)


def test_dropout_rate_zero_keeps_all_and_bad_rate():
    assert modality_dropout_mask(100, 4, 0.0, np.random.default_rng(0)).all()
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"data\.modality_dropout must be in \[0, 1\)"):
            modality_dropout_mask(3, 2, rate, np.random.default_rng(0))


def test_dropout_respects_data_mask():
    rng = np.random.default_rng(1)
    data_mask = rng.random((5000, 3)) < 0.6
    data_mask[0] = False  # a row with nothing in the data stays empty
    data_mask[1] = [False, True, False]
    out = modality_dropout_mask(5000, 3, 0.9, rng, data_mask)
    assert not (out & ~data_mask).any()  # never turns an absent modality present
    has_any = data_mask.any(axis=1)
    np.testing.assert_array_equal(out.any(axis=1), has_any)
    np.testing.assert_array_equal(out[1], [False, True, False])
    # The kept-one modality is uniform among the present ones.
    full_rows = data_mask.all(axis=1) & (out.sum(axis=1) == 1)
    frac = out[full_rows].mean(axis=0)
    np.testing.assert_allclose(frac, 1 / 3, atol=0.05)


# --------------------------------------------------------------------- sampler


def _sampler(split, labeled_idx, seed=0, dropout=0.3, lb=4, ub=6):
    return SemiSupervisedSampler(
        split,
        labeled_idx,
        labeled_batch=lb,
        unlabeled_batch=ub,
        modality_dropout=dropout,
        seed=seed,
    )


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in ("mask", "labels", "is_labeled"):
        np.testing.assert_array_equal(a[k], b[k])
    for name in a["inputs"]:
        np.testing.assert_array_equal(a["inputs"][name], b["inputs"][name])


def test_batch_is_pure_function_of_seed_and_step():
    split = _split()
    idx = label_split(split.labels, 0.2, seed=0)
    s1, s2 = _sampler(split, idx), _sampler(split, idx)
    for step in range(5):
        s1.batch(step)
    _assert_batches_equal(s1.batch(5), s2.batch(5))  # resumed == uninterrupted
    _assert_batches_equal(s1.batch(5), s1.batch(5))
    assert not np.array_equal(s1.indices(5), _sampler(split, idx, seed=1).indices(5))


def test_batch_shapes_dtypes_and_no_label_leak():
    split = _split()
    before = {k: v.copy() for k, v in split.inputs.items()}
    idx = label_split(split.labels, 0.2, seed=0)
    sampler = _sampler(split, idx, dropout=0.5)
    for step in range(20):
        b = sampler.batch(step)
        assert b["inputs"]["a"].shape == (10, 4) and b["inputs"]["a"].dtype == np.float32
        assert b["inputs"]["b"].shape == (10, 3, 2)
        assert b["mask"].shape == (10, 2) and b["mask"].dtype == bool
        assert b["labels"].shape == (10,) and b["labels"].dtype == np.int32
        np.testing.assert_array_equal(b["is_labeled"], [True] * 4 + [False] * 6)
        rows = sampler.indices(step)
        assert set(rows[:4].tolist()) <= set(idx.tolist())
        assert not set(rows[4:].tolist()) & set(idx.tolist())
        np.testing.assert_array_equal(b["labels"][:4], split.labels[rows[:4]])
        assert (b["labels"][4:] == 0).all()
        # Dropped modalities are zeros; present ones are the data.
        for i, name in enumerate(("a", "b")):
            x = b["inputs"][name]
            assert (x[~b["mask"][:, i]] == 0).all()
            np.testing.assert_array_equal(
                x[b["mask"][:, i]], split.inputs[name][rows][b["mask"][:, i]]
            )
        assert b["mask"].any(axis=1).all()
    for k, v in before.items():
        np.testing.assert_array_equal(split.inputs[k], v)  # never mutated


def test_every_labeled_sample_once_per_epoch():
    split = _split(n=50)
    idx = label_split(split.labels, 0.2, seed=0)  # 10 labeled, batch 4
    sampler = _sampler(split, idx, lb=4)
    seen = np.concatenate([sampler.indices(s)[:4] for s in range(10)])  # 4 epochs
    for e in range(4):
        np.testing.assert_array_equal(np.sort(seen[e * 10 : (e + 1) * 10]), idx)
    assert not np.array_equal(seen[:10], seen[10:20])  # reshuffled per epoch


@pytest.mark.parametrize("n,batch", [(10, 4), (10, 10), (5, 7), (5, 13)])
def test_cached_permutations_give_the_uncached_streams(n, batch):
    """The sampler caches each epoch's permutation; the indices are those without it,
    in any order of steps, also when a batch spans two or more epochs."""
    from robult_jax.data.sampler import _stream

    def reference(idx, batch, step, seed, stream):  # the sampler before the cache
        pos = step * batch + np.arange(batch, dtype=np.int64)
        epoch, offset = np.divmod(pos, len(idx))
        out = np.empty(batch, dtype=np.int64)
        for e in np.unique(epoch):
            perm = np.random.default_rng((seed, stream, int(e))).permutation(len(idx))
            out[epoch == e] = perm[offset[epoch == e]]
        return idx[out]

    idx = np.arange(100, 100 + n)
    perms: dict = {}
    steps = [0, 1, 2, 9, 3, 40, 2, 41, 7, 0, 100, 5]
    for step in steps:
        want = reference(idx, batch, step, 3, 0x1AB1)
        np.testing.assert_array_equal(_stream(idx, batch, step, 3, 0x1AB1), want)
        np.testing.assert_array_equal(_stream(idx, batch, step, 3, 0x1AB1, perms), want)
        assert len(perms) <= 8
    assert perms  # the cache was used


def test_full_label_rate_draws_unlabeled_rows_from_all():
    split = _split(n=12)
    sampler = _sampler(split, np.arange(12), lb=3, ub=5)
    b = sampler.batch(0)
    assert b["is_labeled"].sum() == 3 and (b["labels"][3:] == 0).all()


def test_sampler_respects_data_mask():
    mask = np.ones((50, 2), bool)
    mask[::2, 0] = False
    split = _split(mask=mask)
    sampler = _sampler(split, label_split(split.labels, 0.5, seed=0), dropout=0.0)
    b = sampler.batch(3)
    np.testing.assert_array_equal(b["mask"], mask[sampler.indices(3)])
    assert (b["inputs"]["a"][~b["mask"][:, 0]] == 0).all()


def test_sampler_bad_arguments():
    split = _split()
    with pytest.raises(ValueError, match="modality_dropout"):
        _sampler(split, np.arange(5), dropout=1.0)
    with pytest.raises(ValueError, match="labeled_idx"):
        _sampler(split, np.array([0, 99]))


# ------------------------------------------------------------------ evaluation


def test_eval_batches_padded_and_cover_split():
    split = _split(n=23)
    eval_mask = np.ones((23, 2), bool)
    eval_mask[5, 1] = False
    batches = list(iterate_eval_batches(split, 10, mask=eval_mask))
    assert len(batches) == 3
    for b in batches:
        assert b["inputs"]["a"].shape == (10, 4) and b["valid"].shape == (10,)
        assert b["mask"].any(axis=1).all()
    assert batches[-1]["valid"].sum() == 3
    assert (batches[-1]["inputs"]["a"][3:] == 0).all()
    valid = np.concatenate([b["valid"] for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])[valid]
    np.testing.assert_array_equal(labels, split.labels)
    a = np.concatenate([b["inputs"]["a"] for b in batches])[valid]
    np.testing.assert_array_equal(a[:5], split.inputs["a"][:5])
    b_in = np.concatenate([b["inputs"]["b"] for b in batches])[valid]
    assert (b_in[5] == 0).all() and not batches[0]["mask"][5, 1]
    np.testing.assert_array_equal(b_in[6], split.inputs["b"][6])
