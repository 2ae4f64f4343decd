"""Files of a workdir: every read and write goes through `etils.epath`.

Paths are whatever the user gave (a str, a `pathlib.Path`, an `epath.Path`),
local or remote (`gs://bucket/run`, `s3://...`); `as_path` turns them into an
`epath.Path`, whose methods (`read_text`, `exists`, `iterdir`, `mkdir`, ...)
are the only way the package reads or lists a workdir. What must be safe
against a kill lives here:

- `atomic_write`: every file a run writes (config, label split, results,
  reports, masks, predictions). A crash or a kill never leaves a half-written
  file that a later run would read as valid. Local: a temp file beside the
  target, fsync, `os.replace`. `gs://` and `s3://`: one direct object write
  (an object store publishes an object only once its upload is complete, so a
  reader sees the old object or the whole new one; a rename there is a copy
  plus a delete, twice the traffic and no more atomic). Any other remote
  scheme: a temp object beside the target, then `epath`'s `replace`.
- `Appender`: metrics.jsonl, appended row by row (see there).
- `move`: a corrupt checkpoint set aside (an atomic rename locally, a copy
  then a delete on an object store).
- `WorkdirLock`: the one-writer lock (below).

Checkpoints get the same guarantee from Orbax (a step is written to a
temporary directory and renamed, or on GCS marked complete, when done).

`WorkdirLock` makes a second run on a workdir that a live run holds stop at
once, naming the other process. It is an advisory `flock` on
`<workdir>/.lock`: the kernel drops it when its process dies, however it dies
(SIGKILL included), so a lock left by a dead process is simply taken over.
A remote workdir has no `flock`: the run warns once and goes on unlocked (two
runs on one remote workdir are then the user's to avoid).
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
import uuid
from typing import Any

from absl import logging
from etils import epath

LOCK_NAME = ".lock"

# Object stores whose single-object writes are atomic and whose renames are copies.
_DIRECT_WRITE_SCHEMES = ("gs://", "s3://")


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` (str, os.PathLike or epath.Path; local or `gs://...`) as an epath.Path."""
    return epath.Path(path)


def is_local(path: str | os.PathLike) -> bool:
    """True for a path on a local (POSIX) file system, False for `gs://...` and other URIs."""
    return "://" not in os.fspath(path)


def absolute(path: str | os.PathLike) -> epath.Path:
    """`as_path`, made absolute if local (Orbax needs it); a URI is absolute already."""
    return epath.Path(os.path.abspath(os.fspath(path))) if is_local(path) else epath.Path(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(as_path(path).read_text())


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` so that a reader never sees a partial file.

    Local: a temp file beside `path`, fsync, then a rename over `path` (a crash
    mid-write leaves the old file, or none). The file gets the permissions of a
    plain `open(path, "w")` (0666 less the umask), not mkstemp's owner-only
    0600: results are meant to be shared. Remote: see the module docstring.
    """
    if is_local(path):
        _atomic_write_local(os.fspath(path), data)
        return
    data = bytes(data)  # a bad payload fails here, before anything is opened
    target = as_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.fspath(target).startswith(_DIRECT_WRITE_SCHEMES):
        target.write_bytes(data)
        return
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}.part"
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_write_local(path: str, data: bytes) -> None:
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


class Appender:
    """Appends bytes to one workdir file (metrics.jsonl), each append durable on return.

    Local: each `append` opens the file in append mode and writes; a kill can
    cut the last line short, which the reader drops (`metric_writer`).
    Remote: object stores cannot append, so the file's bytes are kept in
    memory (`initial`: what it holds now; read from it when None) and every
    append rewrites the whole object with `atomic_write`. A kill loses nothing
    that `append` returned from, as locally; the price is the file's size per
    append (a metrics log of thousands of rows is well under a megabyte).
    """

    def __init__(self, path: str | os.PathLike, initial: bytes | None = None):
        self.path = as_path(path)
        self._content: bytearray | None = None
        if not is_local(path):
            if initial is None:
                initial = self.path.read_bytes() if self.path.exists() else b""
            self._content = bytearray(initial)

    def append(self, data: bytes) -> None:
        if self._content is None:
            with self.path.open("ab") as f:
                f.write(data)
        else:
            self._content += data
            atomic_write(self.path, bytes(self._content))


def move(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Moves file or directory `src` to `dest` (not there yet), creating dest's parent.

    Local: one atomic rename. Remote: epath's replace, which on an object store
    copies every object then deletes the originals (a kill in between leaves
    both, never neither).
    """
    dest = as_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    as_path(src).replace(dest)


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir."""


_warned_unlocked = False


class WorkdirLock:
    """`with WorkdirLock(workdir):` the one process that writes into `workdir`.

    Raises WorkdirBusyError at once (no waiting) if a live process holds it.
    On file systems without `flock` support, and on remote workdirs (`gs://`,
    which have no locks at all), the run goes on unlocked with a warning (once
    per process for remote ones): a lock that cannot be trusted is worse than none.
    """

    def __init__(self, workdir: str | os.PathLike):
        if is_local(workdir):
            self.path = os.path.join(os.fspath(workdir), LOCK_NAME)
        else:
            self.path = os.fspath(as_path(workdir) / LOCK_NAME)
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        if not is_local(self.path):
            global _warned_unlocked
            if not _warned_unlocked:
                logging.warning(
                    "%s is on a remote file system, which has no file locks: running "
                    "unlocked (do not start a second run on this workdir while one runs).",
                    os.path.dirname(self.path),
                )
                _warned_unlocked = True
            return self
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
