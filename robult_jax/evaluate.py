"""Evaluation under missing modalities (docs/method.md section 5).

Two protocols on a split:
  (a) every non-empty subset of modalities, the same subset for every sample;
  (b) per-sample random missingness at each rate in `eval.missing_rates`
      (at least one modality kept), one mask per seed in `eval.mask_seeds`;
      the hash of every mask is stored with the results.

A row whose effective mask (the condition's pattern AND the data's own mask)
has no modality present is not scored: the model would predict from nothing.
It is left out of that condition's metrics; a condition that leaves no row at
all (a subset whose modalities no row has; a rate where any mask seed leaves
no row) is left out of the results. Both are logged (once per distinct
message) and counted in `excluded_out` when given. On complete data, as in
the default datasets, nothing is ever left out.

Shape legend: N samples, B batch, M modalities, C outputs.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from robult_jax import masks as masks_lib
from robult_jax import metrics as metrics_lib
from robult_jax import parallel
from robult_jax.data import pipeline, sampler
from robult_jax.data.types import Split
from robult_jax.tasks import Task

PredictFn = Callable[[Any, dict, jax.Array], Any]  # logits_BxC, or a dict with embeddings
# (params, inputs, own_mask_BxM, masks_BxKxM) -> logits_BxKxC: `make_predict_many_fn`.
PredictManyFn = Callable[[Any, dict, jax.Array, jax.Array], jax.Array]
# Conditions (masks) evaluated together in one pass over a split: K of
# `make_predict_many_fn`. A condition list is cut into chunks of at most this
# many (the last one padded by repeating its last mask), so that a run
# compiles one program per distinct chunk size.
MAX_MASKS_PER_PASS = 8
# Messages already logged: validation runs every train.eval_every steps on the same
# split, and its exclusions would otherwise repeat the same line at every one.
_LOGGED: set[str] = set()


def scored_rows(split: Split, mask_NxM: np.ndarray) -> np.ndarray:
    """(N,) True where the pattern AND the data's own mask keep some modality present."""
    return (np.asarray(mask_NxM, bool) & split.mask).any(axis=1)


def _report_excluded(
    what: str, n: int, excluded: dict[str, int], excluded_out: dict[str, int] | None
) -> None:
    """Logs (once) and records the rows left out of each condition of `excluded`."""
    excluded = {k: v for k, v in excluded.items() if v}
    if not excluded:
        return
    if excluded_out is not None:
        excluded_out.update(excluded)
    parts = [
        f"{k}: {v} rows" if v < n else f"{k}: every row (condition left out)"
        for k, v in excluded.items()
    ]
    line = (
        f"evaluation ({what}, {n} rows): rows with no modality present under the condition "
        "(pattern AND the data's own mask) are not scored; " + "; ".join(parts) + "."
    )
    if line not in _LOGGED:
        _LOGGED.add(line)
        logging.warning(line)


# The embeddings `make_predict_fn(..., embeddings=True)` adds: output name -> model key.
EMBEDDINGS = {"s": "s_BxP", "z": "z_BxMxP", "u": "u_BxMxU"}


def make_predict_fn(model: nn.Module, mesh: jax.sharding.Mesh, *, embeddings: bool = False):
    """`predict(params, inputs, mask_BxM) -> logits_BxC`, jitted once per batch shape.

    With `embeddings=True` it returns {"logits": ..., "s": (B, P), "z": (B, M, P),
    "u": (B, M, U)} instead (s the fused embedding, z_i and u_i the shared and
    unique parts of each modality; zeros for an absent modality).
    The outputs come back replicated on every device of `mesh`: the batch is
    sharded across processes in multi-host runs, and each process needs every
    row to compute metrics (a process can only read its own devices' arrays).
    """

    def predict(params, inputs: dict, mask_BxM: jax.Array):
        out = model.apply({"params": params}, inputs, mask_BxM, train=False)
        if not embeddings:
            return out["logits_BxC"]
        return {"logits": out["logits_BxC"], **{k: out[v] for k, v in EMBEDDINGS.items()}}

    return jax.jit(predict, out_shardings=parallel.replicated(mesh))


