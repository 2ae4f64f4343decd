"""Training batches on the devices: each process samples its own rows, ahead of the step.

Shape legend: B the global batch, b = B / processes the rows of one process.

Batch `step` is a pure function of (seed, step) (`sampler.SemiSupervisedSampler`),
so every process knows the whole global batch without exchanging data. Each
process computes only *its* rows, the rows its devices hold under
`P("data")` (`process_rows`): indices and modality-dropout draws are those of
the global batch (cheap), the inputs, the expensive part, are gathered for b
rows only. `jax.make_array_from_process_local_data` then assembles the global
array. The global batch is the same as with one process, so 2 processes x 2
devices train exactly like 1 x 4, and resume needs no iterator state.

`TrainBatches` does this `prefetch` steps ahead in a background thread, so the
input pipeline (reading, gathering, host-to-device copies) overlaps the step
running on the devices. The thread works in groups of consecutive steps
(`group_size`: about `GROUP_ROWS` rows, at least one batch), one transfer and
one handoff a group, so that at small batches it wakes once every few steps
instead of every step: on a two-core machine each wake-up takes a core from
the step's own threads (README "Performance").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Batch arrays: rows split over the "data" axis."""
    return NamedSharding(mesh, P("data"))


def process_rows(mesh: jax.sharding.Mesh, global_size: int) -> slice:
    """The rows of a global batch of `global_size` that this process's devices hold.

    Read off the sharding rather than assumed to be block `process_index()`:
    the mesh may order devices otherwise. They must be one contiguous range
    (`make_array_from_process_local_data` needs that); a 1-D mesh of whole hosts is.
    """
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_size,))
    bounds = sorted({(s[0].start or 0, global_size if s[0].stop is None else s[0].stop)
                     for s in index_map.values()})  # fmt: skip
    start, stop = bounds[0][0], bounds[-1][1]
    covered = sum(b - a for a, b in bounds)
    if covered != stop - start:
        raise ValueError(
            f"This process's devices hold rows {bounds} of the batch, not one contiguous "
            "range; build the mesh with each host's devices next to each other."
        )
    return slice(start, stop)


# Rows a group of the prefetch thread holds, at least one batch: 1024 gives groups
# of 8 steps at B = 128 and single steps from B = 1024 up.
GROUP_ROWS = 1024


def group_size(batch_size: int) -> int:
    """Consecutive steps `TrainBatches` prepares and hands over at once, by default."""
    return max(1, GROUP_ROWS // batch_size)


def local_batch(sampler, step: int, mesh: jax.sharding.Mesh) -> dict:
    """This process's rows of training batch `step` (numpy)."""
    return sampler.batch(step, rows=process_rows(mesh, sampler.batch_size))


def to_devices(local: dict, mesh: jax.sharding.Mesh, global_size: int) -> dict:
    """The global batch, sharded on "data", from this process's rows of it.

    `local` may also be a list of batches (each placed as one batch would be):
    on one process, the whole list is then one transfer.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:  # the whole batch: one transfer for the tree, half the time
        return jax.device_put(local, sharding)

    def put(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(sharding, x, (global_size, *x.shape[1:]))

    return jax.tree.map(put, local)


def device_batch(sampler, step: int, mesh: jax.sharding.Mesh) -> dict:
    """Training batch `step` on the mesh, this process having computed only its rows."""
    return to_devices(local_batch(sampler, step, mesh), mesh, sampler.batch_size)


_DONE = object()  # end of the steps, put by the producer thread


class TrainBatches:
    """`(step, device_batch)` for step in [start_step, stop_step), in order.

    With `prefetch` > 0 a background thread samples batches and puts them on
    the devices ahead of the consumer, `group` consecutive steps at a time
    (default `group_size(batch size)`; one transfer and one handoff a group),
    with at least `prefetch` steps ready beyond the group being consumed;
    0 does it in the consumer's thread, one batch when asked. Either way the
    batches are those of `device_batch(sampler, step, mesh)`: the order and
    the values do not depend on `prefetch`, `group` or timing. An exception
    in the thread is raised in the consumer after the batches made before it
    (the same exception object, its traceback from the thread). `close()` (or
    leaving a `with` block) stops the thread and drops the batches not taken;
    iteration stops there.

    Use:
      with TrainBatches(sampler, mesh, start_step=0, stop_step=n, prefetch=2) as batches:
          for step, batch in batches:
              state, metrics = train_step(state, batch, key)
    """

    def __init__(
        self,
        sampler,
        mesh: jax.sharding.Mesh,
        *,
        start_step: int,
        stop_step: int,
        prefetch: int,
        group: int | None = None,
    ):
        if prefetch < 0:
            raise ValueError(f"prefetch={prefetch} must be >= 0.")
        group = group_size(sampler.batch_size) if group is None else group
        if group < 1:
            raise ValueError(f"group={group} must be >= 1 (steps prepared at a time).")
        self.sampler, self.mesh = sampler, mesh
        self.start_step, self.stop_step, self.prefetch = int(start_step), int(stop_step), prefetch
        self.group = group
        self._rows = process_rows(mesh, sampler.batch_size)
        self._stop = threading.Event()
        self._started = False
        self._thread: threading.Thread | None = None
        # Queued groups: enough for `prefetch` steps (one group at least).
        self._queue: queue.Queue = queue.Queue(maxsize=max(-(-prefetch // group), 1))

    def _make(self, step: int) -> dict:
        local = self.sampler.batch(step, rows=self._rows)
        return to_devices(local, self.mesh, self.sampler.batch_size)

    def _make_group(self, first: int) -> tuple[list[tuple[int, dict]], BaseException | None]:
        """Steps first, first + 1, ... of one group on the devices, and the error that cut it short.

        The batches sampled before an error are kept, so that the consumer
        gets every step before the failing one, as with single steps.
        """
        local, error = [], None
        for step in range(first, min(first + self.group, self.stop_step)):
            if self._stop.is_set():
                break
            try:
                local.append(self.sampler.batch(step, rows=self._rows))
            except BaseException as e:  # noqa: BLE001 - raised after the batches before it
                error = e
                break
        placed = to_devices(local, self.mesh, self.sampler.batch_size) if local else []
        return list(enumerate(placed, start=first)), error

    def _put(self, item) -> bool:
        """Queues `item` unless closed first; False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for first in range(self.start_step, self.stop_step, self.group):
                made, error = self._make_group(first)
                if self._stop.is_set() or (made and not self._put(made)):
                    return
                if error is not None:
                    raise error
            self._put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, who raises it
            self._put(e)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        if self._started:
            raise RuntimeError("TrainBatches can be iterated once; make a new one.")
        self._started = True
        if self.prefetch == 0:
            for step in range(self.start_step, self.stop_step):
                if self._stop.is_set():
                    return
                yield step, self._make(step)
            return
        self._thread = threading.Thread(target=self._produce, name="TrainBatches", daemon=True)
        self._thread.start()
        while True:
            item = self._get()
            if item is _DONE or item is None:
                return
            if isinstance(item, BaseException):
                raise item
            for step_batch in item:
                if self._stop.is_set():  # closed while the consumer held this group
                    return
                yield step_batch

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive():
                    # Closed, or the thread ended: whatever it put last is still queued.
                    try:
                        return self._queue.get_nowait()
                    except queue.Empty:
                        return None

    def close(self) -> None:
        """Stops the thread (waiting for the batch it is making) and drops queued batches."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                self._drain()
                self._thread.join(timeout=0.05)
        self._drain()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def __enter__(self) -> TrainBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
