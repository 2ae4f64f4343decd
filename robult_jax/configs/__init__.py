"""The configs shipped with robult_jax, usable by name from anywhere.

`robult-jax train --config watch:fused` (or `python -m robult_jax.main`) names
the file `watch.py` of this package with the argument "fused"; a path
(`--config my_config.py:fused`) works as ml_collections' config files always
do. A config file of your own, anywhere, can start from these:

    from robult_jax.configs import watch

    def get_config(architecture="paper"):
        config = watch.get_config(architecture)
        config.train.num_steps = 1000
        return config

In a clone of the repository, `configs/` at the root is a link to this folder.
"""

from __future__ import annotations

import importlib.util
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def names() -> tuple[str, ...]:
    """The packaged config names (file stems), sorted."""
    return tuple(
        sorted(f[:-3] for f in os.listdir(DIRECTORY) if f.endswith(".py") and f != "__init__.py")
    )


def resolve(value: str) -> str:
    """`--config`'s value as ml_collections expects it: a file path, `:arg` kept.

    An existing path (or one with a directory or a .py suffix) is returned as
    it is; otherwise `name[:arg]` must be a packaged config.
    """
    path, sep, arg = value.partition(":")
    if os.path.exists(path) or os.sep in path or path.endswith(".py"):
        return value
    if path not in names():
        raise ValueError(
            f"--config {value!r} is neither a file nor a packaged config; the packaged ones are: "
            f"{', '.join(names())} (add :fused for the fused architecture)."
        )
    return os.path.join(DIRECTORY, f"{path}.py") + sep + arg


def resolve_config_flag(argv: list[str]) -> list[str]:
    """`argv` with the value of `--config` / `--config=` resolved by `resolve`."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            out += [arg, resolve(argv[i + 1])]
            i += 2
            continue
        if arg.startswith(("--config=", "-config=")):
            flag, _, value = arg.partition("=")
            arg = f"{flag}={resolve(value)}"
        out.append(arg)
        i += 1
    return out


def load(value: str):
    """The ConfigDict named by `--config`'s value (`resolve`): `get_config(arg)` of the file.

    For the Python API and scripts; the CLI goes through ml_collections' flag.
    """
    path, sep, arg = resolve(value).partition(":")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[: -len(".py")], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*([arg] if sep else []))
