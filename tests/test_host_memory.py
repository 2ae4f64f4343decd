"""robult_jax.host_memory: when the commands restart with huge pages, and that they do."""

import os
import subprocess
import sys
import textwrap

import pytest

from robult_jax import host_memory as hm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNABLE = "glibc.malloc.hugetlb=1"


@pytest.mark.parametrize(
    "environ, glibc, mode, expected",
    [
        ({}, (2, 36), "madvise", TUNABLE),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 36), "madvise",
         f"glibc.malloc.arena_max=2:{TUNABLE}"),  # the user's tunables are kept
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", None),  # theirs wins
        ({"GLIBC_TUNABLES": TUNABLE}, (2, 36), "madvise", None),  # already re-executed
        ({hm.OPT_OUT: "0"}, (2, 36), "madvise", None),
        ({hm.OPT_OUT: "1"}, (2, 36), "madvise", TUNABLE),
        ({}, (2, 34), "madvise", None),  # glibc without the tunable
        ({}, None, "madvise", None),  # musl, macOS
        ({}, (2, 36), "always", None),  # the kernel already backs such mappings
        ({}, (2, 36), "never", None),
        ({}, (2, 36), None, None),  # no THP in this kernel
    ],
)  # fmt: skip
def test_restart_only_where_the_tunable_helps(environ, glibc, mode, expected):
    assert hm.tunables_with_hugepages(environ, glibc, mode) == expected


def test_thp_mode_is_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert hm.thp_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert hm.thp_mode(str(path)) == "always"
    assert hm.thp_mode(str(tmp_path / "missing")) is None
    (tmp_path / "order").write_text("9\n")
    assert hm.page_reporting_order(str(tmp_path / "order")) == "9"
    assert hm.page_reporting_order(str(tmp_path / "missing")) is None
    assert hm.hugepages_on({"GLIBC_TUNABLES": f"a=1:{TUNABLE}"})
    assert not hm.hugepages_on({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})


def _restarts_here() -> bool:
    return (
        sys.platform == "linux"
        and hm.tunables_with_hugepages({}, hm.glibc_version(), hm.thp_mode()) is not None
    )


needs_restart = pytest.mark.skipif(
    not _restarts_here(), reason="needs Linux, glibc >= 2.35 and transparent huge pages = madvise"
)

_SCRIPT = textwrap.dedent("""
    import os, sys
    print("start", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], flush=True)
    from robult_jax import host_memory
    host_memory.reexec_with_hugepages()
    print("after", os.getpid(), host_memory.hugepages_on(), flush=True)
""")


def _run(args, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hm.OPT_OUT)}
    env.update(env_extra, PYTHONPATH=ROOT)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


@needs_restart
def test_the_process_restarts_itself_once_with_the_tunable_and_its_arguments():
    lines = _run([sys.executable, "-c", _SCRIPT, "--flag", "x y"], {})
    first, second, after = lines
    pid = first.split()[1]
    assert first == f"start {pid} None ['--flag', 'x y']"
    assert second == f"start {pid} {TUNABLE} ['--flag', 'x y']"  # same pid, same arguments
    assert after == f"after {pid} True"


@needs_restart
def test_the_opt_out_and_the_users_own_setting_are_respected():
    (_, after) = _run([sys.executable, "-c", _SCRIPT], {hm.OPT_OUT: "0"})
    assert after.endswith(" False")
    (first, after) = _run(
        [sys.executable, "-c", _SCRIPT], {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    )
    assert "glibc.malloc.hugetlb=0" in first and after.endswith(" False")


@needs_restart
@pytest.mark.parametrize("command", [["-m", "robult_jax.main"], ["-m", "robult_jax", "train"]])
def test_the_train_command_runs_with_huge_pages(tmp_path, command):
    """The config file is imported by the command itself: it sees the restarted process."""
    config = tmp_path / "probe.py"
    config.write_text(
        textwrap.dedent("""
        import os, sys
        print("config sees", os.environ.get("GLIBC_TUNABLES"), flush=True)
        sys.exit(0)
    """)
    )
    lines = _run(
        [sys.executable, *command, f"--config={config}", f"--workdir={tmp_path / 'w'}"], {}
    )
    assert lines == [f"config sees {TUNABLE}"]
    assert not (tmp_path / "w").exists()
