"""What produced a result: the versions of the software and the commit of the code.

Recorded in every results.json (`software`, `commit`) by `robult_jax.train`.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess


def software_versions() -> dict[str, str]:
    """Versions of robult_jax and of the libraries a result depends on ("unknown" if absent)."""
    out = {}
    for name in ("robult_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"  # e.g. robult_jax run from a clone, not installed
    return out


def git_commit(path: str | os.PathLike | None = None) -> str:
    """Short HEAD hash of the repository holding `path` (default: this package).

    Adds "+dirty" when tracked files have uncommitted changes (untracked files,
    such as run outputs, do not count); "unknown" outside git or without git.
    """
    cwd = os.fspath(path) if path is not None else os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", cwd, *args], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