def make_predict_many_fn(model: nn.Module, mesh: jax.sharding.Mesh) -> PredictManyFn:
    """`predict_many(params, inputs, own_BxM, masks_BxKxM) -> logits_BxKxC`, jitted.

    The logits of one batch under K masks (each within the data's own mask
    `own_BxM`), with the encoders, most of the model's cost, run once: an
    encoder sees one modality of one row, so its output does not depend on
    the mask (`models._Base.encode_or_reuse`); the rest runs K times, batched.
    Equal to K calls of `make_predict_fn`'s `predict` to float32 rounding
    (tests/test_evaluate_many.py). Outputs come back replicated, as there.
    """

    def predict_many(params, inputs: dict, own_BxM: jax.Array, masks_BxKxM: jax.Array):
        variables = {"params": params}
        encoded = model.apply(variables, inputs, own_BxM, train=False, encoders_only=True)

        def one(mask_BxM):
            out = model.apply(variables, inputs, mask_BxM, train=False, encoded=encoded)
            return out["logits_BxC"]

        return jax.vmap(one, in_axes=1, out_axes=1)(masks_BxKxM)

    return jax.jit(predict_many, out_shardings=parallel.replicated(mesh))


def predict_split_many(
    predict_many: PredictManyFn,
    params: Any,
    split: Split,
    masks_KxNxM: np.ndarray,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """`predict_split`'s logits under each of K masks (ANDed with the data's own) -> (K, N, C).

    One pass over the split: each batch is read once (its inputs under the
    data's own mask) and `predict_many` scores it under the K masks. Batches
    and padding are `predict_split`'s; padding rows are all-present under
    every mask.
    """
    masks_KxNxM = np.asarray(masks_KxNxM, bool)
    k, n, m = masks_KxNxM.shape
    if (n, m) != split.mask.shape:
        raise ValueError(f"eval masks have shape {masks_KxNxM.shape}, expected (K, {n}, {m}).")
    masks_NxKxM = np.swapaxes(masks_KxNxM & split.mask[None], 0, 1)
    rows = pipeline.process_rows(mesh, batch_size)
    batches = sampler.iterate_eval_batches(split, batch_size, rows=rows)
    outputs = []
    for start, batch in zip(range(0, n, batch_size), batches, strict=True):
        masks_BxKxM = masks_NxKxM[start : start + batch_size]
        pad = np.ones((batch_size - len(masks_BxKxM), k, m), bool)
        masks_BxKxM = np.concatenate([masks_BxKxM, pad])
        local = {"inputs": batch["inputs"], "own": batch["mask"][rows], "masks": masks_BxKxM[rows]}
        placed = pipeline.to_devices(local, mesh, batch_size)
        out = predict_many(params, placed["inputs"], placed["own"], placed["masks"])
        outputs.append(np.asarray(jax.device_get(out))[batch["valid"]])
    return np.swapaxes(np.concatenate(outputs, 0), 0, 1)


def _predict_conditions(
    predict_many: PredictManyFn, params: Any, split: Split, masks: list[np.ndarray], **kw
) -> list[np.ndarray]:
    """Logits (N, C) of `split` under each (N, M) mask of `masks`, MAX_MASKS_PER_PASS at a time."""
    logits = []
    for start in range(0, len(masks), MAX_MASKS_PER_PASS):
        chunk = masks[start : start + MAX_MASKS_PER_PASS]
        width = min(len(masks), MAX_MASKS_PER_PASS)  # one chunk size per call: one compile
        padded = np.stack(chunk + [chunk[-1]] * (width - len(chunk)))
        logits.extend(predict_split_many(predict_many, params, split, padded, **kw)[: len(chunk)])
    return logits


def predict_split(
    predict: PredictFn,
    params: Any,
    split: Split,
    mask_NxM: np.ndarray,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """`predict`'s outputs for every row of `split` under `mask_NxM` (ANDed with its own mask).

    The last batch is padded to `batch_size` (`sampler.iterate_eval_batches`), so
    evaluation compiles exactly once; absent modalities get zero inputs. Each
    process gathers the inputs of its own rows of every batch only
    (`pipeline.process_rows`, as in training); `predict`'s outputs come back
    replicated, so every process has every row for the metrics.
    """
    rows = pipeline.process_rows(mesh, batch_size)
    outputs = []
    for batch in sampler.iterate_eval_batches(split, batch_size, mask=mask_NxM, rows=rows):
        local = {"inputs": batch["inputs"], "mask": batch["mask"][rows]}
        placed = pipeline.to_devices(local, mesh, batch_size)
        out = jax.device_get(predict(params, placed["inputs"], placed["mask"]))
        outputs.append(jax.tree.map(lambda x, v=batch["valid"]: np.asarray(x)[v], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs, 0), *outputs)


def validation_score(results_by_subset: dict[str, dict], task: Task) -> float:
    """Model-selection score (higher is better): the task's primary metric averaged
    over every modality subset, negated when lower is better (MAE).

    Why every subset: selecting on the full-modality score alone would favour
    models that lean on one modality; averaging over subsets selects for
    robustness, and it only ever looks at the validation split. Subsets left
    out (no row has any of their modalities) are not in the mean.
    """
    if not results_by_subset:
        raise ValueError("validation_score: no modality subset has a row to score.")
    score = float(np.mean([r[task.primary_metric] for r in results_by_subset.values()]))
    return score if task.higher_is_better else -score


def evaluate_subsets(
    predict_many: PredictManyFn,
    params: Any,
    split: Split,
    task: Task,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    excluded_out: dict[str, int] | None = None,
) -> dict[str, dict]:
    """Metrics of the task for every non-empty subset of modalities, keyed by subset name.

    Rows with no modality of the subset present are not scored, and a subset
    with no row left is left out (module docstring); `excluded_out` receives
    {subset name: rows not scored} for the subsets with any. `predict_many`
    (`make_predict_many_fn`) scores up to MAX_MASKS_PER_PASS subsets in one
    pass over the split.
    """
    names = list(split.inputs)
    n = len(split)
    excluded, scored = {}, []
    for row in masks_lib.all_subsets(len(names)):
        mask_NxM = np.broadcast_to(row, (n, len(names)))
        name = masks_lib.subset_name(row, names)
        keep_N = scored_rows(split, mask_NxM)
        excluded[name] = int(n - keep_N.sum())
        if keep_N.any():
            scored.append((name, mask_NxM, keep_N))
    kw = dict(batch_size=batch_size, mesh=mesh)
    logits = _predict_conditions(predict_many, params, split, [c[1] for c in scored], **kw)
    results = {
        name: task.metrics(logits_NxC[keep_N], split.labels[keep_N])
        for (name, _, keep_N), logits_NxC in zip(scored, logits, strict=True)
    }
    _report_excluded("modality subsets", n, excluded, excluded_out)
    return results


def evaluate_random_missing(
    predict_many: PredictManyFn,
    params: Any,
    split: Split,
    task: Task,
    *,
    rates: tuple[float, ...] | tuple[tuple[float, ...], ...],
    seeds: tuple[int, ...],
    batch_size: int,
    mesh: jax.sharding.Mesh,
    masks_out: dict[str, np.ndarray] | None = None,
    excluded_out: dict[str, int] | None = None,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Metrics per rate (mean/std over mask seeds) and the hash of every mask used.

    `rates` holds floats (every modality absent with that probability) or
    tuples of one rate per modality (test-time patterns that differ from the
    training ones). Masks are also stored in `masks_out` when given. Rows with
    no modality present are not scored; a rate where some seed leaves no row
    is left out, so that every rate reported averages the same seeds
    (`excluded_out`: {"rate=r/seed=s": rows not scored}). The masks of all
    rates and seeds are scored MAX_MASKS_PER_PASS at a time (`predict_many`).
    """
    names = list(split.inputs)
    n = len(split)
    hashes, excluded, scored_by_rate = {}, {}, {}
    for rate in rates:
        if isinstance(rate, tuple | list):
            key = ",".join(f"{name}={r:g}" for name, r in zip(names, rate, strict=True))
            draw = functools.partial(masks_lib.per_modality_missing, len(split), rate)
        else:
            key = f"{rate:g}"
            draw = functools.partial(masks_lib.random_missing, len(split), len(names), rate)
        scored = []
        for seed in seeds:
            mask_NxM = draw(seed)
            mask_name = f"rate={key}/seed={seed}"
            hashes[mask_name] = masks_lib.mask_hash(mask_NxM)
            if masks_out is not None:
                masks_out[mask_name] = mask_NxM
            keep_N = scored_rows(split, mask_NxM)
            excluded[mask_name] = int(n - keep_N.sum())
            if keep_N.any():
                scored.append((mask_NxM, keep_N))
        if len(scored) == len(seeds):  # else some seed left no row: the rate is left out
            scored_by_rate[key] = scored
    # Every rate's masks in one list: MAX_MASKS_PER_PASS conditions per pass
    # over the split, whatever the number of seeds.
    conditions = [c for scored in scored_by_rate.values() for c in scored]
    kw = dict(batch_size=batch_size, mesh=mesh)
    logits = iter(
        _predict_conditions(predict_many, params, split, [c[0] for c in conditions], **kw)
    )
    results = {}
    for key, scored in scored_by_rate.items():
        per_seed = [
            task.metrics(next(logits)[keep_N], split.labels[keep_N]) for _, keep_N in scored
        ]
        results[key] = {}
        for k in per_seed[0]:
            values = [r[k] for r in per_seed]
            mean, std = metrics_lib.mean_std(values)
            results[key][k] = {"mean": mean, "std": std, "values": values}
    what = "random missingness; a rate is left out when one of its seeds leaves no row"
    _report_excluded(what, n, excluded, excluded_out)
    return results, hashes


def evaluate_protocols(
    predict_many: PredictManyFn,
    params: Any,
    split: Split,
    task: Task,
    eval_config,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    masks_out: dict[str, np.ndarray] | None = None,
) -> dict:
    """Both protocols on `split` as `eval_config` (`config.EvalConfig`) asks.

    Every subset of modalities, then random missingness at
    `eval_config.missing_rates` and, if set, at its `per_modality_rates`,
    over `eval_config.mask_seeds`. Returns the results' entries: "subsets",
    "random_missing", "per_modality_missing" (only when asked), "mask_hashes"
    and "excluded_rows" (rows not scored, by condition, where any were).
    """
    excluded: dict[str, int] = {}  # rows not scored: no modality present under a condition
    kw = dict(batch_size=batch_size, mesh=mesh, excluded_out=excluded)
    out = {"subsets": evaluate_subsets(predict_many, params, split, task, **kw)}
    missing = {"random_missing": eval_config.missing_rates}
    if eval_config.per_modality_rates:
        missing["per_modality_missing"] = eval_config.per_modality_rates
    hashes: dict[str, str] = {}
    for name, rates in missing.items():
        out[name], more = evaluate_random_missing(
            predict_many, params, split, task, rates=rates, seeds=eval_config.mask_seeds,
            masks_out=masks_out, **kw,
        )  # fmt: skip
        hashes.update(more)
    out["mask_hashes"] = hashes
    out["excluded_rows"] = {k: v for k, v in excluded.items() if v}
    return out
