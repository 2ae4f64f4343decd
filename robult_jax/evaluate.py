"""Evaluation under missing modalities (docs/method.md section 5).

Two protocols on a split:
  (a) every non-empty subset of modalities, the same subset for every sample;
  (b) per-sample random missingness at each rate in `eval.missing_rates`
      (at least one modality kept), one mask per seed in `eval.mask_seeds`;
      the hash of every mask is stored with the results.

Shape legend: N samples, B batch, M modalities, C outputs.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from robult_jax import masks as masks_lib
from robult_jax import metrics as metrics_lib
from robult_jax import parallel
from robult_jax.data import sampler
from robult_jax.data.types import Split
from robult_jax.tasks import Task

PredictFn = Callable[[Any, dict, jax.Array], jax.Array]


def make_predict_fn(model: nn.Module, mesh: jax.sharding.Mesh) -> PredictFn:
    """`predict(params, inputs, mask_BxM) -> logits_BxC`, jitted once per batch shape.

    The logits come back replicated on every device of `mesh`: the batch is
    sharded across processes in multi-host runs, and each process needs every
    row to compute metrics (a process can only read its own devices' arrays).
    """

    def predict(params, inputs: dict, mask_BxM: jax.Array) -> jax.Array:
        out = model.apply({"params": params}, inputs, mask_BxM, train=False)
        return out["logits_BxC"]

    return jax.jit(predict, out_shardings=parallel.replicated(mesh))


def predict_split(
    predict: PredictFn,
    params: Any,
    split: Split,
    mask_NxM: np.ndarray,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """Logits for every row of `split` under `mask_NxM` (ANDed with the data's own mask).

    The last batch is padded to `batch_size` (`sampler.iterate_eval_batches`), so
    evaluation compiles exactly once; absent modalities get zero inputs.
    """
    outputs = []
    for batch in sampler.iterate_eval_batches(split, batch_size, mask=mask_NxM):
        sharded = parallel.shard_batch({"inputs": batch["inputs"], "mask": batch["mask"]}, mesh)
        logits = predict(params, sharded["inputs"], sharded["mask"])
        outputs.append(np.asarray(jax.device_get(logits))[batch["valid"]])
    return np.concatenate(outputs, 0)


def validation_score(results_by_subset: dict[str, dict], task: Task) -> float:
    """Model-selection score (higher is better): the task's primary metric averaged
    over every modality subset, negated when lower is better (MAE).

    Why every subset: selecting on the full-modality score alone would favour
    models that lean on one modality; averaging over subsets selects for
    robustness, and it only ever looks at the validation split.
    """
    score = float(np.mean([r[task.primary_metric] for r in results_by_subset.values()]))
    return score if task.higher_is_better else -score


def evaluate_subsets(
    predict: PredictFn,
    params: Any,
    split: Split,
    task: Task,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, dict]:
    """Metrics of the task for every non-empty subset of modalities, keyed by subset name."""
    names = list(split.inputs)
    n = len(split)
    results = {}
    for row in masks_lib.all_subsets(len(names)):
        mask_NxM = np.broadcast_to(row, (n, len(names)))
        logits = predict_split(predict, params, split, mask_NxM, batch_size=batch_size, mesh=mesh)
        results[masks_lib.subset_name(row, names)] = task.metrics(logits, split.labels)
    return results


def evaluate_random_missing(
    predict: PredictFn,
    params: Any,
    split: Split,
    task: Task,
    *,
    rates: tuple[float, ...] | tuple[tuple[float, ...], ...],
    seeds: tuple[int, ...],
    batch_size: int,
    mesh: jax.sharding.Mesh,
    masks_out: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Metrics per rate (mean/std over mask seeds) and the hash of every mask used.

    `rates` holds floats (every modality absent with that probability) or
    tuples of one rate per modality (test-time patterns that differ from the
    training ones). Masks are also stored in `masks_out` when given.
    """
    names = list(split.inputs)
    results, hashes = {}, {}
    for rate in rates:
        if isinstance(rate, tuple | list):
            key = ",".join(f"{name}={r:g}" for name, r in zip(names, rate, strict=True))
            draw = functools.partial(masks_lib.per_modality_missing, len(split), rate)
        else:
            key = f"{rate:g}"
            draw = functools.partial(masks_lib.random_missing, len(split), len(names), rate)
        per_seed = []
        for seed in seeds:
            mask_NxM = draw(seed)
            mask_name = f"rate={key}/seed={seed}"
            hashes[mask_name] = masks_lib.mask_hash(mask_NxM)
            if masks_out is not None:
                masks_out[mask_name] = mask_NxM
            logits = predict_split(
                predict, params, split, mask_NxM, batch_size=batch_size, mesh=mesh
            )
            per_seed.append(task.metrics(logits, split.labels))
        results[key] = {}
        for k in per_seed[0]:
            values = [r[k] for r in per_seed]
            mean, std = metrics_lib.mean_std(values)
            results[key][k] = {"mean": mean, "std": std, "values": values}
    return results, hashes
