"""Missing-modality protocols as data: subsets, random masks, hashes, files.

Every evaluation condition of docs/method.md section 5 is a presence mask
`mask_NxM` (bool, True = present). This module builds those masks with pure
numpy from explicit seeds, names them, hashes them (so a results file can say
exactly which masks produced its numbers) and stores them in a single `.npz`.

Shape legend: N samples, M modalities, S subsets (2**M - 1).

    >>> all_subsets(2).astype(int).tolist()
    [[1, 0], [0, 1], [1, 1]]
    >>> subset_name(all_subsets(2)[2], ("acc", "gyro"))
    'acc+gyro'
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robult_jax import files
from robult_jax.files import atomic_write

# Why a cap: 2**M - 1 subsets are evaluated one by one; beyond this the
# protocol is no longer an exhaustive sweep anyone would run.
_MAX_SUBSET_MODALITIES = 16
_META_KEY = "__meta__"
_FORMAT_VERSION = 1


def _check_rate(rate: float, field: str) -> float:
    r = float(rate)
    if not math.isfinite(r) or not 0.0 <= r < 1.0:
        raise ValueError(f"{field} must be in [0, 1) (at least one modality is kept), got {rate!r}")
    return r


def all_subsets(m: int) -> np.ndarray:
    """Every non-empty subset of `m` modalities as a `(2**m - 1, m)` bool array.

    Ordered by subset size, then lexicographically by the indices of the
    present modalities (the order of `itertools.combinations`), so row 0..m-1
    are the single modalities and the last row is the full set.
    """
    if not isinstance(m, int | np.integer) or not 1 <= m <= _MAX_SUBSET_MODALITIES:
        raise ValueError(f"m must be an integer in [1, {_MAX_SUBSET_MODALITIES}], got {m!r}")
    rows = []
    for size in range(1, m + 1):
        for idx in itertools.combinations(range(m), size):
            row = np.zeros(m, dtype=bool)
            row[list(idx)] = True
            rows.append(row)
    return np.stack(rows)


def subset_name(row: np.ndarray | Sequence[bool], names: Sequence[str]) -> str:
    """`"acc+gyro"`: the names of the present modalities in `row`, joined by '+'."""
    row = np.asarray(row)
    if row.shape != (len(names),):
        raise ValueError(f"row has shape {row.shape} but there are {len(names)} modality names")
    present = [name for name, keep in zip(names, row.astype(bool), strict=True) if keep]
    if not present:
        raise ValueError("row has no present modality; subsets must be non-empty")
    return "+".join(present)


def _draw_missing(n: int, rates_M: Sequence[float], seed: int) -> np.ndarray:
    """Modality j of each sample absent with probability `rates_M[j]`, one kept per row."""
    rng = np.random.default_rng(seed)
    m = len(rates_M)
    mask_NxM = rng.random((n, m)) >= np.asarray(rates_M)
    # Why draw for every row (not only the empty ones): the random stream then
    # does not depend on which rows happened to be empty, so masks for the
    # same seed at different rates share their random numbers.
    keep_N = rng.integers(0, m, size=n)
    empty_N = ~mask_NxM.any(axis=1)
    mask_NxM[empty_N, keep_N[empty_N]] = True
    return mask_NxM


def random_missing(n: int, m: int, rate: float, seed: int) -> np.ndarray:
    """Per-sample MCAR presence mask `(n, m)` bool; at least one modality per row.

    Each modality of each sample is absent independently with probability
    `rate`; a row that would lose every modality keeps one, chosen uniformly.
    The realised missing rate is therefore `rate - rate**m / m` in
    expectation (slightly below `rate` for large rates and small m).

    Uses common random numbers: for one seed, the uniform draws are the same
    at every rate, so curves over rates are not noisier than they need to be.
    """
    return _draw_missing(n, [_check_rate(rate, "eval.missing_rates")] * m, seed)


def per_modality_missing(n: int, rates_M: Sequence[float], seed: int) -> np.ndarray:
    """Like `random_missing` but modality i is absent with probability `rates_M[i]`."""
    return _draw_missing(n, [_check_rate(r, f"rates_M[{i}]") for i, r in enumerate(rates_M)], seed)


def mask_hash(mask: np.ndarray) -> str:
    """First 16 hex digits of sha256 over the shape and the packed bits of `mask`.

    The shape is part of the digest because `np.packbits` pads to whole bytes,
    so two masks of different shapes could otherwise pack to equal bytes.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must have dtype bool, got {mask.dtype}")
    digest = hashlib.sha256()
    digest.update(repr(tuple(int(d) for d in mask.shape)).encode())
    digest.update(np.packbits(np.ascontiguousarray(mask), axis=None).tobytes())
    return digest.hexdigest()[:16]


def save_masks(
    path: str | os.PathLike, masks: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Save named bool masks plus a JSON-able `meta` dict into one `.npz` (atomically).

    Arrays are stored under neutral keys (`mask_000`, ...) because mask names
    such as "rate=0.3/seed=1" contain characters that zip member names mangle;
    names, shapes and hashes live in a JSON string under `__meta__`.
    """
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i, (name, mask) in enumerate(masks.items()):
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.ndim != 2:
            raise ValueError(
                f"mask {name!r} must be a 2-D bool array, got {mask.dtype} {mask.shape}"
            )
        key = f"mask_{i:03d}"
        arrays[key] = mask
        entries.append(
            {"name": name, "key": key, "shape": list(mask.shape), "hash": mask_hash(mask)}
        )
    try:
        meta_json = json.dumps(
            {"format": _FORMAT_VERSION, "meta": dict(meta), "masks": entries}, sort_keys=True
        )
    except TypeError as e:
        raise ValueError(f"meta must be JSON-serialisable: {e}") from e
    arrays[_META_KEY] = np.array(meta_json)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def load_masks(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load `(masks, meta)` written by `save_masks`, verifying every stored hash.

    Raises ValueError naming the file if it is unreadable, incomplete, or if a
    mask no longer matches the hash recorded when it was saved.
    """
    try:
        raw = io.BytesIO(files.as_path(path).read_bytes())
        with np.load(raw, allow_pickle=False) as data:
            header = json.loads(str(data[_META_KEY][()]))
            masks = {}
            for entry in header["masks"]:
                # The hash covers the shape, and mask_hash rejects a non-bool dtype.
                mask = np.asarray(data[entry["key"]])
                if mask_hash(mask) != entry["hash"]:
                    raise ValueError(
                        f"mask {entry['name']!r} hash {mask_hash(mask)} != stored {entry['hash']}"
                    )
                masks[entry["name"]] = mask
            meta = header["meta"]
    except FileNotFoundError:
        raise
    except Exception as e:  # a damaged zip can fail in many library-specific ways
        raise ValueError(f"corrupt or mismatched mask file {os.fspath(path)!r}: {e}") from e
    return masks, meta
