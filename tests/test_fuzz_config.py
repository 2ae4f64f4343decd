"""Property-based tests of config validation (hypothesis): any value, one clear answer.

Starting from configs/synthetic.py (both architectures), one or a few fields are
set to values of every kind (numbers incl. nan, +-inf, negatives and huge ints,
bools, strings, None, lists, dicts). `from_config_dict` must either return a
`Config` whose every field lies in the range written down here, independently
of robult_jax/config.py, or raise a one-line ValueError naming a changed field;
never another exception. The configs are plain dicts (`to_dict()`), since a
ConfigDict's own type checks would refuse most of these values before ours run.
"""

import copy
import dataclasses
import math
import re

import helpers
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from robult_jax import config as config_lib
from robult_jax import encoders, losses, objective

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)
INT_LIMIT, FLOAT_MAX = 2**31, float(np.finfo(np.float32).max)

# The allowed values of every numeric field: integers >= lo (and < 2**31) ...
INTS = {
    "seed": 0,
    "sampling.label_seed": 0,
    "sampling.labeled_batch": 1,
    "sampling.unlabeled_batch": 1,
    "model.latent_dim": 1,
    "model.hidden_dim": 1,
    "model.num_heads": 1,
    "model.seq_layers": 1,
    "model.seq_width": 0,
    "model.unique_dim": 1,
    "model.proj_dim": 1,
    "optim.warmup_steps": 0,
    "train.num_steps": 0,
    "train.log_every": 1,
    "train.eval_every": 1,
    "train.checkpoint_every": 1,
    "train.keep_checkpoints": 1,
    "eval.batch_size": 1,
    "train.prefetch": 0,
    "train.profile_steps": 0,
    "train.profile_start": 0,
    "parallel.shard_min_size": 1,
}
# ... and finite float32 numbers in an interval: (lo, hi, lo_open, hi_open).
_UNIT, _NONNEG, _POS = (0, 1, False, True), (0, math.inf, False, True), (0, math.inf, True, True)
FLOATS = {
    "sampling.label_rate": (0, 1, True, False),
    "sampling.modality_dropout": _UNIT,
    "model.dropout_rate": _UNIT,
    "loss.w_sup": _POS,
    "loss.w_lb": _NONNEG,
    "loss.w_ulb": _NONNEG,
    "loss.w_rec": _NONNEG,
    "loss.w_uni": _NONNEG,
    "loss.temperature": (1e-3, math.inf, False, True),
    "loss.sigma": (1e-6, math.inf, False, True),
    "loss.label_sigma": (1e-6, math.inf, False, True),
    "loss.threshold": _UNIT,
    "loss.centroid_decay": _UNIT,
    "optim.learning_rate": (0, 1, True, False),
    "optim.weight_decay": (0, 1, False, False),
    "optim.grad_clip_norm": _POS,
}
OTHERS = [  # the fields that are not one number
    "method", "model.architecture", "model.fusion_stems", "model.combine", "model.fusion",
    "model.encoders", "model.cnn1d_features", "model.cnn2d_features", "loss.pu_mode",
    "loss.rec_target", "loss.rec_stop_gradient", "train.progress_bar", "train.tensorboard",
    "eval.split", "model.compute_dtype", "parallel.form", "parallel.shard_params",
    "sampling.modality_dropout_rates", "eval.missing_rates", "eval.mask_seeds",
    "eval.per_modality_rates",
]  # fmt: skip
FIELDS = sorted([*INTS, *FLOATS, *OTHERS])

# The allowed names of the choice fields and encoders, and strings that are none of them.
NAMES = [*config_lib.ARCHITECTURES, *config_lib.FUSION_STEMS, *config_lib.COMBINES,
         *config_lib.FUSIONS, *config_lib.REC_TARGETS, *config_lib.EVAL_SPLITS,
         *config_lib.COMPUTE_DTYPES, *config_lib.PARALLEL_FORMS,
         *losses.PU_MODES, *encoders.ENCODER_NAMES, "", "x", "1"]  # fmt: skip
SPECIAL = [math.nan, math.inf, -math.inf, 0, 0.0, -0.0, 1, 1.0, 0.999999, 1e-7, 1e-20,
           1e-50, 3.0, 2**31 - 1, 2**31, -(2**31), 2**32, 1e39, 10**400, True, None]  # fmt: skip
_scalars = st.one_of(
    st.integers(),  # unbounded: also ints too large for a float
    st.integers(-3, 70),
    st.floats(),  # nan, +-inf, subnormals and huge values included
    st.floats(-2, 2),
    st.sampled_from(SPECIAL),
    st.sampled_from(NAMES),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
)
VALUES = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=3),
    st.lists(st.floats(0, 0.99), max_size=3),  # valid rates
    st.lists(st.integers(0, 64), min_size=1, max_size=3).map(tuple),  # valid widths and seeds
    st.lists(st.lists(st.floats(0, 1), max_size=2).map(tuple), max_size=2),  # rate patterns
    st.dictionaries(st.text(max_size=2) | st.integers(0, 2), st.sampled_from(NAMES), max_size=2),
)
_BASE = {a: helpers.raw_config(a).to_dict() for a in config_lib.ARCHITECTURES}


