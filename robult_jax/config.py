"""Typed, frozen config groups, built once from the ml_collections config and validated once.

`from_config_dict(config)` turns the config of a file in configs/ (after its
command-line overrides) into a `Config` of frozen dataclasses, or raises one
ValueError naming the field and its allowed values. Everything downstream
(model, objective, sampler, trainer) takes these typed groups and trusts them:
library functions keep only their static shape checks.

The defaults live in the config files only (configs/watch.py and the files that
import it); nothing here has a default value. Fields that belong to one
architecture (`ARCHITECTURE_FIELDS`) are None in configs of the other one, and
setting them there is an error rather than silently ignored.

`config.data` stays an ml_collections group: its fields differ per dataset and
are read (and checked) by that dataset's loader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from robult_jax import encoders, losses

ARCHITECTURES = ("paper", "fused")
FUSION_STEMS = ("own", "shared")  # paper: f_0's per-modality stems
COMBINES = ("mean_probs", "mean_latent")  # paper: how present modalities' predictions combine
FUSIONS = ("attention", "mean")  # fused: f_0 over the present h_i
REC_TARGETS = ("h_i", "h_0")  # paper: what u_i + z_i reconstructs
EVAL_SPLITS = ("test", "validation")

# Fields that only one architecture reads; the other architecture's configs set them to None.
ARCHITECTURE_FIELDS = {
    "paper": ("model.fusion_stems", "model.combine", "loss.w_uni", "loss.rec_target"),
    "fused": ("model.fusion", "model.unique_dim", "model.proj_dim"),
}


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    label_rate: float  # fraction of training rows whose label is used, in (0, 1]
    label_seed: int
    labeled_batch: int  # global rows per step
    unlabeled_batch: int
    modality_dropout: float  # train-time P(drop) per modality, never all
    modality_dropout_rates: tuple[float, ...]  # per modality; () = modality_dropout for all

    def dropout(self) -> float | tuple[float, ...]:
        return self.modality_dropout_rates or self.modality_dropout


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    architecture: str
    latent_dim: int  # D
    hidden_dim: int
    dropout_rate: float
    num_heads: int
    encoders: tuple[tuple[str, str], ...]  # (modality, encoder) pairs; hashable for linen
    cnn1d_features: tuple[int, ...]
    cnn2d_features: tuple[int, ...]
    seq_layers: int
    seq_width: int  # 0 = latent_dim
    fusion_stems: str | None  # paper only
    combine: str | None  # paper only
    fusion: str | None  # fused only
    unique_dim: int | None  # fused only (K)
    proj_dim: int | None  # fused only (P)

    @property
    def embed_dim(self) -> int:
        """P: width of the unit-sphere embeddings s and z_i (paper: g_0's output, D)."""
        return self.latent_dim if self.architecture == "paper" else self.proj_dim

    def encoder_for(self, modality) -> str:
        """The encoder of a `ModalitySpec`: named in `encoders`, else the default of its kind."""
        return dict(self.encoders).get(modality.name) or encoders.default_encoder(
            modality.kind, modality.name
        )


@dataclasses.dataclass(frozen=True)
class LossConfig:
    w_sup: float
    w_lb: float
    w_ulb: float
    w_rec: float
    pu_mode: str
    temperature: float
    sigma: float
    label_sigma: float
    threshold: float
    rec_stop_gradient: bool
    centroid_decay: float
    w_uni: float | None  # paper only
    rec_target: str | None  # paper only


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    grad_clip_norm: float


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    progress_bar: bool


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    split: str
    batch_size: int
    missing_rates: tuple[float, ...]
    mask_seeds: tuple[int, ...]
    per_modality_rates: tuple[tuple[float, ...], ...]


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


class _Group:
    """Reads the fields of one config group, each checked with a message naming it."""

    def __init__(self, config: Any, name: str, cls: type):
        if name not in config:
            raise ValueError(f"The config has no `{name}` group; start from configs/watch.py.")
        self.values = _as_dict(config[name])
        self.name = name
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.values) - known)
        missing = sorted(known - set(self.values))
        if unknown:
            raise ValueError(
                f"{name}.{unknown[0]} is not a config field; the fields of `{name}` are: "
                f"{', '.join(sorted(known))}."
            )
        if missing:
            raise ValueError(
                f"The config lacks {name}.{missing[0]}; configs/watch.py shows every field."
            )

    def fail(self, field: str, requirement: str):
        raise ValueError(f"{self.name}.{field}={self.values[field]!r} {requirement}.")

    def number(self, field: str, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
        v = self.values[field]
        kind = "an integer" if integer else "a number"
        ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok_type:
            self.fail(field, f"must be {kind}")
        below = lo is not None and (v <= lo if lo_open else v < lo)
        above = hi is not None and (v >= hi if hi_open else v > hi)
        if below or above:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
            self.fail(field, f"is outside {span}")
        return int(v) if integer else float(v)

    def integer(self, field: str, *, lo=None) -> int:
        return self.number(field, lo=lo, integer=True)

    def choice(self, field: str, allowed: tuple[str, ...]) -> str:
        if self.values[field] not in allowed:
            self.fail(field, f"is not one of {', '.join(allowed)}")
        return self.values[field]

    def flag(self, field: str) -> bool:
        if not isinstance(self.values[field], bool):
            self.fail(field, "must be True or False")
        return self.values[field]

    def ints(self, field: str, *, lo: int) -> tuple[int, ...]:
        v = self.values[field]
        if (
            not isinstance(v, list | tuple)
            or not v
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in v)
        ):
            self.fail(field, f"must be a non-empty sequence of integers >= {lo}")
        return tuple(v)

    def rates(self, field: str) -> tuple[float, ...]:
        return _rate_tuple(self.values[field], f"{self.name}.{field}")


