"""Typed, frozen config groups, built once from the ml_collections config and validated once.

`from_config_dict(config)` turns a config of configs/ (after its command-line
overrides) into a `Config` of frozen dataclasses, or raises one ValueError
naming the field and its allowed values. Everything downstream trusts it:
library functions keep only their static shape checks. Defaults live in the
config files only. Fields of one architecture (`ARCHITECTURE_FIELDS`) are None
in configs of the other, and setting them there is an error, not ignored.
`config.data` stays an ml_collections group, checked by the dataset's loader.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from robult_jax import encoders, losses

ARCHITECTURES = ("paper", "fused")
FUSION_STEMS = ("own", "shared")  # paper: f_0's per-modality stems
COMBINES = ("mean_probs", "mean_latent")  # paper: how present modalities' predictions combine
FUSIONS = ("attention", "mean")  # fused: f_0 over the present h_i
REC_TARGETS = ("h_i", "h_0")  # paper: what u_i + z_i reconstructs
EVAL_SPLITS = ("test", "validation")
COMPUTE_DTYPES = ("float32", "bfloat16")  # parameters, optimizer state and losses stay float32
PARALLEL_FORMS = ("jit", "shard_map")  # how the step is spread over the data axis

# Fields that only one architecture reads; the other architecture's configs set them to None.
ARCHITECTURE_FIELDS = {
    "paper": ("model.fusion_stems", "model.combine", "loss.w_uni", "loss.rec_target"),
    "fused": ("model.fusion", "model.unique_dim", "model.proj_dim"),
}


def _fail(where: str, value: Any, requirement: str):
    try:
        shown = repr(value)
    except ValueError:  # an int of more than 4300 digits
        shown = "<a huge int>"
    shown = shown if len(shown) <= 100 else shown[:96] + " ..."  # one line, still
    raise ValueError(f"{where}={shown} {requirement}.")


# Every number goes to JAX as an int32 (steps, sizes, seeds) or a float32: larger
# ints wrap or lose bits (jax.random.key(2**32) is key(0)), larger floats are inf.
_INT_LIMIT = 2**31
_FLOAT_MAX = float(np.finfo(np.float32).max)


def _finite(v: int | float) -> bool:
    """Whether v is a number that float32 holds (nan, +-inf and |v| > 3.4e38 are not)."""
    try:
        return math.isfinite(v) and abs(float(v)) <= _FLOAT_MAX
    except OverflowError:  # an int too large for a float
        return False


def _number(lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False):
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
            _fail(where, v, f"must be {'an integer' if integer else 'a number'}")
        if integer and not -_INT_LIMIT < v < _INT_LIMIT:
            _fail(where, v, "must fit in int32 (|x| < 2**31), the integers JAX computes with")
        if not integer and not _finite(v):
            _fail(where, v, "must be a finite number (float32: |x| <= 3.4e38)")
        if outside(v):
            _fail(where, v, f"is outside {span}")
        if not integer and outside(x32 := f32(v), f32(lo), f32(hi)):
            _fail(where, v, f"is {x32} in float32, outside {span}")
        return int(v) if integer else float(v)

    return check


def _integer(lo: int):  # an integer >= lo
    return _number(lo=lo, integer=True)


def _choice(allowed: tuple[str, ...]):
    def check(where: str, v: Any) -> str:
        if not isinstance(v, str) or v not in allowed:
            _fail(where, v, f"is not one of {', '.join(allowed)}")
        return v

    return check


def _flag(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        _fail(where, v, "must be True or False")
    return v


def _sequence(item, requirement: str, *, non_empty: bool = False, cast=int):
    """A check of a list/tuple whose items pass `item(x) -> bool`; returns a tuple of `cast`."""

    def check(where: str, v: Any) -> tuple:
        ok = isinstance(v, list | tuple) and (v or not non_empty)
        if not ok or not all(not isinstance(x, bool) and item(x) for x in v):
            _fail(where, v, requirement)
        return tuple(map(cast, v))

    return check


_rates = _sequence(
    lambda r: isinstance(r, int | float) and 0 <= r < 1,
    "must be a sequence of rates in [0, 1) (one modality is always kept)",
    cast=float,
)


def _rate_patterns(where: str, v: Any) -> tuple[tuple[float, ...], ...]:
    if not isinstance(v, list | tuple):
        _fail(where, v, "must be a sequence of per-modality rate tuples")
    return tuple(_rates(f"{where} entry", p) for p in v)


def _encoders(where: str, v: Any) -> tuple[tuple[str, str], ...]:
    pairs = _as_dict(v, where)
    if not all(isinstance(name, str) for name in pairs):
        _fail(where, v, "must map modality names (strings) to encoder names")
    for name, encoder in pairs.items():
        _choice(encoders.encoder_names())(f"{where}[{name!r}]", encoder)
    return tuple(sorted(pairs.items()))


_widths = _sequence(
    lambda x: isinstance(x, int) and 1 <= x < _INT_LIMIT,
    "must be a non-empty sequence of integers in [1, 2**31)",
    non_empty=True,
)
_UNIT = dict(lo=0, hi=1, hi_open=True)  # [0, 1)
_POSITIVE = dict(lo=0, lo_open=True)  # (0, inf]
_seeds = _sequence(
    lambda x: isinstance(x, int) and 0 <= x < _INT_LIMIT,
    "must be a non-empty sequence of seeds in [0, 2**31)",
    non_empty=True,
)


def _checked(check) -> Any:
    """A dataclass field (no default) with the check that `from_config_dict` applies to it."""
    return dataclasses.field(metadata={"check": check})


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    # fraction of training rows whose label is used, in (0, 1]
    label_rate: float = _checked(_number(lo=0, hi=1, lo_open=True))
    label_seed: int = _checked(_integer(0))
    labeled_batch: int = _checked(_integer(1))  # global rows per step
    unlabeled_batch: int = _checked(_integer(1))
    # train-time P(drop) per modality, never all
    modality_dropout: float = _checked(_number(**_UNIT))
    # per modality; () = modality_dropout for all
    modality_dropout_rates: tuple[float, ...] = _checked(_rates)

    def dropout(self) -> float | tuple[float, ...]:
        return self.modality_dropout_rates or self.modality_dropout


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    architecture: str = _checked(_choice(ARCHITECTURES))
    latent_dim: int = _checked(_integer(1))  # D
    hidden_dim: int = _checked(_integer(1))
    dropout_rate: float = _checked(_number(**_UNIT))
    num_heads: int = _checked(_integer(1))
    # (modality, encoder) pairs; hashable for linen
    encoders: tuple[tuple[str, str], ...] = _checked(_encoders)
    cnn1d_features: tuple[int, ...] = _checked(_widths)
    cnn2d_features: tuple[int, ...] = _checked(_widths)
    seq_layers: int = _checked(_integer(1))
    seq_width: int = _checked(_integer(0))  # 0 = latent_dim
    fusion_stems: str | None = _checked(_choice(FUSION_STEMS))  # paper only
    combine: str | None = _checked(_choice(COMBINES))  # paper only
    fusion: str | None = _checked(_choice(FUSIONS))  # fused only
    unique_dim: int | None = _checked(_integer(1))  # fused only (K)
    proj_dim: int | None = _checked(_integer(1))  # fused only (P)
    compute_dtype: str = _checked(_choice(COMPUTE_DTYPES))  # of activations and matmuls

    @property
    def embed_dim(self) -> int:
        """P: width of the unit-sphere embeddings s and z_i (paper: g_0's output, D)."""
        return self.latent_dim if self.architecture == "paper" else self.proj_dim

    def encoder_for(self, modality) -> str:
        """The encoder of a `ModalitySpec`: named in `encoders`, else the default of its kind."""
        return (
            dict(self.encoders).get(modality.name)
            or encoders.DEFAULT_ENCODER_BY_KIND[modality.kind]
        )


@dataclasses.dataclass(frozen=True)
class LossConfig:
    w_sup: float = _checked(_number(**_POSITIVE))  # the labels teach through it; PU reads it
    w_lb: float = _checked(_number(lo=0))
    w_ulb: float = _checked(_number(lo=0))
    w_rec: float = _checked(_number(lo=0))
    pu_mode: str = _checked(_choice(losses.PU_MODES))
    # Below ~1e-3 the logits reach 1e3 and float32 softmax gradients are all-or-nothing.
    temperature: float = _checked(_number(lo=1e-3))
    # The RBF kernels divide by 2 sigma^2, which float32 flushes to 0 below sigma ~1e-19
    # (0/0 = nan weights for equal embeddings or targets); 1e-6 leaves a wide margin.
    sigma: float = _checked(_number(lo=1e-6))
    label_sigma: float = _checked(_number(lo=1e-6))
    threshold: float = _checked(_number(**_UNIT))
    rec_stop_gradient: bool = _checked(_flag)
    centroid_decay: float = _checked(_number(**_UNIT))
    w_uni: float | None = _checked(_number(lo=0))  # paper only
    rec_target: str | None = _checked(_choice(REC_TARGETS))  # paper only


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    # AdamW moves each weight by ~learning_rate per step: above 1 that is noise, not training.
    learning_rate: float = _checked(_number(lo=0, hi=1, lo_open=True))
    # Longer than train.num_steps is fine: objective.make_schedule shortens it to the run.
    warmup_steps: int = _checked(_integer(0))
    # AdamW shrinks w by learning_rate * weight_decay * w a step: with both <= 1, never past 0.
    weight_decay: float = _checked(_number(lo=0, hi=1))
    grad_clip_norm: float = _checked(_number(**_POSITIVE))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int = _checked(_integer(0))
    log_every: int = _checked(_integer(1))
    eval_every: int = _checked(_integer(1))
    checkpoint_every: int = _checked(_integer(1))
    keep_checkpoints: int = _checked(_integer(1))
    progress_bar: bool = _checked(_flag)
    tensorboard: bool = _checked(_flag)  # also TensorBoard event files (needs tensorboardX)
    prefetch: int = _checked(_integer(0))  # batches prepared ahead in a thread; 0 = none


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    form: str = _checked(_choice(PARALLEL_FORMS))
    # FSDP-style: parameters of >= shard_min_size elements are split over the data axis
    shard_params: bool = _checked(_flag)
    shard_min_size: int = _checked(_integer(1))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    split: str = _checked(_choice(EVAL_SPLITS))
    batch_size: int = _checked(_integer(1))
    missing_rates: tuple[float, ...] = _checked(_rates)
    mask_seeds: tuple[int, ...] = _checked(_seeds)
    per_modality_rates: tuple[tuple[float, ...], ...] = _checked(_rate_patterns)


@dataclasses.dataclass(frozen=True)
class Config:
    method: str
    seed: int
    data: ml_collections.ConfigDict  # loader-specific, read by the dataset's loader
    sampling: SamplingConfig
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    train: TrainConfig
    eval: EvalConfig
    parallel: ParallelConfig


_GROUPS = {
    "sampling": SamplingConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "parallel": ParallelConfig,
}


def _as_dict(value: Any, where: str = "the config") -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if not isinstance(value, Mapping):
        _fail(where, value, "must be a group of fields (a ConfigDict or dict)")
    return dict(value)


def _group(config: Any, name: str, skip: tuple[str, ...]) -> Any:
    """The typed group `name`: every field checked, the fields in `skip` left None."""
    cls = _GROUPS[name]
    rules = {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}
    if name not in config:
        raise ValueError(f"The config has no `{name}` group; start from configs/watch.py.")
    values = _as_dict(config[name], name)
    unknown = sorted(set(values) - set(rules), key=str)  # key: a dict may have non-str keys
    missing = sorted(set(rules) - set(values))
    if unknown:
        raise ValueError(
            f"{name}.{unknown[0]} is not a config field; the fields of `{name}` are: "
            f"{', '.join(sorted(rules))}."
        )
    if missing:
        raise ValueError(
            f"The config lacks {name}.{missing[0]}; configs/watch.py shows every field."
        )
    return cls(**{
        f: None if f"{name}.{f}" in skip else check(f"{name}.{f}", values[f])
        for f, check in rules.items()
    })  # fmt: skip


def _check_architecture_fields(config: Any, architecture: str) -> tuple[str, ...]:
    """The other architecture's fields must be None, this one's set; returns the former."""
    extra, missing, others = [], [], []
    for arch, fields in ARCHITECTURE_FIELDS.items():
        for path in fields:
            group, field = path.split(".")
            value = _as_dict(config[group] if group in config else None, group).get(field)
            if arch != architecture:
                others.append(path)
                if value is not None:
                    extra.append(f"{path}={value!r}")
            elif value is None:
                missing.append(path)
    if extra or missing:
        problems = [f"does not use {', '.join(extra)} (set to None)"] if extra else []
        problems += [f"needs {', '.join(missing)} (None in this config)"] if missing else []
        raise ValueError(
            f"model.architecture='{architecture}' {' and '.join(problems)}. The "
            f"'{architecture}' variant of a config sets exactly its fields: e.g. "
            f"--config configs/watch.py:{architecture}, or get_config('{architecture}')."
        )
    return tuple(others)


def from_config_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> Config:
    """Builds and validates the typed config; raises ValueError naming the first bad field."""
    groups = {*_GROUPS, "data", "method", "seed"}
    unknown = sorted(set(_as_dict(config)) - groups, key=str)
    if unknown:
        raise ValueError(
            f"`{unknown[0]}` is not a config group; the groups are: {', '.join(sorted(groups))}."
        )
    for key in ("method", "seed"):
        if key not in config:
            raise ValueError(f"The config lacks `{key}`; start from configs/watch.py.")
    if not isinstance(config["method"], str) or not config["method"]:
        _fail("method", config["method"], "must be a non-empty string (a name for reports)")
    if "data" not in config or not isinstance(_as_dict(config["data"], "data").get("name"), str):
        raise ValueError("data.name must name a dataset (see robult_jax.data.registry).")
    if "model" not in config:
        raise ValueError("The config has no `model` group; start from configs/watch.py.")
    architecture = _as_dict(config["model"], "model").get("architecture")
    skip = _check_architecture_fields(
        config, _choice(ARCHITECTURES)("model.architecture", architecture)
    )
    typed = {name: _group(config, name, skip) for name in _GROUPS}
    model = typed["model"]
    if model.fusion == "attention" and model.latent_dim % model.num_heads:
        raise ValueError(
            f"model.latent_dim={model.latent_dim} must be divisible by model.num_heads="
            f"{model.num_heads} (the attention fusion splits it into heads)."
        )
    return Config(
        method=config["method"],
        seed=_integer(0)("seed", config["seed"]),
        data=config["data"],
        **typed,
    )


def check_against_dataset(config: Config, spec) -> None:
    """Checks that need the dataset: modality names, per-modality rates, encoder shapes."""
    names = spec.modality_names
    patterns = [("eval.per_modality_rates entry", p) for p in config.eval.per_modality_rates]
    if config.sampling.modality_dropout_rates:  # () = modality_dropout for every modality
        patterns.append(("sampling.modality_dropout_rates", config.sampling.modality_dropout_rates))
    for where, rates in patterns:
        if len(rates) != len(names):
            raise ValueError(
                f"{where} {rates} must hold {len(names)} rates, one per modality in the order "
                f"{', '.join(names)}."
            )
    model = config.model
    for name, _ in model.encoders:
        if name not in names:
            raise ValueError(
                f"model.encoders names modality {name!r}, which dataset {spec.name!r} does not "
                f"have; its modalities are: {', '.join(names)}."
            )
    for m in spec.modalities:
        encoder = model.encoder_for(m)
        encoders.check_encoder(encoder, m.name, m.shape, m.kind)
        if encoder == "transformer" and (model.seq_width or model.latent_dim) % model.num_heads:
            raise ValueError(
                f"the transformer encoder of {m.name!r} has width model.seq_width="
                f"{model.seq_width} (0 = latent_dim {model.latent_dim}), which must be "
                f"divisible by model.num_heads={model.num_heads}."
            )
