"""Checkpoints with Orbax: periodic saves for resuming, and the best-on-validation one.

Layout inside the workdir:
  checkpoints/<step>/   periodic, the newest `keep` are kept; resume starts here
  best/<step>/          the single best state by validation score
  config.json           the config of the run that owns these checkpoints
  data.json             the data it was trained on (dataset, variant, content fingerprint)
  corrupt/              checkpoints that failed their checks, set aside (never deleted)

Every checkpoint is saved with a sha256 digest of its state and checked
against it on restore (with a finiteness check): a corrupt or truncated latest
checkpoint is set aside and the previous one is used; a corrupt best one is
never evaluated.

Why two managers: retention by recency and retention by metric are different
policies; keeping them apart means a late, worse evaluation can never push the
best state out, and periodic clean-up can never delete it.

Saves are asynchronous in a single process: Orbax copies the state to host
memory and writes it in a background thread while training goes on (a save
of the watch state costs the training thread ~0.1 s instead of ~0.45 s; its
233 leaves, not its 2.7 MB, set the cost). Multi-process runs save
synchronously: two managers writing asynchronously at the same step collide on
Orbax's cross-process barriers ("Barrier _async_write_complete is already
ongoing", seen with 2 processes x 2 CPU devices). A best checkpoint holds the
step and parameters only, and is written only when the score improves.

Safety: a run refuses to touch a workdir whose config.json or data.json
describes another experiment (`robult_jax.workdir`).
"""

import hashlib
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from robult_jax import files


class CorruptCheckpointError(ValueError):
    """A checkpoint failed to restore, or its contents do not match its digest."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount, ...)."""


def _cause(e: Exception) -> str:
    """The useful part of an Orbax / TensorStore error (which appends its JSON spec)."""
    text = str(e).split(" [tensorstore_spec")[0]
    for known in ("No space left on device", "Permission denied", "Read-only file system"):
        if known in text:
            return known
    return text[:400]


def _host_array(x: Any) -> np.ndarray:
    """The whole value of a leaf on this host, also when other processes hold parts of it."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding.is_fully_replicated:  # any local shard holds all of it
            return np.asarray(x.addressable_shards[0].data)
        # parallel.shard_params across processes: gather the other hosts' slices (a
        # collective, so every process digests the same leaves in the same order).
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def state_digest(state: Any) -> str:
    """sha256 of every leaf's shape, dtype and bytes, in tree order.

    Saved beside each checkpoint and checked on restore: a flipped byte in a
    parameter file restores without error into finite, wrong values, and only
    a digest tells them apart.
    """
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        a = np.ascontiguousarray(_host_array(leaf))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check_finite(state: Any) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        a = _host_array(leaf)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise CorruptCheckpointError(f"non-finite values in {jax.tree_util.keystr(path)}")


def _quiet_orphaned_io() -> None:
    """Silences the reads and writes a failed restore or save leaves behind.

    When one array of a checkpoint fails to read (or write: a full disk), Orbax
    closes its event loop while TensorStore still completes the other arrays;
    each completion then reports "RuntimeError: Event loop is closed" as an
    unraisable exception, a screenful of tracebacks after the one clear message.
    Only that exact error is dropped; every other one goes to the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_robult_jax", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            previous(unraisable)

    hook._robult_jax = True
    sys.unraisablehook = hook


