"""One command: `robult-jax <command> [flags]` (also `python -m robult_jax ...`).

  robult-jax train   --config watch --workdir runs/watch     train, resume, evaluate
  robult-jax train   ... --distributed                        one process of a multi-host run
  robult-jax predict --workdir runs/watch --input new.npz --output preds.npz
  robult-jax compare --dataset watch --methods robult,supervised --workdir runs/cmp
  robult-jax report runs/watch                                 tables and figures again
  robult-jax profile runs/watch                                its trace's ops, by time

`robult-jax <command> --help` lists a command's flags. Each command is the
module of the same role (`robult_jax.main`, `robult_jax.predict`); only the
chosen one is imported, because both define the absl flag --workdir.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, what it does)
COMMANDS = {
    "train": (
        "robult_jax.main",
        "train (or resume) a config, then evaluate under missing modalities",
    ),
    "predict": ("robult_jax.predict", "predict with a trained workdir on new .npz / .npy inputs"),
    "compare": ("robult_jax.compare", "compare methods over seeds, each run keyed by its config"),
    "report": ("robult_jax.report", "rewrite a run's tables and figures from its results.json"),
    "export": ("robult_jax.export", "write a run's best parameters alone (Flax msgpack)"),
    "profile": ("robult_jax.profiling", "the XLA ops of a run's profiler trace, by time"),
}


ABSL_COMMANDS = ("train", "predict")  # absl flags; the others parse with argparse
# Commands that run XLA programs on the host's CPU: they restart once with mimalloc or
# glibc's huge pages for XLA's scratch memory where that helps (robult_jax/host_memory.py).
FAST_MALLOC_COMMANDS = ("train", "predict", "compare")


def accept_jax_flags() -> None:
    """JAX's own options as flags of the absl commands (`--jax_platforms=cpu`, ...), once."""
    import jax

    if not getattr(jax.config, "use_absl", False):
        jax.config.config_with_absl()


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return (
        "usage: robult-jax <command> [flags]   (robult-jax <command> --help for its flags)\n\n"
        "commands:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}.\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    if name in FAST_MALLOC_COMMANDS:  # before the command's module imports JAX
        from robult_jax import host_memory

        host_memory.reexec_with_fast_malloc()
    module = importlib.import_module(COMMANDS[name][0])
    if name in ABSL_COMMANDS and any(a in ("-h", "--help", "-help") for a in argv[2:]):
        # absl's own --help describes the program's __main__ module, not this command.
        from absl import flags

        print(f"robult-jax {name}: {module.__doc__}")
        print(flags.FLAGS.module_help(module.__name__))
        sys.exit(0)
    module.run([f"robult-jax {name}", *argv[2:]])


if __name__ == "__main__":
    main()
