"""How the commands' host memory is allocated: mimalloc, or glibc with huge pages (Linux).

Why: on the CPU, XLA allocates a compiled program's temporary buffer (every
intermediate of one train step: 42 MiB for the default `watch` model at batch
128, 0.85 GiB at 2048) with malloc when the program runs, and frees it when
it returns. A block that large is above glibc's mmap threshold (at most 32
MiB), so glibc maps fresh memory from the kernel for every step and hands it
back after: 10,757 page faults a step at batch 128, about a third of the
step's CPU time spent in the kernel (README "Performance").

Two remedies, chosen by `ROBULT_JAX_MALLOC` (default "auto"):
- "mimalloc": the allocator of the `cmeel-mimalloc` wheel (a dependency of
  the `train` extra on Linux x86-64 and aarch64), preloaded
  (`LD_PRELOAD`) with `MIMALLOC_PURGE_DELAY=-1`: freed memory stays mapped,
  so the next step reuses the same pages and faults none in. The process
  keeps its peak footprint (about the step's XLA scratch plus the data)
  until it exits. 10% less step time than the glibc remedy at batch 128 and
  22% less at 2048 (README "Performance").
- "glibc": glibc's tunable `glibc.malloc.hugetlb=1` (glibc 2.35 or newer,
  transparent huge pages in "madvise" mode): 2 MiB pages for such mappings,
  a few dozen faults a step instead of thousands, but still a fresh mapping
  a step.
- "auto": mimalloc where the wheel is installed, else glibc's tunable where
  it helps; "off": neither.

Both are read by the system when a process starts, so the commands
(`robult-jax train|predict|compare`, `python -m robult_jax.main`,
experiments/benchmark.py) call `reexec_with_fast_malloc()` before anything
else: if it would help, the process replaces itself (`os.execve`: the same
pid, arguments and environment, plus the variables) and starts again. Child
processes inherit the variables. It does nothing when
- `ROBULT_JAX_MALLOC=off` (or the older `ROBULT_JAX_HUGEPAGES=0`) is set,
- the system is not Linux,
- the process already runs with one of the remedies: a preloaded mimalloc,
  or `glibc.malloc.hugetlb` in `GLIBC_TUNABLES` (the user's own setting is
  kept, and this is also what stops a second re-exec),
- "auto" finds your own `LD_PRELOAD` (another allocator, say): it is left
  alone, and only glibc's tunable is considered.

In your own program or notebook (the library alone changes nothing), start
Python with the variables set, e.g. `LD_PRELOAD=$(python -c "from robult_jax
import host_memory; print(host_memory.mimalloc_library())")
MIMALLOC_PURGE_DELAY=-1 python train.py`. Accelerators' memory is not
malloc's; on GPU and TPU hosts either remedy changes only host allocations.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

CHOICE = "ROBULT_JAX_MALLOC"  # auto | mimalloc | glibc | off
CHOICES = ("auto", "mimalloc", "glibc", "off")
OPT_OUT = "ROBULT_JAX_HUGEPAGES"  # the older switch: "0" means "off"
TUNABLE = "glibc.malloc.hugetlb"
MIMALLOC_DIST = "cmeel-mimalloc"
# Freed memory is never returned to the system: with mimalloc's defaults the steps
# still faulted their scratch memory in (at batch 2048 as slow as glibc's huge pages).
MIMALLOC_SETTINGS = {"MIMALLOC_PURGE_DELAY": "-1"}
# Every variable that decides a process's allocator here: what a caller clears to get
# this module's default choice (tests, experiments/malloc_ab.py).
ENVIRONMENT = ("LD_PRELOAD", "GLIBC_TUNABLES", *MIMALLOC_SETTINGS, CHOICE, OPT_OUT)
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
# Present where the kernel hands freed pages back to a hypervisor (free page reporting).
PAGE_REPORTING = "/sys/module/page_reporting/parameters/page_reporting_order"


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the running glibc, or None (not glibc, or not Linux)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def thp_mode(path: str = THP_ENABLED) -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"), or None."""
    text = _read(path) or ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def page_reporting_order(path: str = PAGE_REPORTING) -> str | None:
    """The smallest free block (as a page order) the kernel reports to its hypervisor, or None.

    Set on VMs with free page reporting: memory freed a moment ago (by this
    process or another) costs a fault to the host when it is touched again.
    """
    return _read(path)


def mimalloc_library() -> str | None:
    """The path of the `cmeel-mimalloc` wheel's libmimalloc.so, or None if not installed."""
    from importlib import metadata  # here: the decision runs before anything heavy

    try:
        files = metadata.distribution(MIMALLOC_DIST).files or ()
    except metadata.PackageNotFoundError:
        return None
    for f in sorted(files, key=lambda f: len(f.name)):  # libmimalloc.so before .so.3.4
        if f.name.startswith("libmimalloc.so"):
            path = str(f.locate())
            if os.path.isfile(path):
                return path
    return None