def _set(config: dict, path: str, value) -> None:
    *groups, leaf = path.split(".")
    for g in groups:
        config = config[g]
    config[leaf] = value


def _get(config: config_lib.Config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _f32(x: float) -> float:  # what JAX computes with
    return float(np.float32(x))


def _in(x, lo, hi, lo_open, hi_open) -> bool:
    return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)


def check_ranges(typed: config_lib.Config) -> None:
    """Every field of a validated config is what the tables above allow."""
    paper = typed.model.architecture == "paper"
    other = config_lib.ARCHITECTURE_FIELDS["fused" if paper else "paper"]
    for path, lo in INTS.items():
        v = _get(typed, path)
        if path in other:
            assert v is None, path
        else:
            assert type(v) is int and lo <= v < INT_LIMIT, (path, v)
    for path, span in FLOATS.items():
        v = _get(typed, path)
        if path in other:
            assert v is None, path
        else:
            assert type(v) is float and math.isfinite(v) and abs(v) <= FLOAT_MAX, (path, v)
            assert _in(v, *span) and _in(*map(_f32, (v, *span[:2])), *span[2:]), (path, v)
    for path in ("sampling.modality_dropout_rates", "eval.missing_rates"):
        assert all(type(r) is float and 0 <= r < 1 for r in _get(typed, path)), path
    assert all(type(r) is float and 0 <= r < 1 for p in typed.eval.per_modality_rates for r in p)
    for path, lo in [
        ("model.cnn1d_features", 1),
        ("model.cnn2d_features", 1),
        ("eval.mask_seeds", 0),
    ]:
        v = _get(typed, path)
        assert v and all(type(x) is int and lo <= x < INT_LIMIT for x in v), (path, v)
    assert all(e in encoders.ENCODER_NAMES for _, e in typed.model.encoders)
    assert isinstance(typed.method, str) and typed.method
    assert type(typed.loss.rec_stop_gradient) is bool and type(typed.train.progress_bar) is bool


def validate(architecture: str, changes: dict):
    """(Config, None) or (None, ValueError) for the synthetic config with `changes`."""
    config = copy.deepcopy(_BASE[architecture])
    for path, value in changes.items():
        _set(config, path, value)
    try:
        return config_lib.from_config_dict(config), None
    except ValueError as e:
        return None, e


def names_a_field(message: str, paths) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(p)}(?![\w])", message) for p in paths)


def test_the_tables_cover_every_field():
    groups = config_lib._GROUPS.items()
    fields = {f"{group}.{f.name}" for group, cls in groups for f in dataclasses.fields(cls)}
    assert fields | {"seed", "method"} == set(FIELDS) and len(FIELDS) == len(set(FIELDS))
    for a in config_lib.ARCHITECTURES:  # the base configs pass the tables' own check
        check_ranges(config_lib.from_config_dict(_BASE[a]))


@FUZZ
@given(st.sampled_from(config_lib.ARCHITECTURES), st.sampled_from(FIELDS), VALUES)
def test_one_field_any_value_is_valid_or_one_clear_message(architecture, path, value):
    typed, error = validate(architecture, {path: value})
    event("accepted" if error is None else "rejected")  # --hypothesis-show-statistics
    if error is None:
        check_ranges(typed)
        got = _get(typed, path)
        if path in INTS or path in FLOATS:
            assert got == value or (got is None and value is None), (path, value, got)
    else:
        message = str(error)
        assert "\n" not in message and len(message) < 600, message
        assert names_a_field(message, [path]), (path, value, message)


@settings(FUZZ, max_examples=150)
@given(
    st.sampled_from(config_lib.ARCHITECTURES),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=2, max_size=4),
)
def test_a_few_fields_at_once_name_one_of_them(architecture, changes):
    typed, error = validate(architecture, changes)
    if error is None:
        check_ranges(typed)
    else:
        assert "\n" not in str(error) and names_a_field(str(error), changes), (changes, error)


# ----------------------------------------------------------------------------- each new range


HUGE = pytest.param(10**400, id="10**400")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e39, -1e39, HUGE])
@pytest.mark.parametrize("path", sorted(FLOATS))
def test_every_float_field_rejects_non_finite(path, value):
    typed, error = validate("paper", {path: value})  # every float field is the paper's
    assert error is not None, typed
    assert re.match(rf"{re.escape(path)}=.* must be a finite number", str(error)), str(error)


