"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

Resume is the default: if `<workdir>/checkpoints` holds a state, training goes
on from its step. Every random choice (label split, data order, modality
dropout, parameter init, dropout) is a function of the seed and the step, so a
resumed run produces exactly the states an uninterrupted one would.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robult_jax import (
    checkpointing,
    config_validation,
    evaluate,
    models,
    objective,
    parallel,
    report,
)
from robult_jax import masks as masks_lib
from robult_jax.data import load_dataset, sampler
from robult_jax.metric_writer import MetricWriter, Progress


def enable_compilation_cache() -> None:
    """Persists compiled programs across runs (seeds, methods and resumes share them).

    XLA compilation dominates short CPU runs (about 30 s for the watch model);
    with the cache a second run of the same shapes starts training at once.
    Directory: $ROBULT_JAX_COMPILE_CACHE or ~/.cache/robult_jax/jax_cache.
    """
    path = os.environ.get("ROBULT_JAX_COMPILE_CACHE", "~/.cache/robult_jax/jax_cache")
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite; names the step."""


def create_state(
    config: ml_collections.ConfigDict, model, tx, spec, key: jax.Array, batch: dict
) -> objective.TrainState:
    params = model.init({"params": key}, batch["inputs"], batch["mask"], train=False)["params"]
    num_classes = spec.num_outputs
    return objective.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        centroids_CxP=jnp.zeros((num_classes, config.model.proj_dim), jnp.float32),
        centroid_valid_C=jnp.zeros((num_classes,), jnp.float32),
    )


def init_state(
    config: ml_collections.ConfigDict, model, tx, spec, key: jax.Array, batch: dict
) -> objective.TrainState:
    """`create_state`, compiled. Initialisation runs once, so XLA's slow optimisation
    passes buy nothing here; level 0 halves its compile time on CPU (12 s -> 6 s
    for the watch model)."""
    return jax.jit(
        lambda k: create_state(config, model, tx, spec, k, batch),
        compiler_options={"xla_backend_optimization_level": 0},
    )(key)


def spec_to_dict(spec) -> dict:
    return {
        "name": spec.name,
        "modalities": [
            {"name": m.name, "shape": list(m.shape), "kind": m.kind} for m in spec.modalities
        ],
        "task": spec.task,
        "num_outputs": spec.num_outputs,
        "class_names": list(spec.class_names),
        "variant": spec.variant,
    }


def write_dataset_artifacts(workdir: str, dataset) -> None:
    """What `robult_jax.predict` needs to use the model without the training data.

    dataset_spec.json: modalities, task and outputs (to rebuild the model);
    input_stats.npz: the normalisation the loader applied, keys "<modality>/mean"
    and "<modality>/std" (absent when the loader normalises nothing).
    """
    tmp = os.path.join(workdir, "dataset_spec.json.tmp")
    with open(tmp, "w") as f:
        json.dump(spec_to_dict(dataset.spec), f, indent=2)
    os.replace(tmp, os.path.join(workdir, "dataset_spec.json"))
    stats = getattr(dataset, "input_stats", None)
    if stats:
        arrays = {f"{name}/{k}": np.asarray(v) for name, d in stats.items() for k, v in d.items()}
        tmp = os.path.join(workdir, "input_stats.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, os.path.join(workdir, "input_stats.npz"))


def _label_split(config, dataset, workdir: str) -> np.ndarray:
    """The labeled training indices, saved beside the results (or re-read on resume)."""
    path = os.path.join(workdir, "label_split.json")
    if os.path.exists(path):
        idx, _ = sampler.load_label_split(path)
        return idx
    idx = sampler.label_split(dataset.train.labels, config.data.label_rate, config.data.label_seed)
    if jax.process_index() == 0:
        sampler.save_label_split(
            path, idx, rate=config.data.label_rate, seed=config.data.label_seed
        )
    return idx


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    pause_at_step: int | None = None,
    devices: list | None = None,
) -> dict | None:
    """Trains (or resumes), keeps the best validation checkpoint, evaluates it on test.

    `pause_at_step`: stop after that step with a checkpoint and no evaluation
    (returns None), e.g. to fit a time-limited session; the next call resumes.
    `devices`: the devices of the data-parallel mesh (default: all).
    """
    config_validation.validate_config(config)
    dataset = load_dataset(config.data)
    config_validation.validate_against_dataset(config, dataset.spec)
    os.makedirs(workdir, exist_ok=True)
    checkpointing.check_workdir_config(workdir, config)
    spec = dataset.spec

    mesh = parallel.make_mesh(devices)
    labeled_idx = _label_split(config, dataset, workdir)
    train_sampler = sampler.SemiSupervisedSampler(
        dataset.train,
        labeled_idx,
        labeled_batch=config.data.labeled_batch,
        unlabeled_batch=config.data.unlabeled_batch,
        modality_dropout=tuple(config.data.get("modality_dropout_rates", ()))
        or config.data.modality_dropout,
        seed=config.seed,
    )
    model = models.build_model(config.model, spec)
    num_steps = config.train.num_steps
    tx = objective.make_optimizer(config.optim, num_steps)

    # Named random streams, split once from the seed.
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    first = train_sampler.batch(0)
    state = init_state(config, model, tx, spec, init_key, first)
    state = parallel.replicate(state, mesh)
    abstract_state = checkpointing.abstract_like(state)

    ckpt = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
    restored = ckpt.restore_latest(abstract_state)
    if restored is not None:
        state = restored
    checkpointing.write_workdir_config(workdir, config)
    if jax.process_index() == 0:
        write_dataset_artifacts(workdir, dataset)
    start_step = int(state.step)
    writer = MetricWriter(workdir)

    train_step = jax.jit(
        objective.make_train_step(model, tx, config.loss, spec.task), donate_argnums=(0,)
    )
    predict = evaluate.make_predict_fn(model, mesh)
    eval_kw = dict(batch_size=config.eval.batch_size, mesh=mesh)

    progress = Progress(num_steps, start_step, config.train.progress_bar and start_step < num_steps)
    last_log_time, last_log_step = time.time(), start_step
    stop = num_steps if pause_at_step is None else min(num_steps, pause_at_step)
    for step in range(start_step, stop):
        batch = parallel.shard_batch(train_sampler.batch(step), mesh)
        state, metrics = train_step(state, batch, train_key)
        done = step + 1
        log = done % config.train.log_every == 0 or done == num_steps
        evaluate_now = done % config.train.eval_every == 0 or done == num_steps
        save = done % config.train.checkpoint_every == 0 or done in (num_steps, stop)
        if log or evaluate_now or save:
            # Device values are fetched only here; a non-finite loss is caught
            # before any state of this step can be evaluated or saved.
            metrics = jax.device_get(metrics)
            if not np.isfinite(metrics["loss"]):
                progress.close()
                raise NonFiniteLossError(
                    f"Non-finite loss ({metrics['loss']}) at step {done} (checked on log, "
                    "eval and checkpoint steps); terms: "
                    + ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
                    + ". Checkpoints already saved were left untouched; try a lower "
                    "optim.learning_rate."
                )
        if log:
            now = time.time()
            rate = (done - last_log_step) / max(now - last_log_time, 1e-9)
            last_log_time, last_log_step = now, done
            writer.write(done, {f"train/{k}": v for k, v in metrics.items()})
            writer.write(done, {"train/steps_per_sec": rate})
            progress.update(0, loss=f"{float(metrics['loss']):.3f}", steps_s=f"{rate:.1f}")
        if evaluate_now:
            val = evaluate.evaluate_subsets(
                predict, state.params, dataset.validation, spec, **eval_kw
            )
            score = evaluate.validation_score(val, spec)
            flat = {f"eval/val/{s}/{k}": v for s, r in val.items() for k, v in r.items()}
            writer.write(done, {**flat, "eval/val/score": score})
            ckpt.save_best(done, state, score)
        if save:
            ckpt.save(done, state)
        progress.update(1)
    progress.close()
    ckpt.wait_until_finished()
    if stop < num_steps:
        ckpt.close()
        return None

    best = ckpt.restore_best(abstract_state)
    best_step = ckpt.best_step()
    if best is None:  # e.g. num_steps == 0: evaluate the initial state
        best, best_step = state, int(state.step)
    eval_masks: dict[str, np.ndarray] = {}
    results = _final_evaluation(config, dataset, predict, best.params, eval_kw, eval_masks)
    results.update(
        best_step=int(best_step),
        label_split_hash=sampler.indices_sha256(labeled_idx),
        num_labeled=int(len(labeled_idx)),
    )
    if jax.process_index() == 0:
        # The exact test-time masks, re-loadable with masks.load_masks (hash-checked).
        masks_lib.save_masks(
            os.path.join(workdir, "eval_masks.npz"),
            eval_masks,
            {"split": config.eval.split, "modalities": list(spec.modality_names)},
        )
        report.write_results(workdir, results, metric=results["primary_metric"])
    ckpt.close()
    return results


def _final_evaluation(config, dataset, predict, params, eval_kw, masks_out) -> dict:
    spec = dataset.spec
    test = {"test": dataset.test, "validation": dataset.validation}[config.eval.split]
    subsets = evaluate.evaluate_subsets(predict, params, test, spec, **eval_kw)
    random_missing, hashes = evaluate.evaluate_random_missing(
        predict,
        params,
        test,
        spec,
        rates=tuple(config.eval.missing_rates),
        seeds=tuple(config.eval.mask_seeds),
        masks_out=masks_out,
        **eval_kw,
    )
    per_modality_rates = tuple(tuple(r) for r in config.eval.get("per_modality_rates", ()))
    if per_modality_rates:
        per_modality, more_hashes = evaluate.evaluate_random_missing(
            predict,
            params,
            test,
            spec,
            rates=per_modality_rates,
            seeds=tuple(config.eval.mask_seeds),
            masks_out=masks_out,
            **eval_kw,
        )
        hashes.update(more_hashes)
    return {
        "dataset": spec.name,
        "variant": spec.variant or spec.name,
        "method": config.method,
        "split": config.eval.split,
        "task": spec.task,
        "primary_metric": evaluate.primary_metric(spec),
        "label_rate": config.data.label_rate,
        "seed": config.seed,
        "mask_seeds": list(config.eval.mask_seeds),
        "mask_hashes": hashes,
        "subset_mask_hash": masks_lib.mask_hash(masks_lib.all_subsets(len(spec.modalities))),
        "commit": report.git_commit(),
        "config": json.loads(config.to_json_best_effort()),
        "subsets": subsets,
        "random_missing": random_missing,
        **({"per_modality_missing": per_modality} if per_modality_rates else {}),
    }
