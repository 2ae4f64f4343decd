"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

Resume is the default: if `<workdir>/checkpoints` holds a state, training goes
on from its step. Every random choice (label split, data order, modality
dropout, parameter init, dropout) is a function of the seed and the step, so a
resumed run produces exactly the states an uninterrupted one would.
"""

import contextlib
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robult_jax import (
    checkpointing,
    evaluate,
    files,
    interrupts,
    models,
    objective,
    parallel,
    profiling,
    provenance,
    report,
    tasks,
)
from robult_jax import config as config_lib
from robult_jax import masks as masks_lib
from robult_jax import workdir as workdir_lib
from robult_jax.data import load_dataset, pipeline, sampler
from robult_jax.metric_writer import MetricWriter, Progress


def enable_compilation_cache() -> None:
    """Persists compiled programs across runs (seeds, methods and resumes share them).

    XLA compilation dominates short CPU runs (about 30 s for the watch model);
    with the cache a second run of the same shapes starts training at once.
    Directory: $ROBULT_JAX_COMPILE_CACHE or ~/.cache/robult_jax/jax_cache.
    """
    path = os.environ.get("ROBULT_JAX_COMPILE_CACHE", "~/.cache/robult_jax/jax_cache")
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    # 0.1 s, not JAX's 1 s: the evaluation function (~0.5 s to compile) is cached too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite; names the step."""


def create_state(
    cfg: config_lib.Config, model, tx, spec, key: jax.Array, batch: dict
) -> objective.TrainState:
    params = model.init({"params": key}, batch["inputs"], batch["mask"], train=False)["params"]
    num_classes = spec.num_outputs
    return objective.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        centroids_CxP=jnp.zeros((num_classes, cfg.model.embed_dim), jnp.float32),
        centroid_valid_C=jnp.zeros((num_classes,), jnp.float32),
    )


def init_state(
    cfg: config_lib.Config, model, tx, spec, key: jax.Array, batch: dict
) -> objective.TrainState:
    """`create_state`, compiled. Initialisation runs once, so XLA's slow optimisation
    passes buy nothing here; level 0 halves its compile time on CPU (12 s -> 6 s
    for the watch model)."""
    return jax.jit(
        lambda k: create_state(cfg, model, tx, spec, k, batch),
        compiler_options={"xla_backend_optimization_level": 0},
    )(key)


def make_sampler(
    cfg: config_lib.Config, split, labeled_idx: np.ndarray
) -> sampler.SemiSupervisedSampler:
    """The training batches of a run: `cfg.sampling`'s sizes and dropout, `cfg.seed`."""
    return sampler.SemiSupervisedSampler(
        split,
        labeled_idx,
        labeled_batch=cfg.sampling.labeled_batch,
        unlabeled_batch=cfg.sampling.unlabeled_batch,
        modality_dropout=cfg.sampling.dropout(),
        seed=cfg.seed,
    )


def check_batch_sizes(cfg: config_lib.Config, num_devices: int | None = None) -> None:
    """Every global batch must split evenly over the mesh's devices (default: all)."""
    for field, size in (
        ("sampling.labeled_batch", cfg.sampling.labeled_batch),
        ("sampling.unlabeled_batch", cfg.sampling.unlabeled_batch),
        ("eval.batch_size", cfg.eval.batch_size),
    ):
        parallel.check_batch_size(size, field, num_devices)


class PhaseTimes:
    """Wall seconds of one invocation by phase: results.json's "timing_s".

    `with phases("checkpoint"): ...` adds the block's time to that phase.
    Device work runs asynchronously, so a phase holds what the host waited
    for in it: the train steps' compute shows in "train" (metrics are
    fetched at log, eval and checkpoint steps before anything else is done
    with the state), a checkpoint's in "checkpoint" only for what the save
    holds the training thread (Orbax writes in the background).
    """

    PHASES = (
        "setup", "first_step", "train", "validation", "checkpoint", "profile", "test_evaluation"
    )  # fmt: skip

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(self.PHASES, 0.0)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def summary(self) -> dict[str, float]:
        """Every phase, rounded to 10 ms; "train" is the training loop less its other phases."""
        return {k: round(v, 2) for k, v in self.seconds.items()}


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    pause_at_step: int | None = None,
    devices: list | None = None,
) -> dict | None:
    """Trains (or resumes), keeps the best validation checkpoint, evaluates it on test.

    `config` is the ml_collections config of a file in configs/; it is
    validated once, here, before anything is loaded or written. Everything a
    resume reads (config, data, label split) is checked before anything is
    written; one process at a time may hold `workdir` (`files.WorkdirLock`);
    SIGTERM / SIGINT stop after the current step with a checkpoint of it
    (`interrupts.Interrupted`).
    `pause_at_step`: stop after that step with a checkpoint and no evaluation
    (returns None), e.g. to fit a time-limited session; the next call resumes.
    `devices`: the devices of the data-parallel mesh (default: all).
    """
    phases = PhaseTimes()
    cfg = config_lib.from_config_dict(config)
    check_batch_sizes(cfg, None if devices is None else len(devices))
    dataset = load_dataset(cfg.data)
    config_lib.check_against_dataset(cfg, dataset.spec)
    files.as_path(workdir).mkdir(parents=True, exist_ok=True)
    # Only process 0 writes the workdir's own files (Orbax coordinates the rest).
    lock = files.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    # Multi-process runs leave SIGTERM to JAX: every process must stop at the same step.
    with lock, interrupts.StopSignals(enabled=jax.process_count() == 1) as signals:
        return _train_and_evaluate(
            cfg, config, dataset, workdir, signals, phases,
            pause_at_step=pause_at_step, devices=devices,
        )  # fmt: skip


