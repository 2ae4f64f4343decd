"""robult_jax.data.clean: non-finite values, rows with no modality, fingerprint; and
the evaluation side of the same rule (rows with no modality present are not scored).
"""

import logging
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import evaluate, parallel, tasks
from robult_jax.data import (
    Dataset,
    DatasetSpec,
    ModalitySpec,
    Split,
    clean,
    fingerprint,
    load_dataset,
    register_dataset,
)

SPEC = DatasetSpec(
    name="tiny",
    modalities=(ModalitySpec("a", (3,), "vector"), ModalitySpec("b", (4, 2), "timeseries")),
    task="multiclass",
    num_outputs=2,
)


def _split(n: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    inputs = {
        "a": rng.normal(size=(n, 3)).astype(np.float32),
        "b": rng.normal(size=(n, 4, 2)).astype(np.float32),
    }
    return Split.complete(inputs, (np.arange(n) % 2).astype(np.int32))


def _dataset(**splits: Split) -> Dataset:
    parts = {"train": _split(8, 0), "validation": _split(4, 1), "test": _split(4, 2), **splits}
    return Dataset(SPEC, **parts)


def test_nonfinite_rows():
    x = np.zeros((5, 2, 2))
    x[1, 0, 1], x[2, 1, 0], x[3, 0, 0] = np.nan, -np.inf, 1e300  # 1e300 overflows float32
    x[4, 1, 1] = 3e38  # still a float32
    np.testing.assert_array_equal(clean.nonfinite_rows(x), [False, True, True, True, False])
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)  # 1e300 -> inf
    np.testing.assert_array_equal(clean.nonfinite_rows(x32), [False, True, True, True, False])
    assert clean.nonfinite_rows(np.zeros((0, 3), np.float32)).shape == (0,)


def test_clean_split_masks_zeroes_and_counts_without_mutating():
    split = _split(6)
    split.inputs["a"][1, 2] = np.nan
    split.inputs["b"][2, 3, 0] = np.inf
    split.inputs["b"][4, 0, 1] = -np.inf
    split.mask[4, 1] = False  # already absent: zeroed, not counted
    before = {k: v.copy() for k, v in split.inputs.items()}
    mask_before = split.mask.copy()
    out, counts = clean.clean_split(split, "train")
    assert counts == {"nonfinite_masked": {"a": 1, "b": 1}, "dropped_all_missing": 0}
    expected = mask_before.copy()
    expected[1, 0] = expected[2, 1] = False
    np.testing.assert_array_equal(out.mask, expected)
    assert not out.inputs["a"][1].any() and not out.inputs["b"][[2, 4]].any()
    assert all(np.isfinite(x).all() for x in out.inputs.values())
    np.testing.assert_array_equal(out.inputs["a"][0], before["a"][0])
    # The input split is untouched (a Dataset is never mutated after construction).
    for k in before:
        np.testing.assert_array_equal(split.inputs[k], before[k])
    np.testing.assert_array_equal(split.mask, mask_before)


def test_clean_split_returns_a_clean_split_as_it_is():
    split = _split(5)
    out, counts = clean.clean_split(split, "test")
    assert out is split
    assert counts == {"nonfinite_masked": {"a": 0, "b": 0}, "dropped_all_missing": 0}


def test_rows_with_every_modality_missing_are_dropped():
    split = _split(6)
    split.inputs["a"][[0, 3]] = np.nan
    split.mask[[0, 3, 5], 1] = False
    out, counts = clean.clean_split(split, "validation")
    assert counts == {"nonfinite_masked": {"a": 2, "b": 0}, "dropped_all_missing": 2}
    np.testing.assert_array_equal(out.labels, split.labels[[1, 2, 4, 5]])
    np.testing.assert_array_equal(out.inputs["b"], split.inputs["b"][[1, 2, 4, 5]])
    assert out.mask.any(axis=1).all() and not out.mask[3, 1]


