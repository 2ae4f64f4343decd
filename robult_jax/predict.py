"""Predict with a trained workdir on new data in which any modality may be missing.

  python -m robult_jax.predict --workdir runs/watch --input new.npz --output preds.npz

Inputs, outputs and the Python API (`load_trained`, `predict_arrays`): docs/own_data.md
section 4. The model is the run's best-on-validation checkpoint (`<workdir>/best`);
inputs are raw, normalised here as in training (`<workdir>/input_stats.npz`); arrays
that are not modalities or the mask (labels, split, ...) are ignored.

Shape legend: N samples, M modalities, C classes (or outputs).
"""

import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath

from robult_jax import (
    checkpointing,
    cli,
    evaluate,
    files,
    models,
    objective,
    parallel,
    tasks,
    train,
)
from robult_jax import config as config_lib
from robult_jax.data import arrays
from robult_jax.data.types import DatasetSpec, ModalitySpec, Split


@dataclasses.dataclass
class Trained:
    """A trained run, restored from its workdir, ready to predict."""

    workdir: str
    config: config_lib.Config  # from config.json
    spec: DatasetSpec  # from dataset_spec.json
    model: models.PaperRobult | models.FusedRobult
    params: Any  # of the best checkpoint, replicated on `mesh`
    best_step: int
    input_stats: dict[str, dict[str, np.ndarray]] | None  # from input_stats.npz
    mesh: jax.sharding.Mesh
    predict_fn: evaluate.PredictFn  # jitted once, reused by every predict_arrays call
    embed_fn: evaluate.PredictFn  # the same, with the embeddings s, z_i, u_i


def _train_hint(workdir: str) -> str:
    return (
        f"train first: python -m robult_jax.main --config configs/<your config>.py "
        f"--workdir {workdir}"
    )


def _read_spec(path: epath.Path) -> DatasetSpec:
    """The inverse of `dataclasses.asdict` in `workdir.write_dataset_artifacts`."""
    d = json.loads(path.read_text())
    return DatasetSpec(**{**d, "modalities": [ModalitySpec(**m) for m in d["modalities"]]})


def _read_stats(path: epath.Path) -> dict[str, dict[str, np.ndarray]] | None:
    if not path.exists():
        return None  # the loader normalised nothing
    stats: dict[str, dict[str, np.ndarray]] = {}
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as f:
        for key in f.files:
            name, stat = key.rsplit("/", 1)
            stats.setdefault(name, {})[stat] = f[key]
    return stats


def load_trained(workdir: str | os.PathLike) -> Trained:
    """Restores the best checkpoint of `workdir` with the config and spec it was trained on."""
    workdir = os.fspath(workdir)
    root = files.as_path(workdir)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(
            f"{workdir} holds no training run (no config.json); " + _train_hint(workdir)
        )
    spec_path = root / "dataset_spec.json"
    if not spec_path.is_file():
        raise FileNotFoundError(
            f"{spec_path} not found: the run predates it. Run its training command again with "
            f"the same --workdir (it resumes and writes the file)."
        )
    best_dir = root / "best"
    if not (best_dir.is_dir() and any(p.name.isdigit() for p in best_dir.iterdir())):
        raise FileNotFoundError(
            f"{workdir} has no best checkpoint yet ({best_dir} is empty; it is written at each "
            f"validation, every train.eval_every steps); " + _train_hint(workdir)
        )
    raw = ml_collections.ConfigDict(files.read_json(root / "config.json"))
    try:
        config = config_lib.from_config_dict(raw)
    except ValueError as e:
        raise ValueError(
            f"{workdir}/config.json is not a config this version can read ({e}); it was "
            "probably written by an older robult_jax: train it again in a new --workdir."
        ) from e
    spec = _read_spec(spec_path)
    model = models.build_model(config.model, spec)

    # Restore onto the shapes of a freshly built state (nothing allocated twice).
    tx = objective.make_optimizer(config.optim, config.train.num_steps)
    batch = {
        "inputs": {m.name: np.zeros((1, *m.shape), np.float32) for m in spec.modalities},
        "mask": np.ones((1, spec.num_modalities), bool),
    }
    shapes = jax.eval_shape(
        lambda k: train.create_state(config, model, tx, spec, k, batch), jax.random.key(0)
    )
    mesh = parallel.make_mesh()
    sharding = parallel.replicated(mesh)
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes
    )
    # Read-only: predict never writes into the model directory; a corrupt best raises.
    ckpt = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints, read_only=True)
    try:
        best_step = ckpt.best_step()
        state = ckpt.restore_best(abstract)
    finally:
        ckpt.close()
    return Trained(
        workdir=workdir,
        config=config,
        spec=spec,
        model=model,
        params=state["params"],
        best_step=int(best_step),
        input_stats=_read_stats(root / "input_stats.npz"),
        mesh=mesh,
        predict_fn=evaluate.make_predict_fn(model, mesh),
        embed_fn=evaluate.make_predict_fn(model, mesh, embeddings=True),
    )


