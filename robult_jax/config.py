"""Typed, frozen config groups, built once from the ml_collections config and validated once.

`from_config_dict(config)` turns a config of configs/ (after its command-line
overrides) into a `Config` of frozen dataclasses, or raises one ValueError
naming the field and its allowed values. Everything downstream trusts it:
library functions keep only their static shape checks. Defaults live in the
config files only. Fields of one architecture (`ARCHITECTURE_FIELDS`) are None
in configs of the other, and setting them there is an error, not ignored.
`config.data` stays an ml_collections group, checked by the dataset's loader.
The checks of single values (numbers, choices, flags, sequences, the encoder
table) are in `robult_jax.config_checks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from robult_jax import config_checks as checks
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


def _checked(check) -> Any:
    """A dataclass field (no default) with the check that `from_config_dict` applies to it."""
    return dataclasses.field(metadata={"check": check})


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    # fraction of training rows whose label is used, in (0, 1]
    label_rate: float = _checked(checks.number(lo=0, hi=1, lo_open=True))
    label_seed: int = _checked(checks.integer(0))
    labeled_batch: int = _checked(checks.integer(1))  # global rows per step
    unlabeled_batch: int = _checked(checks.integer(1))
    # train-time P(drop) per modality, never all
    modality_dropout: float = _checked(checks.number(**checks.UNIT))
    # per modality; () = modality_dropout for all
    modality_dropout_rates: tuple[float, ...] = _checked(checks.rates)

    def dropout(self) -> float | tuple[float, ...]:
        return self.modality_dropout_rates or self.modality_dropout


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    architecture: str = _checked(checks.choice(ARCHITECTURES))
    latent_dim: int = _checked(checks.integer(1))  # D
    hidden_dim: int = _checked(checks.integer(1))
    dropout_rate: float = _checked(checks.number(**checks.UNIT))
    num_heads: int = _checked(checks.integer(1))
    # (modality, encoder) pairs; hashable for linen
    encoders: tuple[tuple[str, str], ...] = _checked(checks.encoder_table)
    cnn1d_features: tuple[int, ...] = _checked(checks.widths)
    cnn2d_features: tuple[int, ...] = _checked(checks.widths)
    seq_layers: int = _checked(checks.integer(1))
    seq_width: int = _checked(checks.integer(0))  # 0 = latent_dim
    fusion_stems: str | None = _checked(checks.choice(FUSION_STEMS))  # paper only
    combine: str | None = _checked(checks.choice(COMBINES))  # paper only
    fusion: str | None = _checked(checks.choice(FUSIONS))  # fused only
    unique_dim: int | None = _checked(checks.integer(1))  # fused only (K)
    proj_dim: int | None = _checked(checks.integer(1))  # fused only (P)
    compute_dtype: str = _checked(checks.choice(COMPUTE_DTYPES))  # of activations and matmuls

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
    w_sup: float = _checked(
        checks.number(**checks.POSITIVE)
    )  # the labels teach through it; PU reads it
    w_lb: float = _checked(checks.number(lo=0))
    w_ulb: float = _checked(checks.number(lo=0))
    w_rec: float = _checked(checks.number(lo=0))
    pu_mode: str = _checked(checks.choice(losses.PU_MODES))
    # Below ~1e-3 the logits reach 1e3 and float32 softmax gradients are all-or-nothing.
    temperature: float = _checked(checks.number(lo=1e-3))
    # The RBF kernels divide by 2 sigma^2, which float32 flushes to 0 below sigma ~1e-19
    # (0/0 = nan weights for equal embeddings or targets); 1e-6 leaves a wide margin.
    sigma: float = _checked(checks.number(lo=1e-6))
    label_sigma: float = _checked(checks.number(lo=1e-6))
    threshold: float = _checked(checks.number(**checks.UNIT))
    rec_stop_gradient: bool = _checked(checks.flag)
    centroid_decay: float = _checked(checks.number(**checks.UNIT))
    w_uni: float | None = _checked(checks.number(lo=0))  # paper only
    rec_target: str | None = _checked(checks.choice(REC_TARGETS))  # paper only


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    # AdamW moves each weight by ~learning_rate per step: above 1 that is noise, not training.
    learning_rate: float = _checked(checks.number(lo=0, hi=1, lo_open=True))
    # Longer than train.num_steps is fine: objective.make_schedule shortens it to the run.
    warmup_steps: int = _checked(checks.integer(0))
    # AdamW shrinks w by learning_rate * weight_decay * w a step: with both <= 1, never past 0.
    weight_decay: float = _checked(checks.number(lo=0, hi=1))
    grad_clip_norm: float = _checked(checks.number(**checks.POSITIVE))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int = _checked(checks.integer(0))
    log_every: int = _checked(checks.integer(1))
    eval_every: int = _checked(checks.integer(1))
    checkpoint_every: int = _checked(checks.integer(1))
    keep_checkpoints: int = _checked(checks.integer(1))
    progress_bar: bool = _checked(checks.flag)
    tensorboard: bool = _checked(checks.flag)  # also TensorBoard event files (needs tensorboardX)
    prefetch: int = _checked(checks.integer(0))  # batches prepared ahead in a thread; 0 = none
    profile_steps: int = _checked(checks.integer(0))  # steps traced by jax.profiler; 0 = none
    profile_start: int = _checked(checks.integer(0))  # steps done before the trace starts


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    form: str = _checked(checks.choice(PARALLEL_FORMS))
    # FSDP-style: parameters of >= shard_min_size elements are split over the data axis
    shard_params: bool = _checked(checks.flag)
    shard_min_size: int = _checked(checks.integer(1))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    split: str = _checked(checks.choice(EVAL_SPLITS))
    batch_size: int = _checked(checks.integer(1))
    missing_rates: tuple[float, ...] = _checked(checks.rates)
    mask_seeds: tuple[int, ...] = _checked(checks.seeds)
    per_modality_rates: tuple[tuple[float, ...], ...] = _checked(checks.rate_patterns)


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


def _group(config: Any, name: str, skip: tuple[str, ...]) -> Any:
    """The typed group `name`: every field checked, the fields in `skip` left None."""
    cls = _GROUPS[name]
    rules = {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}
    if name not in config:
        raise ValueError(f"The config has no `{name}` group; start from configs/watch.py.")
    values = checks.as_dict(config[name], name)
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
            value = checks.as_dict(config[group] if group in config else None, group).get(field)
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
    unknown = sorted(set(checks.as_dict(config)) - groups, key=str)
    if unknown:
        raise ValueError(
            f"`{unknown[0]}` is not a config group; the groups are: {', '.join(sorted(groups))}."
        )
    for key in ("method", "seed"):
        if key not in config:
            raise ValueError(f"The config lacks `{key}`; start from configs/watch.py.")
    if not isinstance(config["method"], str) or not config["method"]:
        checks.fail("method", config["method"], "must be a non-empty string (a name for reports)")
    if "data" not in config or not isinstance(
        checks.as_dict(config["data"], "data").get("name"), str
    ):
        raise ValueError("data.name must name a dataset (see robult_jax.data.registry).")
    if "model" not in config:
        raise ValueError("The config has no `model` group; start from configs/watch.py.")
    architecture = checks.as_dict(config["model"], "model").get("architecture")
    skip = _check_architecture_fields(
        config, checks.choice(ARCHITECTURES)("model.architecture", architecture)
    )
    typed = {name: _group(config, name, skip) for name in _GROUPS}
    model = typed["model"]
    if model.fusion == "attention" and model.latent_dim % model.num_heads:
        raise ValueError(
            f"model.latent_dim={model.latent_dim} must be divisible by model.num_heads="
            f"{model.num_heads} (the attention fusion splits it into heads)."
        )
    run = typed["train"]
    if run.profile_steps and run.profile_start + run.profile_steps > run.num_steps:
        raise ValueError(
            f"train.profile_start={run.profile_start} + train.profile_steps="
            f"{run.profile_steps} is past train.num_steps={run.num_steps}: the trace would "
            "not end before training does. Lower train.profile_start or train.profile_steps."
        )
    return Config(
        method=config["method"],
        seed=checks.integer(0)("seed", config["seed"]),
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
