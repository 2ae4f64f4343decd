"""Checkpoints with Orbax: periodic saves for resuming, and the best-on-validation one.

Layout inside the workdir:
  checkpoints/<step>/   periodic, the newest `keep` are kept; resume starts here
  best/<step>/          the single best state by validation score
  config.json           the config of the run that owns these checkpoints

Why two managers: retention by recency and retention by metric are different
policies; keeping them apart means a late, worse evaluation can never push the
best state out, and periodic clean-up can never delete it.

Saves are synchronous: the states are small (seconds of CPU at most), and two
managers writing asynchronously at the same step collide on Orbax's
cross-process barriers in multi-host runs ("Barrier _async_write_complete is
already ongoing", seen with 2 processes x 2 CPU devices).

Safety: a run refuses to touch a workdir whose config.json describes a
different experiment (see `check_workdir_config`), so a typo in `--workdir`
cannot overwrite someone's checkpoints.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from robult_jax import report

# Fields that may change between a run and its resumption: they change how long
# or how often things happen, not what is being trained.
RESUMABLE_FIELDS = (
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.progress_bar",
    "data.data_dir",
    "eval.",
)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Raises if `workdir` belongs to a run with a different experiment config."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = _flatten(json.load(f))
    current = _flatten(config_to_dict(config))
    diffs = [
        f"  {k}: saved {saved.get(k)!r}, now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k) and not any(k.startswith(p) for p in RESUMABLE_FIELDS)
    ]
    if diffs:
        raise ValueError(
            f"--workdir {workdir} holds a run with a different config, and resuming it "
            "with this one would mix two experiments:\n"
            + "\n".join(diffs)
            + "\nUse a new --workdir (nothing in the old one was changed)."
        )


def write_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Records the run's config (once, by process 0); written atomically."""
    if jax.process_index() == 0:
        text = json.dumps(config_to_dict(config), indent=2, sort_keys=True)
        report.atomic_write(os.path.join(workdir, "config.json"), text.encode())


class Checkpointer:
    """Periodic + best checkpoints of a pytree state."""

    def __init__(self, workdir: str, *, keep: int):
        def manager(name: str, **options) -> ocp.CheckpointManager:
            return ocp.CheckpointManager(
                os.path.join(os.path.abspath(workdir), name),
                options=ocp.CheckpointManagerOptions(
                    create=True, enable_async_checkpointing=False, **options
                ),
            )

        self._latest = manager("checkpoints", max_to_keep=keep)
        self._best = manager("best", max_to_keep=1, best_fn=lambda m: m["score"], best_mode="max")

    def best_step(self) -> int | None:
        return self._best.best_step()

    def save(self, step: int, state: Any) -> None:
        self._latest.save(step, args=ocp.args.StandardSave(state), force=True)

    def save_best(self, step: int, state: Any, score: float) -> None:
        """Offers `state` as a best candidate; Orbax keeps it only if its score is the top one."""
        self._best.save(
            step, args=ocp.args.StandardSave(state), metrics={"score": float(score)}, force=True
        )

    @staticmethod
    def _restore(manager: ocp.CheckpointManager, step: int | None, abstract: Any) -> Any | None:
        if step is None:
            return None
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, abstract_state: Any) -> Any | None:
        return self._restore(self._latest, self._latest.latest_step(), abstract_state)

    def restore_best(self, abstract_state: Any) -> Any | None:
        return self._restore(self._best, self._best.best_step(), abstract_state)

    def wait_until_finished(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding description of `state`, to restore onto without allocating twice."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