@pytest.mark.parametrize(
    "value,message",
    [(INT_LIMIT, "must fit in int32"), (-INT_LIMIT, "must fit in int32"),
     pytest.param(10**400, "must fit in int32", id="10**400"), (3.0, "must be an integer"),
     (True, "must be an integer"), (math.nan, "must be an integer"), ("3", "must be an integer")],
)  # fmt: skip
@pytest.mark.parametrize("path", sorted(INTS))
def test_every_int_field_rejects_floats_bools_and_int32_overflow(path, value, message):
    architecture = "fused" if path in config_lib.ARCHITECTURE_FIELDS["fused"] else "paper"
    typed, error = validate(architecture, {path: value})
    assert error is not None and str(error).startswith(f"{path}=") and message in str(error)


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("seed", 2**32, r"seed=4294967296 must fit in int32"),  # jax.random.key(2**32) == key(0)
        ("train.num_steps", 2**31, "train.num_steps=2147483648 must fit in int32"),
        ("optim.learning_rate", 2.0, r"optim.learning_rate=2.0 is outside \(0, 1\]"),
        ("optim.weight_decay", 1.5, r"optim.weight_decay=1.5 is outside \[0, 1\]"),
        ("loss.sigma", 1e-20, r"loss.sigma=1e-20 is outside \[1e-06, inf\]"),  # 0/0 = nan weights
        ("loss.label_sigma", 0.0, r"loss.label_sigma=0.0 is outside \[1e-06, inf\]"),
        ("eval.mask_seeds", (0, 2**31), r"eval.mask_seeds=.* seeds in \[0, 2\*\*31\)"),
        ("model.cnn1d_features", [8, 2**40], r"model.cnn1d_features=.* in \[1, 2\*\*31\)"),
        pytest.param(  # repr() refuses ints of more than 4300 digits
            "loss.w_lb", 10**5000, "loss.w_lb=<a huge int> must be a finite", id="10**5000"
        ),
        ("loss.w_sup", 1e-50, r"loss.w_sup=1e-50 is 0.0 in float32, outside \(0, inf\]"),
        ("optim.learning_rate", 1e-300, r"optim.learning_rate=1e-300 is 0.0 in float32"),
        ("model.dropout_rate", 0.99999999, r"model.dropout_rate=0.99999999 is 1.0 in float32"),
        ("method", None, "method=None must be a non-empty string"),
        ("method", "", "method='' must be a non-empty string"),
        ("model.encoders", 5, r"model.encoders=5 must be a group of fields"),
        ("model.encoders", "ab", r"model.encoders='ab' must be a group of fields"),
        ("model.encoders", {1: "mlp"}, r"model.encoders=\{1: 'mlp'\} must map modality names"),
        ("model.architecture", ["paper"], r"model.architecture=\['paper'\] is not one of"),
        ("loss", 5, "loss=5 must be a group of fields"),
        ("eval.missing_rates", [0.1, math.nan], "eval.missing_rates=.* rates in \\[0, 1\\)"),
    ],
)
def test_new_ranges_are_one_clear_message(path, value, message):
    typed, error = validate("paper", {path: value})
    assert error is not None, typed
    assert re.match(message, str(error)) and "\n" not in str(error), str(error)


@pytest.mark.parametrize(
    "changes",
    [
        {"optim.learning_rate": 1.0, "optim.weight_decay": 1.0},  # the upper ends are allowed
        {"loss.sigma": 1e-6, "loss.label_sigma": 1e-6},
        {"loss.w_lb": 0.0, "loss.w_ulb": 0.0, "loss.w_rec": 0.0},  # supervised-only ablation
        {"seed": INT_LIMIT - 1, "eval.mask_seeds": (INT_LIMIT - 1,)},
        {"loss.w_sup": FLOAT_MAX, "optim.grad_clip_norm": 1e30},
        {"train.num_steps": 0},
    ],
)
def test_edges_of_the_ranges_are_accepted(changes):
    typed, error = validate("paper", changes)
    assert error is None, error
    check_ranges(typed)


def test_a_warmup_longer_than_the_run_is_accepted_and_shortened():
    # Not an error, by design: a short run of any config overrides only train.num_steps;
    # objective.make_schedule ends the warm-up before the last step, which gets the peak rate.
    typed, error = validate("paper", {"optim.warmup_steps": 50, "train.num_steps": 4})
    assert error is None, error
    schedule = objective.make_schedule(typed.optim, typed.train.num_steps)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(3)), typed.optim.learning_rate, rtol=1e-6)


def test_a_configdict_gives_the_same_answers():
    # The command line's path: ml_collections types first, then these checks.
    config = helpers.raw_config()
    config.loss.sigma = math.nan
    with pytest.raises(ValueError, match="loss.sigma=nan must be a finite number"):
        config_lib.from_config_dict(config)
