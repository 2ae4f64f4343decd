"""Device mesh, batch sharding, state placement: the same code on 1 CPU, 8 TPU cores, many hosts.

Why `AxisType.Auto`: since JAX 0.9 `jax.make_mesh` defaults to explicit axes,
under which `s_BxP @ z_BxP.T` with both operands sharded on the batch axis is a
`ShardingTypeError`. The contrastive loss must see the *global* batch (negatives
must not shrink when the batch is split), so we let `jax.jit` insert the
all-gather: batch arrays are sharded on "data", parameters replicated, and the
compiler gathers `z` for the similarity matrix. tests/test_train.py checks that
the losses and gradients on a batch sharded over 4 devices equal those on one.

Two step forms (`parallel.form`, built by `objective.make_train_step`):
"jit" (the default) writes the step for one device and lets the compiler
partition it; "shard_map" writes it per device with explicit collectives
(`jax.shard_map`: all-gathers for the contrastive candidates, psums for every
batch mean and for the gradients), for when the partitioning must be spelt
out. Both give the same step (tests/test_parallel_forms.py, 1 to 8 devices).

Why no `jax.pmap` path: pmap is in maintenance mode since JAX 0.8 (its old
implementation was removed in 0.10) and `jax.shard_map` is its replacement.
shard_map composes with `jax.jit`, `NamedSharding` and sharded parameters (a
pmap step would need its own replicated-with-a-leading-device-axis state,
its own checkpoint layout and its own input pipeline), so a pmap form would
only add a third, deprecated, copy of the step.

Parameter sharding (`parallel.shard_params`, FSDP-style): `state_shardings`
splits every parameter and optimizer moment of at least
`parallel.shard_min_size` elements along its largest axis divisible by the
device count; the rest, the step and the centroids stay replicated. The
jitted step keeps that placement (`jit_train_step` fixes its out_shardings);
the jit form lets the compiler gather each parameter where it is used, the
shard_map form all-gathers them itself.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"  # the mesh's one axis: batch rows, and the split axis of sharded parameters


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(size: int, field: str, num_devices: int | None = None) -> None:
    """The global batch is split evenly over the mesh's devices (default: all of them);
    say which field to fix if it is not."""
    n = jax.device_count() if num_devices is None else num_devices
    if size % n:
        raise ValueError(
            f"{field}={size} is not divisible by the number of devices ({n}); "
            f"choose a multiple of {n}."
        )


def shard_batch(batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Places a *global* numpy batch on the mesh, each process contributing its rows.

    Every process computes the same global batch (sampling is a pure function
    of seed and step, and cheap), then hands over only the rows of its own
    devices, so multi-host runs need no data exchange to stay consistent.
    """
    sharding = NamedSharding(mesh, P(AXIS))
    nproc, pid = jax.process_count(), jax.process_index()
    if nproc == 1:  # one transfer for the whole tree: 0.17 ms a step at B = 128, not 0.31
        return jax.device_put(batch, sharding)

    def put(x: np.ndarray) -> jax.Array:
        rows = x.shape[0] // nproc
        local = x[pid * rows : (pid + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return jax.tree.map(put, batch)


def replicate(tree, mesh: jax.sharding.Mesh):
    """Puts a pytree (parameters, optimiser state) on every device."""
    return jax.device_put(tree, replicated(mesh))


# ----------------------------------------------------------------------------- parameter sharding


def param_spec(shape: tuple[int, ...], num_devices: int, min_size: int) -> P:
    """FSDP rule for one array: split its largest axis divisible by `num_devices` on "data".

    Arrays of fewer than `min_size` elements, or with no such axis, stay
    replicated (P()): for them the gather would cost more than the memory saved.

    >>> param_spec((512, 256), 4, 65536), param_spec((30, 4096), 4, 65536)
    (P('data',), P(None, 'data'))
    >>> param_spec((64, 64), 4, 65536), param_spec((5, 65537), 4, 1)
    (P(), P())
    """
    if num_devices == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    axes = [a for a, d in enumerate(shape) if d % num_devices == 0]
    if not axes:
        return P()
    axis = max(axes, key=lambda a: shape[a])  # the first of equally large axes
    return P(*(None,) * axis, AXIS)


def param_specs(tree: Any, num_devices: int, *, shard_params: bool, min_size: int) -> Any:
    """`param_spec` of every leaf of `tree` (arrays or ShapeDtypeStructs); all P() when off."""
    if not shard_params:
        return jax.tree.map(lambda _: P(), tree)
    return jax.tree.map(lambda x: param_spec(np.shape(x), num_devices, min_size), tree)


def state_shardings(state: Any, mesh: jax.sharding.Mesh, parallel_config) -> Any:
    """NamedShardings of a TrainState: parameters and optimizer state by `param_specs`
    (Adam's moments have their parameter's shape, hence its spec; its step counts are
    scalars, replicated), everything else replicated."""
    specs = lambda tree: param_specs(
        tree,
        mesh.size,
        shard_params=parallel_config.shard_params,
        min_size=parallel_config.shard_min_size,
    )
    named = lambda spec: NamedSharding(mesh, spec)
    whole = jax.tree.map(lambda _: P(), state)
    whole = whole.replace(params=specs(state.params), opt_state=specs(state.opt_state))
    return jax.tree.map(named, whole, is_leaf=lambda x: isinstance(x, P))


def place_state(state: Any, mesh: jax.sharding.Mesh, parallel_config) -> Any:
    """Puts a TrainState on the mesh: replicated, or FSDP-sharded with `parallel.shard_params`."""
    return jax.device_put(state, state_shardings(state, mesh, parallel_config))


def jit_train_step(step: Callable, state: Any, mesh: jax.sharding.Mesh) -> Callable:
    """`jax.jit(step, donate_argnums=(0,))` that returns the state in `state`'s placement.

    Without out_shardings the compiler may choose any layout for the new
    state, e.g. replicate sharded parameters (silently giving back the memory
    FSDP saved) or shard replicated ones; fixing them to the input's keeps
    the placement step after step, and the donated buffers reusable. Metrics
    come back replicated, readable from every process.
    """
    shardings = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(step, out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))
