"""Checks a config before anything is trained or written.

Every problem is reported with the field's dotted name and the allowed values,
so that the user can fix the command line without reading the code. Unknown
keys are caught earlier: configs are locked, so `--config.data.lable_rate=0.1`
is an error from ml_collections itself.
"""

import ml_collections

from robult_jax import parallel

PU_MODES = ("soft", "hard", "none")
FUSIONS = ("attention", "mean")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks that need no data: ranges, choices, batch divisibility."""
    d, loss, train, optim = config.data, config.loss, config.train, config.optim
    _check(
        0.0 < d.label_rate <= 1.0,
        f"data.label_rate={d.label_rate} is outside (0, 1]; use e.g. 0.05 for 5% labels.",
    )
    _check(
        0.0 <= d.modality_dropout < 1.0,
        f"data.modality_dropout={d.modality_dropout} is outside [0, 1); 0 disables it.",
    )
    for field in ("labeled_batch", "unlabeled_batch"):
        value = d[field]
        _check(value >= 1, f"data.{field}={value} must be a positive integer.")
        parallel.check_batch_size(value, f"data.{field}")
    parallel.check_batch_size(config.eval.batch_size, "eval.batch_size")
    _check(
        loss.pu_mode in PU_MODES,
        f"loss.pu_mode={loss.pu_mode!r} is not one of {', '.join(PU_MODES)}.",
    )
    _check(
        config.model.fusion in FUSIONS,
        f"model.fusion={config.model.fusion!r} is not one of {', '.join(FUSIONS)}.",
    )
    for w in ("w_sup", "w_lb", "w_ulb", "w_rec"):
        _check(loss[w] >= 0, f"loss.{w}={loss[w]} must be >= 0.")
    _check(loss.temperature > 0, f"loss.temperature={loss.temperature} must be > 0.")
    _check(loss.sigma > 0, f"loss.sigma={loss.sigma} must be > 0.")
    _check(loss.label_sigma > 0, f"loss.label_sigma={loss.label_sigma} must be > 0.")
    _check(0.0 <= loss.threshold < 1.0, f"loss.threshold={loss.threshold} is outside [0, 1).")
    _check(
        0.0 <= loss.centroid_decay < 1.0,
        f"loss.centroid_decay={loss.centroid_decay} is outside [0, 1).",
    )
    _check(optim.learning_rate > 0, f"optim.learning_rate={optim.learning_rate} must be > 0.")
    _check(train.num_steps >= 0, f"train.num_steps={train.num_steps} must be >= 0.")
    for field in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        _check(train[field] >= 1, f"train.{field}={train[field]} must be >= 1.")
    for rate in config.eval.missing_rates:
        _check(
            0.0 <= rate < 1.0,
            f"eval.missing_rates contains {rate}, outside [0, 1) (one modality is always kept).",
        )
    _check(
        config.eval.split in ("test", "validation"),
        f"eval.split={config.eval.split!r} is not one of test, validation.",
    )
    _check(len(config.eval.mask_seeds) >= 1, "eval.mask_seeds must name at least one seed.")


def validate_against_dataset(config: ml_collections.ConfigDict, spec) -> None:
    """Checks that need the dataset's modality names."""
    names = [m.name for m in spec.modalities]
    rates = tuple(config.data.get("modality_dropout_rates", ()))
    _check(
        not rates or (len(rates) == len(names) and all(0 <= r < 1 for r in rates)),
        f"data.modality_dropout_rates={rates} must be empty or hold {len(names)} rates in "
        f"[0, 1), one per modality in the order {', '.join(names)}.",
    )
    for pattern in config.eval.get("per_modality_rates", ()):
        _check(
            len(pattern) == len(names) and all(0 <= r < 1 for r in pattern),
            f"eval.per_modality_rates entry {tuple(pattern)} must hold {len(names)} rates in "
            f"[0, 1), one per modality in the order {', '.join(names)}.",
        )
    for name in config.model.encoders.keys():
        _check(
            name in names,
            f"model.encoders names modality {name!r}, which dataset {spec.name!r} does not "
            f"have; its modalities are: {', '.join(names)}.",
        )