def _rate_tuple(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(r, int | float) and not isinstance(r, bool) and 0 <= r < 1 for r in value
    ):
        raise ValueError(
            f"{where}={value!r} must be a sequence of rates in [0, 1) (one modality is always "
            "kept)."
        )
    return tuple(float(r) for r in value)


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return dict(value)


def _architecture_fields(config: Any, architecture: str) -> None:
    """The other architecture's fields must be None; this one's must be set."""
    extra, missing = [], []
    for arch, fields in ARCHITECTURE_FIELDS.items():
        for path in fields:
            group, field = path.split(".")
            value = _as_dict(config[group]).get(field)
            if arch != architecture and value is not None:
                extra.append(f"{path}={value!r}")
            if arch == architecture and value is None:
                missing.append(path)
    if extra or missing:
        problems = []
        if extra:
            problems.append(f"does not use {', '.join(extra)} (set to None)")
        if missing:
            problems.append(f"needs {', '.join(missing)} (None in this config)")
        raise ValueError(
            f"model.architecture='{architecture}' {' and '.join(problems)}. The "
            f"'{architecture}' variant of a config sets exactly its fields: e.g. "
            f"--config configs/watch.py:{architecture}, or get_config('{architecture}')."
        )


def _model(config: Any) -> ModelConfig:
    g = _Group(config, "model", ModelConfig)
    arch = g.choice("architecture", ARCHITECTURES)
    _architecture_fields(config, arch)
    encoder_map = _as_dict(g.values["encoders"])
    for name, encoder in encoder_map.items():
        if encoder not in encoders.ENCODER_NAMES:
            raise ValueError(
                f"model.encoders[{name!r}]={encoder!r} is not one of "
                f"{', '.join(encoders.ENCODER_NAMES)}."
            )
    paper = arch == "paper"
    model = ModelConfig(
        architecture=arch,
        latent_dim=g.integer("latent_dim", lo=1),
        hidden_dim=g.integer("hidden_dim", lo=1),
        dropout_rate=g.number("dropout_rate", lo=0, hi=1, hi_open=True),
        num_heads=g.integer("num_heads", lo=1),
        encoders=tuple(sorted(encoder_map.items())),
        cnn1d_features=g.ints("cnn1d_features", lo=1),
        cnn2d_features=g.ints("cnn2d_features", lo=1),
        seq_layers=g.integer("seq_layers", lo=1),
        seq_width=g.integer("seq_width", lo=0),
        fusion_stems=g.choice("fusion_stems", FUSION_STEMS) if paper else None,
        combine=g.choice("combine", COMBINES) if paper else None,
        fusion=None if paper else g.choice("fusion", FUSIONS),
        unique_dim=None if paper else g.integer("unique_dim", lo=1),
        proj_dim=None if paper else g.integer("proj_dim", lo=1),
    )
    if model.fusion == "attention" and model.latent_dim % model.num_heads:
        raise ValueError(
            f"model.latent_dim={model.latent_dim} must be divisible by model.num_heads="
            f"{model.num_heads} (the attention fusion splits it into heads)."
        )
    return model


