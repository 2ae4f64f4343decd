"""Files of a workdir: the one atomic writer, and the lock that allows one writer.

Every file a run writes (config, label split, results, reports, masks,
predictions) goes through `atomic_write`, so a crash or a kill never leaves a
half-written file that a later run would read as valid. Checkpoints get the
same guarantee from Orbax (a step is written to a temporary directory and
renamed when complete); metrics.jsonl is appended row by row and cleaned on
resume (`robult_jax.metric_writer`).

`WorkdirLock` makes a second run on a workdir that a live run holds stop at
once, naming the other process. It is an advisory `flock` on
`<workdir>/.lock`: the kernel drops it when its process dies, however it dies
(SIGKILL included), so a lock left by a dead process is simply taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time

from absl import logging

LOCK_NAME = ".lock"


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temp file beside `path`, then renames it over `path`.

    Why: a crash mid-write leaves the old file (or none), never a truncated one.
    The file gets the permissions of a plain `open(path, "w")` (0666 less the
    umask), not mkstemp's owner-only 0600: results are meant to be shared.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir."""


class WorkdirLock:
    """`with WorkdirLock(workdir):` the one process that writes into `workdir`.

    Raises WorkdirBusyError at once (no waiting) if a live process holds it.
    On file systems without `flock` support the run goes on unlocked, with a
    warning: a lock that cannot be trusted is worse than none.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), LOCK_NAME)
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusyError(
                f"{os.path.dirname(self.path)} is in use by {holder}. Two runs on one workdir "
                "would overwrite each other's checkpoints and results: wait for that run to "
                "finish (or stop it), or use another --workdir."
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            logging.warning("%s: file locks unsupported here (%s); running unlocked.", self.path, e)
        os.ftruncate(fd, 0)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.write(fd, json.dumps(record).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            # The file stays: deleting a lock file races with a process opening it.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process (it has not written its details yet)"
    return (
        f"process {info.get('pid')} on host {info.get('host')} (started {info.get('started')}: "
        f"{info.get('command')})"
    )
