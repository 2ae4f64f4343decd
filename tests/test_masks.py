"""Tests for robult_jax.masks: subsets, random masks, hashes, mask files."""

import os

import numpy as np
import pytest

from robult_jax import masks


@pytest.mark.parametrize("m", [2, 3, 6])
def test_all_subsets_count_unique_nonempty(m):
    s = masks.all_subsets(m)
    assert s.shape == (2**m - 1, m) and s.dtype == np.bool_
    assert s.any(axis=1).all()
    assert len({row.tobytes() for row in s}) == 2**m - 1
    sizes = s.sum(axis=1)
    assert (np.diff(sizes) >= 0).all()  # ordered by size
    assert s[-1].all()


def test_all_subsets_order_m3():
    expected = [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [1, 1, 1],
    ]
    assert masks.all_subsets(3).astype(int).tolist() == expected


def test_all_subsets_m6_singletons_first():
    s = masks.all_subsets(6)
    np.testing.assert_array_equal(s[:6], np.eye(6, dtype=bool))
    np.testing.assert_array_equal(s[6], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(s[20], [0, 0, 0, 0, 1, 1])  # last pair
    np.testing.assert_array_equal(s[21], [1, 1, 1, 0, 0, 0])  # first triple


@pytest.mark.parametrize("m", [0, -1, 2.0])
def test_all_subsets_bad_m(m):
    with pytest.raises(ValueError, match="m must be"):
        masks.all_subsets(m)


def test_subset_name():
    names = ("acc", "gyro", "mag")
    assert masks.subset_name(np.array([True, True, False]), names) == "acc+gyro"
    assert masks.subset_name([False, False, True], names) == "mag"
    with pytest.raises(ValueError, match="non-empty"):
        masks.subset_name([False, False, False], names)
    with pytest.raises(ValueError, match="modality names"):
        masks.subset_name([True, False], names)


@pytest.mark.parametrize("m", [2, 3, 6])
def test_random_missing_never_all_absent(m):
    mask = masks.random_missing(5000, m, 0.9, seed=0)
    assert mask.shape == (5000, m) and mask.dtype == np.bool_
    assert mask.any(axis=1).all()
    assert not mask.all()  # rate 0.9 does remove modalities


def test_random_missing_rate_zero_keeps_all():
    assert masks.random_missing(100, 3, 0.0, seed=1).all()


@pytest.mark.parametrize("m,rate", [(2, 0.3), (6, 0.5), (2, 0.9)])
def test_random_missing_empirical_rate(m, rate):
    n = 20000
    mask = masks.random_missing(n, m, rate, seed=3)
    # Expected absent fraction: rate minus the rows rescued by the keep-one rule.
    expected = rate - rate**m / m
    assert abs((~mask).mean() - expected) < 0.01


def test_random_missing_seeded():
    a = masks.random_missing(200, 3, 0.4, seed=7)
    np.testing.assert_array_equal(a, masks.random_missing(200, 3, 0.4, seed=7))
    assert not np.array_equal(a, masks.random_missing(200, 3, 0.4, seed=8))


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan")])
def test_random_missing_bad_rate(rate):
    with pytest.raises(ValueError, match=r"eval\.missing_rates"):
        masks.random_missing(10, 2, rate, seed=0)


def test_per_modality_missing():
    n = 20000
    mask = masks.per_modality_missing(n, [0.0, 0.5, 0.9], seed=0)
    assert mask.any(axis=1).all()
    assert mask[:, 0].all()
    assert abs((~mask[:, 1]).mean() - 0.5) < 0.015
    assert abs((~mask[:, 2]).mean() - 0.9) < 0.015
    np.testing.assert_array_equal(mask, masks.per_modality_missing(n, [0.0, 0.5, 0.9], seed=0))
    # All-high rates: the keep-one rule still holds.
    assert masks.per_modality_missing(1000, [0.99, 0.99], seed=1).any(axis=1).all()
    with pytest.raises(ValueError, match=r"rates_M\[1\]"):
        masks.per_modality_missing(10, [0.1, 1.0], seed=0)


def test_mask_hash_stable_and_sensitive():
    mask = masks.random_missing(37, 3, 0.5, seed=0)
    h = masks.mask_hash(mask)
    assert len(h) == 16 and int(h, 16) >= 0
    assert masks.mask_hash(mask.copy()) == h
    for i, j in [(0, 0), (36, 2), (17, 1)]:
        flipped = mask.copy()
        flipped[i, j] = ~flipped[i, j]
        assert masks.mask_hash(flipped) != h
    # Same bits, different shape: must differ (packbits pads to bytes).
    flat = np.ones((8, 1), dtype=bool)
    assert masks.mask_hash(flat) != masks.mask_hash(flat.reshape(2, 4))
    with pytest.raises(ValueError, match="dtype bool"):
        masks.mask_hash(mask.astype(int))


def test_save_load_round_trip(tmp_path):
    proto = {f"rate=0.5/seed={k}": masks.random_missing(20, 3, 0.5, k) for k in (0, 1)}
    proto["subsets"] = masks.all_subsets(3)
    path = tmp_path / "masks.npz"
    masks.save_masks(path, proto, {"dataset": "toy", "n": 20})
    loaded, meta = masks.load_masks(path)
    assert meta == {"dataset": "toy", "n": 20}
    assert list(loaded) == list(proto)
    for name in proto:
        np.testing.assert_array_equal(loaded[name], proto[name])
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_load_detects_tampered_mask(tmp_path):
    path = tmp_path / "masks.npz"
    original = {"a": masks.random_missing(30, 2, 0.5, seed=0)}
    masks.save_masks(path, original, {})
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["mask_000"] = arrays["mask_000"].copy()
    arrays["mask_000"][0] = ~arrays["mask_000"][0]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"masks\.npz.*hash"):
        masks.load_masks(path)


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "broken.npz"
    masks.save_masks(path, {"a": np.ones((4, 2), dtype=bool)}, {})
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(ValueError, match="broken.npz"):
        masks.load_masks(path)


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2-D bool"):
        masks.save_masks(tmp_path / "x.npz", {"a": np.ones((3, 2))}, {})
    with pytest.raises(ValueError, match="JSON"):
        masks.save_masks(tmp_path / "x.npz", {"a": np.ones((3, 2), bool)}, {"x": object()})
    assert not (tmp_path / "x.npz").exists()
