"""The checks of config values: each takes (where, value), returns the value typed, or
raises one ValueError that names the field, shows the value and says what is allowed.

`robult_jax.config` attaches one to every field of its typed groups. Numbers
go to JAX as int32 or float32, so integers must fit in int32 and floats must
stay finite and inside their interval once rounded to float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from robult_jax import encoders


def fail(where: str, value: Any, requirement: str):
    try:
        shown = repr(value)
    except ValueError:  # an int of more than 4300 digits
        shown = "<a huge int>"
    shown = shown if len(shown) <= 100 else shown[:96] + " ..."  # one line, still
    raise ValueError(f"{where}={shown} {requirement}.")


# Every number goes to JAX as an int32 (steps, sizes, seeds) or a float32: larger
# ints wrap or lose bits (jax.random.key(2**32) is key(0)), larger floats are inf.
INT_LIMIT = 2**31
FLOAT_MAX = float(np.finfo(np.float32).max)


def finite(v: int | float) -> bool:
    """Whether v is a number that float32 holds (nan, +-inf and |v| > 3.4e38 are not)."""
    try:
        return math.isfinite(v) and abs(float(v)) <= FLOAT_MAX
    except OverflowError:  # an int too large for a float
        return False


def number(lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False):
    """A check of one number in an interval; `(` / `)` mark open ends in the message.

    nan compares False with every bound, so non-finite values are rejected first. A
    float must stay inside once it and the bounds are rounded to float32 (1e-50 is 0).
    """
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"

    def outside(x, lo=lo, hi=hi) -> bool:
        below = lo is not None and (x <= lo if lo_open else x < lo)
        return below or (hi is not None and (x >= hi if hi_open else x > hi))

    f32 = lambda x: None if x is None else float(np.float32(x))

    def check(where: str, v: Any):
        if isinstance(v, bool) or not isinstance(v, int if integer else int | float):
            fail(where, v, f"must be {'an integer' if integer else 'a number'}")
        if integer and not -INT_LIMIT < v < INT_LIMIT:
            fail(where, v, "must fit in int32 (|x| < 2**31), the integers JAX computes with")
        if not integer and not finite(v):
            fail(where, v, "must be a finite number (float32: |x| <= 3.4e38)")
        if outside(v):
            fail(where, v, f"is outside {span}")
        if not integer and outside(x32 := f32(v), f32(lo), f32(hi)):
            fail(where, v, f"is {x32} in float32, outside {span}")
        return int(v) if integer else float(v)

    return check


def integer(lo: int):  # an integer >= lo
    return number(lo=lo, integer=True)


def choice(allowed: tuple[str, ...]):
    def check(where: str, v: Any) -> str:
        if not isinstance(v, str) or v not in allowed:
            fail(where, v, f"is not one of {', '.join(allowed)}")
        return v

    return check


def flag(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        fail(where, v, "must be True or False")
    return v


def sequence(item, requirement: str, *, non_empty: bool = False, cast=int):
    """A check of a list/tuple whose items pass `item(x) -> bool`; returns a tuple of `cast`."""

    def check(where: str, v: Any) -> tuple:
        ok = isinstance(v, list | tuple) and (v or not non_empty)
        if not ok or not all(not isinstance(x, bool) and item(x) for x in v):
            fail(where, v, requirement)
        return tuple(map(cast, v))

    return check


rates = sequence(
    lambda r: isinstance(r, int | float) and 0 <= r < 1,
    "must be a sequence of rates in [0, 1) (one modality is always kept)",
    cast=float,
)


def rate_patterns(where: str, v: Any) -> tuple[tuple[float, ...], ...]:
    if not isinstance(v, list | tuple):
        fail(where, v, "must be a sequence of per-modality rate tuples")
    return tuple(rates(f"{where} entry", p) for p in v)


def encoder_table(where: str, v: Any) -> tuple[tuple[str, str], ...]:
    pairs = as_dict(v, where)
    if not all(isinstance(name, str) for name in pairs):
        fail(where, v, "must map modality names (strings) to encoder names")
    for name, encoder in pairs.items():
        choice(encoders.encoder_names())(f"{where}[{name!r}]", encoder)
    return tuple(sorted(pairs.items()))


widths = sequence(
    lambda x: isinstance(x, int) and 1 <= x < INT_LIMIT,
    "must be a non-empty sequence of integers in [1, 2**31)",
    non_empty=True,
)
UNIT = dict(lo=0, hi=1, hi_open=True)  # [0, 1)
POSITIVE = dict(lo=0, lo_open=True)  # (0, inf]
seeds = sequence(
    lambda x: isinstance(x, int) and 0 <= x < INT_LIMIT,
    "must be a non-empty sequence of seeds in [0, 2**31)",
    non_empty=True,
)


def as_dict(value: Any, where: str = "the config") -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if not isinstance(value, Mapping):
        fail(where, value, "must be a group of fields (a ConfigDict or dict)")
    return dict(value)
