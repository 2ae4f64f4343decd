"""Device mesh and batch sharding: the same code on 1 CPU, 8 TPU cores or many hosts.

Why `AxisType.Auto`: since JAX 0.9 `jax.make_mesh` defaults to explicit axes,
under which `s_BxP @ z_BxP.T` with both operands sharded on the batch axis is a
`ShardingTypeError`. The contrastive loss must see the *global* batch (negatives
must not shrink when the batch is split), so we let `jax.jit` insert the
all-gather: batch arrays are sharded on "data", parameters replicated, and the
compiler gathers `z` for the similarity matrix. tests/test_train.py checks that
the losses and gradients on a batch sharded over 4 devices equal those on one.
"""

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(size: int, field: str) -> None:
    """The global batch is split evenly over devices; say which field to fix if it is not."""
    n = jax.device_count()
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
    sharding = NamedSharding(mesh, P("data"))
    nproc, pid = jax.process_count(), jax.process_index()

    def put(x: np.ndarray) -> jax.Array:
        rows = x.shape[0] // nproc
        local = x[pid * rows : (pid + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return jax.tree.map(put, batch)


def replicate(tree, mesh: jax.sharding.Mesh):
    """Puts a pytree (parameters, optimiser state) on every device."""
    return jax.device_put(tree, replicated(mesh))