def _is_mimalloc(entry: str) -> bool:
    return os.path.basename(entry).startswith("libmimalloc.")


def _preloads(environ: dict[str, str]) -> list[str]:
    # ld.so separates LD_PRELOAD's entries by colons or spaces.
    return environ.get("LD_PRELOAD", "").replace(":", " ").split()


def malloc_choice(environ: dict[str, str]) -> str:
    """`ROBULT_JAX_MALLOC`, checked; `ROBULT_JAX_HUGEPAGES=0` means "off"."""
    if environ.get(OPT_OUT) == "0":
        return "off"
    choice = environ.get(CHOICE, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(
            f"{CHOICE}={environ[CHOICE]!r} is not one of {', '.join(CHOICES)}: unset it "
            "(auto: mimalloc where installed, else glibc's huge pages) or pick one of those."
        )
    return choice


def tunables_with_hugepages(
    environ: dict[str, str], glibc: tuple[int, int] | None, mode: str | None
) -> str | None:
    """The GLIBC_TUNABLES value to re-exec with, or None where a re-exec would not help."""
    if malloc_choice(environ) == "off" or glibc is None or glibc < (2, 35):
        return None
    if mode != "madvise":
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if any(item.split("=")[0] == TUNABLE for item in current.split(":")):
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def reexec_environment(
    environ: dict[str, str],
    *,
    find_mimalloc: Callable[[], str | None],
    glibc: tuple[int, int] | None,
    mode: str | None,
) -> dict[str, str] | None:
    """The variables to add to `environ` for the re-exec, or None where none would help.

    `find_mimalloc`: `mimalloc_library` (about 20 ms, so called only where
    its answer is needed: not in the restarted process); `glibc` and `mode`:
    `glibc_version()` and `thp_mode()`. Raises ValueError for a bad
    `ROBULT_JAX_MALLOC`, and for "mimalloc" when the wheel is not installed.
    """
    choice = malloc_choice(environ)
    preloads = _preloads(environ)
    if choice == "off" or any(_is_mimalloc(p) for p in preloads):
        return None
    # "auto" leaves another preload alone; "glibc" never needs the wheel.
    wanted = choice == "mimalloc" or (choice == "auto" and not preloads)
    mimalloc = find_mimalloc() if wanted else None
    if choice == "mimalloc" and mimalloc is None:
        raise ValueError(
            f"{CHOICE}=mimalloc, but the {MIMALLOC_DIST} wheel is not installed: "
            f"`pip install {MIMALLOC_DIST}` (Linux x86-64 or aarch64), or unset {CHOICE}."
        )
    if mimalloc is not None:
        settings = {k: v for k, v in MIMALLOC_SETTINGS.items() if k not in environ}  # yours win
        return {"LD_PRELOAD": " ".join([mimalloc, *preloads]), **settings}
    tunables = tunables_with_hugepages(environ, glibc, mode)
    return None if tunables is None else {"GLIBC_TUNABLES": tunables}


def hugepages_on(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs with the tunable (set at its start, by us or by the user)."""
    value = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
    return f"{TUNABLE}=1" in value.split(":")


def malloc_in_use(maps: str = "/proc/self/maps") -> str:
    """The allocator of this process: "mimalloc" (loaded), "glibc+hugetlb", "glibc" or "unknown"."""
    text = _read(maps)
    if text is not None and "/libmimalloc." in text:
        return "mimalloc"
    if glibc_version() is None:
        return "unknown"
    return "glibc+hugetlb" if hugepages_on() else "glibc"


def reexec_with_fast_malloc() -> None:
    """Replaces this process by itself with mimalloc or glibc's huge pages, where that helps.

    Call it first thing in a program's entry point, before JAX starts threads:
    everything the process did before the call is done again after it. Returns
    (having done nothing) where the module docstring says, or if the exec
    fails; exits with a message for a bad `ROBULT_JAX_MALLOC`.
    """
    if sys.platform != "linux" or not sys.executable:
        return
    environ = dict(os.environ)
    try:
        extra = reexec_environment(
            environ, find_mimalloc=mimalloc_library, glibc=glibc_version(), mode=thp_mode()
        )
    except ValueError as e:  # a bad setting: say so before anything starts
        raise SystemExit(f"error: {e}") from None
    if extra is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, {**environ, **extra})
    except OSError:  # not reached on success; an unexecutable interpreter path: carry on
        return
