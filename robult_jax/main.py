"""Command line: train, checkpoint, resume and evaluate under missing modalities.

  python -m robult_jax.main --config configs/watch.py --workdir runs/watch
  robult-jax train --config watch:fused --workdir runs/watch_fused
      [--config.sampling.label_rate=0.1 ...]   (any field of the config)
  robult-jax train --config watch --workdir runs/watch --distributed   (on every host)

`--distributed` (or ROBULT_JAX_DISTRIBUTED=1) starts `jax.distributed` first: one
process per host, or per GPU (robult_jax/distributed.py).

Thin on purpose: everything else lives in importable modules.
"""

import os
import sys
import time

if __name__ == "__main__":  # first, before JAX starts: malloc is chosen at start-up
    from robult_jax import host_memory

    host_memory.reexec_with_fast_malloc()

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from robult_jax import checkpointing, cli, configs, distributed, files, interrupts, train

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A config: a file path or the name of a packaged config (watch, watch:fused, ...).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and results (resumed if it exists)."
)
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    None,
    "One process of a multi-process run: calls jax.distributed.initialize() first "
    f"(default: ${distributed.ENV}=1). TPU pods, SLURM and Open MPI need nothing else.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "With --distributed: HOST:PORT of process 0 (default: JAX_COORDINATOR_ADDRESS, or detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: processes in all (default: JAX_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's index (default: JAX_PROCESS_ID)."
)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a misspelt `--config.x.y=...` as one message, not a traceback.

    `--config` takes a path (`configs/watch.py`, `my_config.py:fused`) or the name
    of a config shipped in the package (`watch`, `watch:fused`, `mfeat_supervised`).
    """
    try:
        argv = configs.resolve_config_flag(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # a bad value, an unknown flag, a missing --config
        text = str(e)
        if "Error whilst parsing config file" in text:
            # ml_collections wraps the config file's own error in a traceback: its last line.
            text = "--config: " + [line for line in text.splitlines() if line.strip()][-1]
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
    except (TypeError, ValueError) as e:  # raised by the config file's get_config(arg)
        print(f"error: --config: {e}", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError) as e:
        # ml_collections raises from inside the override; name the override that failed.
        key = str(e).strip("\"'")
        bad = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a]
        print(
            f"error: {', '.join(bad) or 'a --config override'}: {key!r} is not a field of the "
            "config (configs are locked: only existing fields can be set). "
            "configs/watch.py lists every field.",
            file=sys.stderr,
        )
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        # Before anything starts a JAX backend (train's first jax.devices()).
        multi = distributed.requested_by_env() if _DISTRIBUTED.value is None else _DISTRIBUTED.value
        if multi:
            distributed.initialize(
                coordinator_address=_COORDINATOR.value,
                num_processes=_NUM_PROCESSES.value,
                process_id=_PROCESS_ID.value,
            )
        elif any(f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
            raise ValueError(
                "--coordinator_address, --num_processes and --process_id need --distributed."
            )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    # Orbax and tfds log every save and read at INFO; the progress bar and
    # metrics.jsonl already say what happens. `--verbosity=0` brings them back.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    train.enable_compilation_cache()
    startup_s = process_age_s()
    try:
        results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except interrupts.Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(e.exit_status)  # 143 for SIGTERM, 130 for Ctrl-C, as if the signal had killed it
    except checkpointing.CheckpointWriteError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        # Orbax's writer threads are still failing (a full disk): leave without the
        # hundreds of lines their teardown logs after this message.
        os._exit(2)
    except (ValueError, FileNotFoundError, ImportError, train.NonFiniteLossError,
            files.WorkdirBusyError) as e:  # fmt: skip
        # Expected user errors: one clear message, no traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # missing file, read-only or full disk, ...: say which file
        print(f"error: {e}. Files already in {_WORKDIR.value} were left as they were "
              "(every write is atomic).", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if jax.process_index() == 0:  # the process that wrote them; the others may be ahead of it
        print(files.as_path(_WORKDIR.value).joinpath("results.md").read_text())
        print(time_split(startup_s, results))
        print(f"Results, metrics and checkpoints are in {_WORKDIR.value}/")


def process_age_s() -> float | None:
    """Seconds since this process started, interpreter start included (Linux; else None)."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, after the parenthesised command name: start time in clock ticks since boot.
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def time_split(startup_s: float | None, results: dict) -> str:
    """One line: where the invocation's wall time went (results.json's timing_s)."""
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in results["timing_s"].items())
    before = "" if startup_s is None else f"start-up {startup_s:.1f} (interpreter, imports), then "
    return f"Time (s): {before}{results['wall_time_s']:.1f} in train_and_evaluate: {parts}."


def run(argv: list[str] | None = None) -> None:
    """The command line (`argv` as sys.argv: program name first)."""
    cli.accept_jax_flags()
    app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