class Checkpointer:
    """Periodic + best checkpoints of a pytree state, each saved with its digest.

    `read_only=True` (predict): nothing is created, and a corrupt checkpoint is
    reported but left where it is.
    """

    def __init__(self, workdir: str | os.PathLike, *, keep: int, read_only: bool = False):
        self._workdir = files.absolute(workdir)  # an epath.Path: Orbax takes it as it is
        self._read_only = read_only
        _quiet_orphaned_io()

        def manager(name: str, **options) -> ocp.CheckpointManager:
            return ocp.CheckpointManager(
                self._workdir / name,
                options=ocp.CheckpointManagerOptions(
                    create=not read_only,
                    enable_async_checkpointing=jax.process_count() == 1,
                    **options,
                ),
            )

        self._latest = manager("checkpoints", max_to_keep=keep)
        self._best_known: float | None = None
        self._best = manager("best", max_to_keep=1, best_fn=lambda m: m["score"], best_mode="max")

    def best_step(self) -> int | None:
        return self._best.best_step()

    def latest_path(self) -> str:
        return os.fspath(self._workdir / "checkpoints" / str(self._latest.latest_step()))

    @staticmethod
    def _args(state: Any) -> ocp.args.Composite:
        digest = {"sha256": state_digest(state)}
        return ocp.args.Composite(
            state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave(digest)
        )

    def _writing(self, what: str, fn, *args, **kwargs):
        """Runs a save (or waits for one): its errors become one CheckpointWriteError.

        With asynchronous saves, a failed write surfaces at the next save or wait.
        """
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise CheckpointWriteError(
                f"could not write {what} in {self._workdir} ({_cause(e)}); complete "
                "checkpoints were left as they were. Fix the cause (e.g. free disk space) and "
                "run the same command to resume."
            ) from e

    def save(self, step: int, state: Any) -> None:
        args = self._args(state)
        self._writing(f"checkpoint {step}", self._latest.save, step, args=args, force=True)

    def save_best(self, step: int, state: Any, score: float) -> None:
        """Saves `state`'s step and parameters if `score` beats the best so far.

        Only what evaluation and `predict` read is kept (no optimizer state: a
        third of the size), and a candidate that does not improve is not written
        at all. A tie keeps the earlier step, as a replay after a resume would.
        """
        best_score = self._best_score()
        if best_score is not None and not score > best_score:
            return
        args, metrics = self._args(best_part(state)), {"score": float(score)}
        self._writing(
            f"best checkpoint {step}", self._best.save, step, args=args, metrics=metrics, force=True
        )
        self._best_known = float(score)

    def _best_score(self) -> float | None:
        """The score of the best candidate saved so far (read from disk once)."""
        if self._best_known is None and self._best.best_step() is not None:
            self._best.wait_until_finished()  # its metrics file is written with it
            self._best_known = float(self._best.metrics(self._best.best_step())["score"])
        return self._best_known

    def _load(self, name: str, step: int, abstract: Any) -> Any:
        """The verified state of checkpoint `name/step`; CorruptCheckpointError otherwise."""
        manager = self._latest if name == "checkpoints" else self._best
        where = self._workdir / name / str(step)
        if (where / "default").is_dir():
            raise ValueError(
                f"{where} was written by an older robult_jax without a digest; train again "
                "in a new --workdir (nothing was changed)."
            )
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), digest=ocp.args.JsonRestore()
                ),
            )
            state, saved = restored["state"], restored["digest"]["sha256"]
        except Exception as e:  # a truncated or garbled file fails in many ways
            _quiet_orphaned_io()
            reason = f"{type(e).__name__}: {_cause(e)}"
            raise CorruptCheckpointError(f"{where} does not restore ({reason})") from e
        if state_digest(state) != saved:
            raise CorruptCheckpointError(f"{where} does not match the digest saved with it")
        try:
            _check_finite(state)
        except CorruptCheckpointError as e:
            raise CorruptCheckpointError(f"{where} holds {e}") from None
        return state

    def _set_aside(self, name: str, step: int) -> str:
        """Moves a corrupt checkpoint to <workdir>/corrupt/ (kept for inspection, not deleted)."""
        src = self._workdir / name / str(step)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self._workdir / "corrupt" / f"{name}-{step}-{stamp}"
        if jax.process_index() == 0:
            files.move(src, dest)
        multihost_utils.sync_global_devices(f"robult_jax set aside {name}/{step}")
        (self._latest if name == "checkpoints" else self._best).reload()
        self._best_known = None
        return os.fspath(dest)

    def restore_latest(self, abstract_state: Any) -> Any | None:
        """The newest periodic checkpoint that passes its checks; a corrupt one is set
        aside with a warning and the previous one is tried (None: none left)."""
        for step in sorted(self._latest.all_steps(), reverse=True):
            try:
                return self._load("checkpoints", step, abstract_state)
            except CorruptCheckpointError as e:
                if self._read_only:
                    raise
                dest = self._set_aside("checkpoints", step)
                logging.warning("%s; moved to %s, resuming from the previous checkpoint.", e, dest)
        return None

    def restore_best(self, abstract_state: Any) -> dict | None:
        """{"step", "params"} of the best checkpoint, verified; a corrupt one is never returned."""
        step = self._best.best_step()
        if step is None:
            return None
        try:
            return self._load("best", step, best_part(abstract_state))
        except CorruptCheckpointError as e:
            if self._read_only:
                raise
            dest = self._set_aside("best", step)
            raise CorruptCheckpointError(
                f"{e}; it was moved to {dest} and nothing was evaluated or written. To rebuild it "
                f"exactly, delete {self._workdir / 'checkpoints'} and run the same "
                "command again (training replays bit-identically), or train in a new --workdir."
            ) from None

    def discard_best_after(self, step: int) -> None:
        """Deletes best candidates newer than `step`, the step a resume starts from.

        Why: after a kill between an evaluation and the next periodic
        checkpoint, the best manager already holds a step that the resume
        replays; the replay re-creates it bit-identically (every random choice
        is a function of seed and step), and any candidate it had displaced was
        worse than it, so nothing is lost.
        """
        for s in self._best.all_steps():
            if s > step:
                self._best.delete(s)
        self._best_known = None

    def wait_until_finished(self) -> None:
        self._writing("checkpoints", self._latest.wait_until_finished)
        self._writing("checkpoints", self._best.wait_until_finished)

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def best_part(state: Any) -> dict:
    """What a best checkpoint holds of a TrainState (or of its abstract shapes)."""
    return {"step": state.step, "params": state.params}


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding description of `state`, to restore onto without allocating twice."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
