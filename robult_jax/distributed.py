"""Multi-host start-up: `jax.distributed.initialize()`, before anything else touches JAX.

Asked for by `robult-jax train --distributed` or `ROBULT_JAX_DISTRIBUTED=1`. On
TPU pods, SLURM and Open MPI clusters JAX finds the coordinator, the number of
processes and this process's index itself; elsewhere (several processes on
one machine, a hand-made cluster) they come from the flags
`--coordinator_address --num_processes --process_id`, or from the
environment: JAX_COORDINATOR_ADDRESS (read by JAX), JAX_NUM_PROCESSES and
JAX_PROCESS_ID (read here). Process 0 hosts the coordinator.

Why "before anything else": `initialize` must run before the first JAX call
that starts a backend (`jax.devices()`, any computation); after it
`jax.devices()` lists every process's devices and `jax.local_devices()` this
process's.
"""

from __future__ import annotations

import os

ENV = "ROBULT_JAX_DISTRIBUTED"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def requested_by_env() -> bool:
    """Whether ROBULT_JAX_DISTRIBUTED asks for a multi-process run ("1", "true", ...)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}; use 1 (multi-process) or 0.")
    return value in _TRUE


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} must be an integer.") from None


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """`jax.distributed.initialize` with these settings, the environment's where None.

    Raises ValueError (one line, for the command line) when only some of the
    three are known and JAX cannot detect the rest.
    """
    import jax

    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num_processes={num_processes} must be >= 1.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must lie in [0, {num_processes}).")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except (ValueError, RuntimeError) as e:
        # JAX says which setting it could not detect; add where to give it.
        raise ValueError(
            f"jax.distributed.initialize failed: {e}. Outside TPU pods, SLURM and Open MPI, "
            "give --coordinator_address=HOST:PORT (process 0's host), --num_processes and "
            "--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)."
        ) from None