def _train_and_evaluate(cfg, config, dataset, workdir, signals, phases, *, pause_at_step, devices):
    spec = dataset.spec
    task = tasks.get(spec.task)
    record = workdir_lib.data_record(dataset)
    # Read-only checks first: a mismatch must leave the workdir as it was.
    workdir_lib.check_workdir_config(workdir, config)
    workdir_lib.check_workdir_data(workdir, record)
    labeled_idx, new_split = workdir_lib.label_split(cfg.sampling, dataset, workdir, record)

    mesh = parallel.make_mesh(devices)
    train_sampler = make_sampler(cfg, dataset.train, labeled_idx)
    model = models.build_model(cfg.model, spec)
    num_steps = cfg.train.num_steps
    tx = objective.make_optimizer(cfg.optim, num_steps)

    # Named random streams, split once from the seed.
    init_key, train_key = jax.random.split(jax.random.key(cfg.seed))
    # Parameters depend on the batch's shapes only: one row, the same in every process.
    state = init_state(cfg, model, tx, spec, init_key, train_sampler.batch(0, rows=slice(0, 1)))
    state = parallel.place_state(state, mesh, cfg.parallel)  # replicated, or FSDP-sharded
    abstract_state = checkpointing.abstract_like(state)

    ckpt = checkpointing.Checkpointer(workdir, keep=cfg.train.keep_checkpoints)
    restored = ckpt.restore_latest(abstract_state)
    if restored is not None:
        state = restored
    start_step = int(state.step)
    # An attempt killed after an evaluation left best candidates and metrics rows
    # of steps this run replays; the replay writes them again, identically.
    ckpt.discard_best_after(start_step)
    workdir_lib.write_workdir_config(workdir, config)
    workdir_lib.write_workdir_data(workdir, record)
    if jax.process_index() == 0:
        if new_split:
            sampler.save_label_split(
                files.as_path(workdir) / "label_split.json",
                labeled_idx,
                rate=cfg.sampling.label_rate,
                seed=cfg.sampling.label_seed,
                dataset=record["name"],
                fingerprint=record["fingerprint"],
            )
        workdir_lib.write_dataset_artifacts(workdir, dataset)
    writer = MetricWriter(workdir, resume_step=start_step, tensorboard=cfg.train.tensorboard)
    writer.write_hparams(workdir_lib.config_to_dict(config))

    schedule = objective.make_schedule(cfg.optim, num_steps)
    train_step = parallel.jit_train_step(  # keeps the state's placement (out_shardings)
        objective.make_train_step(
            model, tx, cfg.loss, task, schedule, parallel_config=cfg.parallel, mesh=mesh
        ),
        state,
        mesh,
    )
    predict = evaluate.make_predict_many_fn(model, mesh)  # every condition of a pass at once
    eval_kw = dict(batch_size=cfg.eval.batch_size, mesh=mesh)

    show_progress = cfg.train.progress_bar and start_step < num_steps
    progress = None
    timed_from = None  # (time, step) after the first, compiling, step of this process
    stop = num_steps if pause_at_step is None else min(num_steps, pause_at_step)
    # Each process samples its rows of each batch, `cfg.train.prefetch` steps ahead.
    batches = pipeline.TrainBatches(
        train_sampler, mesh, start_step=start_step, stop_step=stop, prefetch=cfg.train.prefetch
    )
    # A jax.profiler trace of train.profile_steps steps, if asked (robult_jax.profiling).
    trace = profiling.StepTrace(
        workdir, first=cfg.train.profile_start, count=cfg.train.profile_steps,
        run_start=start_step, run_stop=stop,
    )  # fmt: skip
    phases.seconds["setup"] = phases.elapsed()
    loop_started = time.perf_counter()
    with signals.deferred(), contextlib.closing(writer), batches, contextlib.closing(trace):
        for step, batch in batches:
            trace.begin(step, state)  # waits for the steps before the trace
            state, metrics = train_step(state, batch, train_key)
            trace.end(step, (state, metrics))
            done = step + 1
            if timed_from is None:
                # The first step compiles; steps/s and the progress bar's ETA start after it.
                jax.block_until_ready(metrics)
                phases.seconds["first_step"] = time.perf_counter() - loop_started  # batch 1 too
                timed_from = (time.time(), done)
                progress = Progress(num_steps, done, show_progress)
            log = done % cfg.train.log_every == 0 or done == num_steps
            evaluate_now = done % cfg.train.eval_every == 0 or done == num_steps
            save = done % cfg.train.checkpoint_every == 0 or done in (num_steps, stop)
            row = {}  # one metrics.jsonl row per step
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
                row.update({f"train/{k}": v for k, v in metrics.items()})
                elapsed, timed_steps = time.time() - timed_from[0], done - timed_from[1]
                if timed_steps > 0:
                    row["train/steps_per_sec"] = timed_steps / max(elapsed, 1e-9)
                    timed_from = (time.time(), done)
                progress.update(0, loss=f"{float(metrics['loss']):.3f}")
            if evaluate_now:
                with phases("validation"):
                    val = evaluate.evaluate_subsets(
                        predict, state.params, dataset.validation, task, **eval_kw
                    )
                    score = evaluate.validation_score(val, task)
                row.update({f"eval/val/{s}/{k}": v for s, r in val.items() for k, v in r.items()})
                row["eval/val/score"] = score
                with phases("checkpoint"):
                    ckpt.save_best(done, state, score)
            if row:
                writer.write(done, row)
            if save:
                with phases("checkpoint"):
                    ckpt.save(done, state)
            if signals.requested:  # SIGTERM / Ctrl-C: keep this step, then stop
                if not save:
                    ckpt.save(done, state)
                ckpt.wait_until_finished()
                progress.close()
                path = ckpt.latest_path()
                ckpt.close()
                raise signals.stopped(done, path)
            if step > start_step:  # the bar was created at the first step, already counting it
                progress.update(1)
    if progress is not None:
        progress.close()
    with phases("checkpoint"):
        ckpt.wait_until_finished()
    loop_s = time.perf_counter() - loop_started
    phases.seconds["profile"] = trace.export_s
    phases.seconds["train"] = loop_s - sum(
        phases.seconds[k] for k in ("first_step", "validation", "checkpoint", "profile")
    )
    if stop < num_steps:
        ckpt.close()
        return None

    with phases("checkpoint"):
        best = ckpt.restore_best(abstract_state)
        best_step = ckpt.best_step()
    if best is None:
        if num_steps > 0:  # the last step always evaluates, so a best must exist
            ckpt.close()
            raise checkpointing.CorruptCheckpointError(
                f"{workdir}/best holds no checkpoint although training ran; to rebuild it, "
                f"delete {workdir}/checkpoints and run the same command again (training "
                "replays bit-identically), or train in a new --workdir."
            )
        best, best_step = checkpointing.best_part(state), int(state.step)  # num_steps == 0
    eval_masks: dict[str, np.ndarray] = {}
    with phases("test_evaluation"):
        results = _final_evaluation(
            cfg, config, dataset, task, predict, best["params"], eval_kw, eval_masks
        )
    results.update(
        software=provenance.software_versions(),
        devices={
            "platform": jax.devices()[0].platform,
            "kind": jax.devices()[0].device_kind,
            "count": jax.device_count(),
            "processes": jax.process_count(),
        },
        num_parameters=int(sum(np.size(x) for x in jax.tree.leaves(best["params"]))),
        # Of this invocation only (a resumed run's earlier attempts are not in it), from
        # loading the dataset to here (writing the reports comes after); by phase in
        # timing_s (PhaseTimes; "train" is the steps after the first).
        wall_time_s=round(phases.elapsed(), 1),
        timing_s=phases.summary(),
        best_step=int(best_step),
        label_split_hash=sampler.indices_sha256(labeled_idx),
        num_labeled=int(len(labeled_idx)),
        data_fingerprint=record["fingerprint"],
        data_cleaning=record["cleaning"],
    )
    if jax.process_index() == 0:
        # The exact test-time masks, re-loadable with masks.load_masks (hash-checked).
        masks_lib.save_masks(
            files.as_path(workdir) / "eval_masks.npz",
            eval_masks,
            {"split": cfg.eval.split, "modalities": list(spec.modality_names)},
        )
        report.write_results(workdir, results, metric=results["primary_metric"])
    ckpt.close()
    return results


def _final_evaluation(cfg, config, dataset, task, predict, params, eval_kw, masks_out) -> dict:
    spec = dataset.spec
    test = {"test": dataset.test, "validation": dataset.validation}[cfg.eval.split]
    protocols = evaluate.evaluate_protocols(
        predict, params, test, task, cfg.eval, masks_out=masks_out, **eval_kw
    )
    return {
        "dataset": spec.name,
        "variant": spec.variant or spec.name,
        "method": cfg.method,
        "architecture": cfg.model.architecture,
        "split": cfg.eval.split,
        "task": spec.task,
        "primary_metric": task.primary_metric,
        "label_rate": cfg.sampling.label_rate,
        "seed": cfg.seed,
        "mask_seeds": list(cfg.eval.mask_seeds),
        "mask_hashes": protocols["mask_hashes"],
        "subset_mask_hash": masks_lib.mask_hash(masks_lib.all_subsets(len(spec.modalities))),
        "commit": provenance.git_commit(),
        "config": workdir_lib.config_to_dict(config),
        "excluded_rows": protocols["excluded_rows"],
        "subsets": protocols["subsets"],
        "random_missing": protocols["random_missing"],
        **{k: protocols[k] for k in ("per_modality_missing",) if k in protocols},
    }