def _loss(config: Any, architecture: str) -> LossConfig:
    g = _Group(config, "loss", LossConfig)
    paper = architecture == "paper"
    loss = LossConfig(
        w_sup=g.number("w_sup", lo=0),
        w_lb=g.number("w_lb", lo=0),
        w_ulb=g.number("w_ulb", lo=0),
        w_rec=g.number("w_rec", lo=0),
        pu_mode=g.choice("pu_mode", losses.PU_MODES),
        # Below ~1e-3 the logits reach 1e3 and float32 softmax gradients are all-or-nothing.
        temperature=g.number("temperature", lo=1e-3),
        sigma=g.number("sigma", lo=0, lo_open=True),
        label_sigma=g.number("label_sigma", lo=0, lo_open=True),
        threshold=g.number("threshold", lo=0, hi=1, hi_open=True),
        rec_stop_gradient=g.flag("rec_stop_gradient"),
        centroid_decay=g.number("centroid_decay", lo=0, hi=1, hi_open=True),
        w_uni=g.number("w_uni", lo=0) if paper else None,
        rec_target=g.choice("rec_target", REC_TARGETS) if paper else None,
    )
    if loss.w_sup <= 0:
        # The supervised term is what the few labels teach; the PU weights read its beliefs.
        g.fail("w_sup", "must be > 0 (every method here trains the task head)")
    return loss


def from_config_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> Config:
    """Builds and validates the typed config; raises ValueError naming the first bad field."""
    for key in ("method", "seed"):
        if key not in config:
            raise ValueError(f"The config lacks `{key}`; start from configs/watch.py.")
    groups = {"data", "sampling", "model", "loss", "optim", "train", "eval", "method", "seed"}
    unknown = sorted(set(_as_dict(config)) - groups)
    if unknown:
        raise ValueError(
            f"`{unknown[0]}` is not a config group; the groups are: {', '.join(sorted(groups))}."
        )
    seed = config["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0.")
    if "data" not in config or not isinstance(_as_dict(config["data"]).get("name"), str):
        raise ValueError("data.name must name a dataset (see robult_jax.data.registry).")

    s = _Group(config, "sampling", SamplingConfig)
    sampling = SamplingConfig(
        label_rate=s.number("label_rate", lo=0, hi=1, lo_open=True),
        label_seed=s.integer("label_seed", lo=0),
        labeled_batch=s.integer("labeled_batch", lo=1),
        unlabeled_batch=s.integer("unlabeled_batch", lo=1),
        modality_dropout=s.number("modality_dropout", lo=0, hi=1, hi_open=True),
        modality_dropout_rates=s.rates("modality_dropout_rates"),
    )
    model = _model(config)
    o = _Group(config, "optim", OptimConfig)
    optim = OptimConfig(
        learning_rate=o.number("learning_rate", lo=0, lo_open=True),
        warmup_steps=o.integer("warmup_steps", lo=0),
        weight_decay=o.number("weight_decay", lo=0),
        grad_clip_norm=o.number("grad_clip_norm", lo=0, lo_open=True),
    )
    t = _Group(config, "train", TrainConfig)
    train = TrainConfig(
        num_steps=t.integer("num_steps", lo=0),
        log_every=t.integer("log_every", lo=1),
        eval_every=t.integer("eval_every", lo=1),
        checkpoint_every=t.integer("checkpoint_every", lo=1),
        keep_checkpoints=t.integer("keep_checkpoints", lo=1),
        progress_bar=t.flag("progress_bar"),
    )
    e = _Group(config, "eval", EvalConfig)
    per_modality = e.values["per_modality_rates"]
    if not isinstance(per_modality, list | tuple):
        e.fail("per_modality_rates", "must be a sequence of per-modality rate tuples")
    seeds = e.values["mask_seeds"]
    if not seeds:
        e.fail("mask_seeds", "must name at least one seed")
    evaluation = EvalConfig(
        split=e.choice("split", EVAL_SPLITS),
        batch_size=e.integer("batch_size", lo=1),
        missing_rates=e.rates("missing_rates"),
        mask_seeds=e.ints("mask_seeds", lo=0),
        per_modality_rates=tuple(
            _rate_tuple(r, "eval.per_modality_rates entry") for r in per_modality
        ),
    )
    return Config(
        method=str(config["method"]),
        seed=seed,
        data=config["data"],
        sampling=sampling,
        model=model,
        loss=_loss(config, model.architecture),
        optim=optim,
        train=train,
        eval=evaluation,
    )


def check_against_dataset(config: Config, spec) -> None:
    """Checks that need the dataset: modality names, per-modality rates, encoder shapes."""
    names = spec.modality_names
    order = f"one per modality in the order {', '.join(names)}"
    rates = config.sampling.modality_dropout_rates
    if rates and len(rates) != len(names):
        raise ValueError(
            f"sampling.modality_dropout_rates={rates} must be empty or hold {len(names)} rates, "
            f"{order}."
        )
    for pattern in config.eval.per_modality_rates:
        if len(pattern) != len(names):
            raise ValueError(
                f"eval.per_modality_rates entry {pattern} must hold {len(names)} rates, {order}."
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