def _rows_shape(shape: tuple[int, ...]) -> str:
    return f"(N, {', '.join(map(str, shape))})"


# |standardised value| above which a present input is refused. The training
# split's present entries have mean 0 and std 1 per feature, so 1e4 standard
# deviations is no outlier: it is a unit error, a sentinel such as -9999, or
# corrupt data, and the model's output for it would mean nothing.
MAX_ABS_STANDARDISED = 1e4


def _check_model_input(key: str, name: str, x_NxS: np.ndarray, standardised: bool) -> None:
    """Raises if a present row of the float32 model input `x_NxS` is non-finite or absurd.

    Absent rows are already zeros here, so every flagged row is a present one.
    `standardised`: `x_NxS` was normalised with the training statistics.
    """
    flat_NxF = x_NxS.reshape(len(x_NxS), int(np.prod(x_NxS.shape[1:])))
    bad = np.flatnonzero(~np.isfinite(flat_NxF).all(axis=1))
    after = " after normalisation with the training statistics" if standardised else ""
    if bad.size:
        raise ValueError(
            f"{key}: rows {arrays.rows_text(bad)} hold infinite values, or values that overflow "
            f"float32{after} (|x| > 3.4e38). NaN marks a missing modality: set those samples' "
            f"{name!r} to NaN (or its mask column to False) to predict without it, or fix them."
        )
    if not standardised:
        return  # no training scale to compare with
    largest_N = np.abs(flat_NxF).max(axis=1, initial=0.0)
    big = np.flatnonzero(largest_N > MAX_ABS_STANDARDISED)
    if big.size:
        raise ValueError(
            f"{key}: rows {arrays.rows_text(big)} hold values up to {largest_N[big].max():.3g} "
            f"training standard deviations from the training mean (more than "
            f"{MAX_ABS_STANDARDISED:g}): far outside anything seen in training, so the "
            "prediction would mean nothing. Check the units and sentinel values such as -9999 "
            "(a feature constant in training gets there with any other value); set those "
            f"samples' {name!r} to NaN (or its mask column to False) to predict without it."
        )


