"""The atomic writer and the one-writer workdir lock (with real processes)."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from robult_jax import files


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    """Not mkstemp's owner-only 0600: results and predictions are meant to be shared."""
    old = os.umask(0o022)
    try:
        files.atomic_write(tmp_path / "out.json", b"{}")
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / "out.json").st_mode & 0o777
    assert mode == os.stat(tmp_path / "plain.json").st_mode & 0o777 == 0o644
    assert (tmp_path / "out.json").read_bytes() == b"{}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    files.atomic_write(path, b"old")
    with pytest.raises(TypeError):
        files.atomic_write(path, object())  # the write itself fails, as on a full disk
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from robult_jax import files
    with files.WorkdirLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _start_holder(workdir):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_stops_at_once_naming_the_first(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        start = time.time()
        with pytest.raises(files.WorkdirBusyError, match=f"in use by process {holder.pid} on host"):
            with files.WorkdirLock(tmp_path):
                pass
        assert time.time() - start < 1  # no waiting
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = _start_holder(tmp_path)
    holder.kill()  # SIGKILL: no clean-up code runs
    holder.wait()
    assert (tmp_path / files.LOCK_NAME).exists()
    with files.WorkdirLock(tmp_path) as lock:
        assert str(os.getpid()) in (tmp_path / files.LOCK_NAME).read_text()
        assert lock.path == os.path.join(tmp_path, files.LOCK_NAME)
    with files.WorkdirLock(tmp_path):  # released on exit, re-entrant by the next run
        pass
