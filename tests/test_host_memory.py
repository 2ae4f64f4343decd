"""robult_jax.host_memory: when the commands restart with mimalloc or huge pages, and do."""

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


MI = "/site/cmeel.prefix/lib/libmimalloc.so"
GLIBC = dict(glibc=(2, 36), mode="madvise")


@pytest.mark.parametrize(
    "environ, mimalloc, expected",
    [
        ({}, MI, {"LD_PRELOAD": MI, "MIMALLOC_PURGE_DELAY": "-1"}),  # auto, installed
        ({hm.CHOICE: "auto"}, MI, {"LD_PRELOAD": MI, "MIMALLOC_PURGE_DELAY": "-1"}),
        ({}, None, {"GLIBC_TUNABLES": TUNABLE}),  # auto, not installed: glibc's remedy
        ({hm.CHOICE: "glibc"}, MI, {"GLIBC_TUNABLES": TUNABLE}),
        ({hm.CHOICE: "off"}, MI, None),
        ({hm.CHOICE: " OFF "}, MI, None),  # case and spaces do not matter
        ({hm.OPT_OUT: "0"}, MI, None),  # the older switch
        ({"MIMALLOC_PURGE_DELAY": "50"}, MI, {"LD_PRELOAD": MI}),  # the user's setting wins
        ({"LD_PRELOAD": MI}, MI, None),  # already re-executed (or preloaded by the user)
        ({"LD_PRELOAD": "/x/libmimalloc.so.2"}, None, None),  # their own mimalloc
        # auto leaves another preload (an allocator, say) alone: only glibc's tunable
        ({"LD_PRELOAD": "/x/libjemalloc.so.2"}, MI, {"GLIBC_TUNABLES": TUNABLE}),
        # an explicit choice puts mimalloc first
        ({hm.CHOICE: "mimalloc", "LD_PRELOAD": "/x/a.so:/x/b.so"}, MI,
         {"LD_PRELOAD": f"{MI} /x/a.so /x/b.so", "MIMALLOC_PURGE_DELAY": "-1"}),
    ],
)  # fmt: skip
def test_which_allocator_the_restart_chooses(environ, mimalloc, expected):
    looked_up = []

    def find():
        looked_up.append(True)
        return mimalloc

    assert hm.reexec_environment(environ, find_mimalloc=find, **GLIBC) == expected
    if "LD_PRELOAD" in environ and hm.CHOICE not in environ:
        assert not looked_up  # restarted already, or another preload: no 20 ms look-up
    if environ.get(hm.CHOICE, "").strip().lower() in ("glibc", "off"):
        assert not looked_up


@pytest.mark.parametrize(
    "environ, match",
    [
        ({hm.CHOICE: "jemalloc"}, "ROBULT_JAX_MALLOC='jemalloc' is not one of auto, mimalloc"),
        ({hm.CHOICE: "mimalloc"}, "pip install cmeel-mimalloc"),  # asked for, not installed
    ],
)
def test_bad_allocator_settings_say_what_to_do(environ, match):
    with pytest.raises(ValueError, match=match):
        hm.reexec_environment(environ, find_mimalloc=lambda: None, **GLIBC)


def test_a_bad_setting_stops_the_command_before_it_starts(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, **{hm.CHOICE: "fast"})
    proc = subprocess.run(
        [sys.executable, "-m", "robult_jax.main", "--config=watch", f"--workdir={tmp_path / 'w'}"],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: ROBULT_JAX_MALLOC='fast' is not one of" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_the_installed_wheel_is_found_and_recognised(tmp_path):
    path = hm.mimalloc_library()
    if path is None:
        pytest.skip("cmeel-mimalloc is not installed on this platform")
    assert os.path.isfile(path) and os.path.basename(path).startswith("libmimalloc.so")
    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f01 r-xp 0 08:01 1 {path}\n")
    assert hm.malloc_in_use(str(maps)) == "mimalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n")
    assert hm.malloc_in_use(str(maps)) in ("glibc", "glibc+hugetlb")


def _glibc_restarts_here() -> bool:
    return (
        sys.platform == "linux"
        and hm.tunables_with_hugepages({}, hm.glibc_version(), hm.thp_mode()) is not None
    )


needs_glibc_restart = pytest.mark.skipif(
    not _glibc_restarts_here(),
    reason="needs Linux, glibc >= 2.35 and transparent huge pages = madvise",
)
needs_mimalloc = pytest.mark.skipif(
    sys.platform != "linux" or hm.mimalloc_library() is None,
    reason="needs Linux and the cmeel-mimalloc wheel",
)

_SCRIPT = textwrap.dedent("""
    import os, sys
    env = [os.environ.get(k) for k in ("GLIBC_TUNABLES", "LD_PRELOAD", "MIMALLOC_PURGE_DELAY")]
    print("start", os.getpid(), *env, sys.argv[1:], flush=True)
    from robult_jax import host_memory
    host_memory.reexec_with_fast_malloc()
    print("after", os.getpid(), host_memory.malloc_in_use(), flush=True)
""")


def _run(args, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in hm.ENVIRONMENT}
    env.update(env_extra, PYTHONPATH=ROOT)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


@needs_mimalloc
def test_the_process_restarts_itself_once_with_mimalloc_and_its_arguments():
    lines = _run([sys.executable, "-c", _SCRIPT, "--flag", "x y"], {})
    first, second, after = lines
    pid = first.split()[1]
    assert first == f"start {pid} None None None ['--flag', 'x y']"
    lib = hm.mimalloc_library()
    assert second == f"start {pid} None {lib} -1 ['--flag', 'x y']"  # same pid, same arguments
    assert after == f"after {pid} mimalloc"  # loaded, not only named


@needs_glibc_restart
def test_the_process_restarts_itself_once_with_the_tunable_and_its_arguments():
    lines = _run([sys.executable, "-c", _SCRIPT, "--flag", "x y"], {hm.CHOICE: "glibc"})
    first, second, after = lines
    pid = first.split()[1]
    assert first == f"start {pid} None None None ['--flag', 'x y']"
    assert second == f"start {pid} {TUNABLE} None None ['--flag', 'x y']"
    assert after == f"after {pid} glibc+hugetlb"


@needs_glibc_restart
def test_the_opt_out_and_the_users_own_setting_are_respected():
    for off in ({hm.OPT_OUT: "0"}, {hm.CHOICE: "off"}):
        (_, after) = _run([sys.executable, "-c", _SCRIPT], off)
        assert after.endswith(" glibc")
    (first, after) = _run(
        [sys.executable, "-c", _SCRIPT],
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", hm.CHOICE: "glibc"},
    )
    assert "glibc.malloc.hugetlb=0" in first and after.endswith(" glibc")


@pytest.mark.skipif(
    not (_glibc_restarts_here() or hm.mimalloc_library()), reason="no restart on this system"
)
@pytest.mark.parametrize("command", [["-m", "robult_jax.main"], ["-m", "robult_jax", "train"]])
def test_the_train_command_runs_with_the_allocator(tmp_path, command):
    """The config file is imported by the command itself: it sees the restarted process."""
    config = tmp_path / "probe.py"
    config.write_text(
        textwrap.dedent("""
        import sys
        from robult_jax import host_memory
        print("config sees", host_memory.malloc_in_use(), flush=True)
        sys.exit(0)
    """)
    )
    lines = _run(
        [sys.executable, *command, f"--config={config}", f"--workdir={tmp_path / 'w'}"], {}
    )
    expected = "mimalloc" if hm.mimalloc_library() else "glibc+hugetlb"
    assert lines == [f"config sees {expected}"]
    assert not (tmp_path / "w").exists()