def predict_arrays(
    trained: Trained,
    inputs: dict[str, np.ndarray],
    mask: np.ndarray | None = None,
    *,
    where: Callable[[str], str] | None = None,
    embeddings: bool = False,
) -> dict[str, np.ndarray]:
    """The output arrays of docs/own_data.md section 4 for raw `inputs` {modality: (N, *shape)}.

    `embeddings=True` adds "s" (N, P), the fused embedding (paper: only where
    every modality is present), and "z" (N, M, P) / "u" (N, M, U), the shared
    and unique parts of each modality (zeros where it is absent).

    A modality is missing for a sample where its array holds NaN or `mask`
    ((N, M) bool, columns in `trained.spec.modality_names` order) is False; an
    array may be left out only if `mask` marks it False for every sample.
    A present modality that holds +-inf, overflows float32 (e.g. 1e300) or,
    normalised with the training statistics, lies more than
    `MAX_ABS_STANDARDISED` standard deviations from the training mean is a
    ValueError naming the array and rows: nothing is predicted from it.
    `where(key)` names array `key` in error messages (default "inputs['key']").
    """
    where = where or (lambda key: f"inputs[{key!r}]")
    spec = trained.spec
    names = list(spec.modality_names)
    sizes = {where(k): len(np.asarray(inputs[k])) for k in names if k in inputs}
    if mask is not None:
        sizes[where("mask")] = len(np.asarray(mask))
    if len(set(sizes.values())) > 1:
        raise ValueError(
            "Inputs differ in length (one row per sample in all of them): "
            + ", ".join(f"{k} has {v} rows" for k, v in sizes.items())
            + "."
        )
    n = next(iter(sizes.values()), 0)
    if n == 0:
        raise ValueError(f"No samples to predict: give arrays named {', '.join(names)}.")
    present_NxM = np.ones((n, len(names)), bool)
    if mask is not None:
        present_NxM = arrays.check_mask(where("mask"), np.asarray(mask), n, names)
    stats = trained.input_stats or {}
    xs = {}
    for j, m in enumerate(spec.modalities):
        if m.name not in inputs:
            if present_NxM[:, j].any():
                found = ", ".join(sorted(inputs)) or "none"
                expected = ", ".join(f"{k.name} {_rows_shape(k.shape)}" for k in spec.modalities)
                raise ValueError(
                    f"{where(m.name)} not found; the model expects arrays {expected} (found: "
                    f"{found}). To predict without {m.name!r}, fill it with NaN "
                    f"or give a mask whose {m.name!r} column is False."
                )
            x = np.zeros((n, *m.shape))
        else:
            x = np.asarray(inputs[m.name])
            if x.shape[1:] != m.shape:
                raise ValueError(
                    f"{where(m.name)} has per-sample shape {x.shape[1:]} (array {x.shape}); the "
                    f"model expects {m.shape}, i.e. an array of shape {_rows_shape(m.shape)}."
                )
            x = arrays.check_modality(where(m.name), m.name, m.kind, x)
        with np.errstate(over="ignore"):  # an overflow is reported just below, with its rows
            xs[m.name], present_NxM[:, j] = arrays.prepare(x, present_NxM[:, j], stats.get(m.name))
        _check_model_input(where(m.name), m.name, xs[m.name], stats.get(m.name) is not None)

    split = Split(inputs=xs, labels=np.zeros(n, np.int32), mask=present_NxM)
    mesh = trained.mesh
    ndev = mesh.devices.size
    batch_size = -(-trained.config.eval.batch_size // ndev) * ndev  # a multiple of the devices
    fn = trained.embed_fn if embeddings else trained.predict_fn
    out = evaluate.predict_split(
        fn, trained.params, split, present_NxM, batch_size=batch_size, mesh=mesh
    )
    extra = {k: np.asarray(out[k], np.float32) for k in evaluate.EMBEDDINGS} if embeddings else {}
    logits = np.asarray(out["logits"] if embeddings else out, np.float32)
    probs, preds = tasks.get(spec.task).outputs(logits)
    class_names = spec.class_names
    if not class_names and spec.task != "regression":
        class_names = tuple(str(c) for c in range(spec.num_outputs))
    return {
        "probabilities": probs,
        "predictions": preds,
        "logits": logits,
        "mask": present_NxM,
        "modality_names": np.array(names),
        "class_names": np.array(class_names, dtype=str),
        **extra,
    }


def predict_file(
    trained: Trained, path: str, *, mask_key: str = "mask", embeddings: bool = False
) -> dict[str, np.ndarray]:
    """`predict_arrays` on a .npz file or a directory of .npy files."""
    with arrays.ArrayFile(path) as f:
        inputs = {k: f.get(k, "a model modality") for k in trained.spec.modality_names if k in f}
        mask = f.get(mask_key, "mask") if mask_key and mask_key in f else None
        if not inputs and mask is None:
            raise ValueError(
                f"{path} holds none of the arrays the model expects "
                f"({', '.join(trained.spec.modality_names)}); arrays present: "
                f"{', '.join(f.names) or 'none'}."
            )
        return predict_arrays(trained, inputs, mask, where=f.where, embeddings=embeddings)


def write_predictions(path: str | os.PathLike, result: dict[str, np.ndarray]) -> None:
    """Writes `result` as a .npz (atomically: a failed write leaves no partial file)."""
    buf = io.BytesIO()
    np.savez(buf, **result)
    files.atomic_write(path, buf.getvalue())


_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a finished training run.")
_INPUT = flags.DEFINE_string("input", None, "A .npz file (or directory of .npy) of raw inputs.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the predictions (.npz).")
_MASK_KEY = flags.DEFINE_string("mask_key", "mask", "Name of the optional (N, M) mask array.")
_EMBEDDINGS = flags.DEFINE_bool(
    "embeddings", False, "Also write the embeddings s (N, P), z (N, M, P) and u (N, M, U)."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    train.enable_compilation_cache()
    if not flags.FLAGS["verbosity"].present:  # as in main.py: `--verbosity=0` shows them
        logging.set_verbosity(logging.WARNING)  # Orbax logs every restore step at INFO
    try:
        trained = load_trained(_WORKDIR.value)
        result = predict_file(
            trained, _INPUT.value, mask_key=_MASK_KEY.value, embeddings=_EMBEDDINGS.value
        )
    except (ValueError, OSError) as e:
        # Expected user errors: one clear message, no traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        write_predictions(_OUTPUT.value, result)
    except OSError as e:  # e.g. --output under an existing file, a read-only or full disk
        print(f"error: cannot write --output {_OUTPUT.value}: {e}", file=sys.stderr)
        sys.exit(2)
    mask = result["mask"]
    print(
        f"Wrote predictions for {len(mask)} samples to {_OUTPUT.value} (best checkpoint of "
        f"step {trained.best_step}); {int((~mask).any(axis=1).sum())} samples had a missing "
        f"modality, {int((~mask).all(axis=1).sum())} had none present."
    )


def run(argv: list[str] | None = None) -> None:
    """The command line (`argv` as sys.argv: program name first)."""
    flags.mark_flags_as_required(["workdir", "input", "output"])
    cli.accept_jax_flags()
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