def test_error_mode_names_split_modality_and_rows():
    split = _split(15)
    split.inputs["b"][[2, 4] + list(range(5, 14)), 0, 0] = np.nan
    with pytest.raises(
        ValueError,
        match=r"'test' split: modality 'b' holds NaN or inf in rows 2, 4, 5, 6, 7, 8, 9, 10, "
        r"11, 12 and 1 more .*on_nonfinite='mask'",
    ):
        clean.clean_split(split, "test", on_nonfinite="error")
    split = _split(4)
    split.inputs["b"][1] = np.nan
    split.mask[1, 1] = False  # absent rows may hold anything, even with "error"
    out, counts = clean.clean_split(split, "test", on_nonfinite="error")
    assert counts["nonfinite_masked"] == {"a": 0, "b": 0} and np.isfinite(out.inputs["b"]).all()


def test_empty_splits_and_unlearnable_modalities_are_errors():
    with pytest.raises(ValueError, match=r"the 'validation' split has no rows; each split"):
        clean.clean_split(_split(0), "validation")
    split = _split(3)
    split.mask[:] = False
    with pytest.raises(ValueError, match=r"'test' split has no rows left: all 3 have every"):
        clean.clean_split(split, "test")
    split = _split(4)
    split.inputs["a"][:] = np.inf
    with pytest.raises(ValueError, match=r"modality 'a' is missing in every training row"):
        clean.clean_split(split, "train")
    clean.clean_split(split, "test")  # outside train, a modality may be absent throughout


def test_clean_dataset_adds_to_loader_counts_and_warns_once_per_split(caplog):
    train = _split(8)
    train.inputs["a"][[1, 2]] = np.nan
    train.mask[2, 1] = False
    test = _split(4, 2)
    test.inputs["b"][0, 0, 0] = np.inf
    loader_counts = clean.empty_counts(("a", "b"))
    loader_counts["train"]["nonfinite_masked"]["b"] = 5  # what the loader did itself
    ds = _dataset(train=train, test=test)
    ds.cleaning = loader_counts
    with caplog.at_level(logging.WARNING):
        out = clean.clean_dataset(ds)
    assert out.cleaning == {
        "train": {"nonfinite_masked": {"a": 2, "b": 5}, "dropped_all_missing": 1},
        "validation": {"nonfinite_masked": {"a": 0, "b": 0}, "dropped_all_missing": 0},
        "test": {"nonfinite_masked": {"a": 0, "b": 1}, "dropped_all_missing": 0},
    }
    assert (len(out.train), len(out.validation), len(out.test)) == (7, 4, 4)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2
    assert "train split" in lines[0] and "a in 2 rows, b in 5 rows" in lines[0]
    assert "dropped 1 rows" in lines[0] and "test split" in lines[1]
    assert ds.cleaning is loader_counts and len(ds.train) == 8  # the input is untouched


def test_load_dataset_cleans_every_loader(caplog):
    ds = _dataset()
    ds.train.inputs["b"][3, 1, 1] = np.nan
    register_dataset("_test_clean", lambda cfg: ds, overwrite=True)
    out = load_dataset(types.SimpleNamespace(name="_test_clean"))  # no on_nonfinite: "mask"
    assert out.cleaning["train"]["nonfinite_masked"]["b"] == 1 and not out.train.mask[3, 1]
    with pytest.raises(ValueError, match=r"dataset 'tiny': the 'train' split: modality 'b'"):
        load_dataset(types.SimpleNamespace(name="_test_clean", on_nonfinite="error"))
    with pytest.raises(ValueError, match=r"data.on_nonfinite='skip'; allowed"):
        load_dataset(types.SimpleNamespace(name="_test_clean", on_nonfinite="skip"))
    clean_ds = _dataset()
    register_dataset("_test_clean", lambda cfg: clean_ds, overwrite=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out = load_dataset(types.SimpleNamespace(name="_test_clean", on_nonfinite="error"))
    assert out.train is clean_ds.train and not caplog.records
    assert out.cleaning["test"] == {"nonfinite_masked": {"a": 0, "b": 0}, "dropped_all_missing": 0}


def test_fingerprint_changes_with_every_part():
    ds = _dataset()
    base = fingerprint(ds)
    assert len(base) == 64 and int(base, 16) >= 0
    assert fingerprint(_dataset()) == base  # same content, new arrays

    def changed(edit) -> str:
        other = _dataset()
        edit(other)
        return fingerprint(other)

    def value(d):
        d.validation.inputs["b"][1, 2, 0] += 1e-3

    def label(d):
        d.test.labels[0] = 1 - d.test.labels[0]

    def mask_bit(d):
        d.train.mask[5, 0] = False

    def row_order(d):
        d.train = Split(
            {k: v[::-1] for k, v in d.train.inputs.items()}, d.train.labels[::-1], d.train.mask
        )

    def spec_field(d):
        d.spec = DatasetSpec(**{**d.spec.__dict__, "class_names": ("x", "y")})

    def stats(d):
        d.input_stats = {"a": {"mean": np.zeros(3), "std": np.ones(3)}}

    def dtype(d):  # the same bytes, read as another type
        d.test.labels = d.test.labels.view(np.uint32)

    edits = (value, label, mask_bit, row_order, spec_field, stats, dtype)
    prints = {f.__name__: changed(f) for f in edits}
    assert base not in prints.values() and len(set(prints.values())) == len(prints)


def test_fingerprint_is_fast_on_tens_of_megabytes():
    big = Split.complete(
        {"a": np.ones((400_000, 3), np.float32), "b": np.ones((400_000, 4, 2), np.float32)},
        np.zeros(400_000, np.int32),
    )  # ~19 MB of inputs
    ds = _dataset(train=big)
    start = time.perf_counter()
    fingerprint(ds)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------ evaluation: rows with nothing present


def _predict(params, inputs, mask_BxM):
    """A stand-in model: class 1 iff modality "a" is present and its first value > 0."""
    del params
    score_B = jnp.where(mask_BxM[:, 0], inputs["a"][:, 0], -1.0)
    return jnp.stack([-score_B, score_B], axis=1)


def _predict_many(params, inputs, own_BxM, masks_BxKxM):
    """`_predict` under each of K masks, as `evaluate.make_predict_many_fn`'s function."""
    del own_BxM
    return jax.vmap(lambda m: _predict(params, inputs, m), in_axes=1, out_axes=1)(masks_BxKxM)


def test_evaluation_does_not_score_rows_with_no_modality_present(caplog):
    split = _split(8)
    split.inputs["a"][:, 0] = np.where(split.labels == 1, 1.0, -1.0)  # "a" predicts perfectly
    split.mask[[0, 1, 2], 0] = False  # rows 0-2 lack "a": under subset "a" nothing is present
    split.mask[3, 1] = False
    split.labels[[0, 2]] = 1  # predicting class 0 from nothing would score them wrong
    mesh = parallel.make_mesh()
    kw = dict(batch_size=4, mesh=mesh)
    excluded = {}
    with caplog.at_level(logging.WARNING):
        results = evaluate.evaluate_subsets(
            _predict_many, None, split, tasks.get("multiclass"), excluded_out=excluded, **kw
        )
    assert excluded == {"a": 3, "b": 1}
    assert results["a"]["accuracy"] == 1.0  # rows 3..7 only
    assert results["a+b"]["accuracy"] == pytest.approx(5 / 8)  # every row has a modality
    assert "a: 3 rows" in caplog.text and "b: 1 rows" in caplog.text
    split.mask[:, 1] = False
    split.mask[:3, 0] = True
    results = evaluate.evaluate_subsets(_predict_many, None, split, tasks.get("multiclass"), **kw)
    assert set(results) == {"a", "a+b"}  # no row has "b": its subset is left out
    assert evaluate.validation_score(results, tasks.get("multiclass")) == pytest.approx(
        np.mean([r["accuracy"] for r in results.values()])
    )
