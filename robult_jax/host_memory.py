"""Transparent huge pages for XLA:CPU's per-step scratch memory (Linux with glibc >= 2.35).

Why: on the CPU, XLA allocates a compiled program's temporary buffer (every
intermediate of one train step: 42 MiB for the default `watch` model at batch
128, 0.85 GiB at 2048) with malloc when the program runs, and frees it when
it returns. A block that large is above glibc's mmap threshold (at most 32
MiB), so malloc maps fresh memory from the kernel for every step, and the
step first touches it one 4 KiB page at a time: 10,757 page faults a step at
batch 128, measured here as about a third of the step's CPU time spent in the
kernel (README "Performance"). glibc's tunable `glibc.malloc.hugetlb=1` makes
malloc ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on such
mappings: 2 MiB pages, a few dozen faults a step.

glibc reads tunables once, when a process starts, so the commands
(`robult-jax train|predict|compare`, `python -m robult_jax.main`) call
`reexec_with_hugepages()` before anything else: if it would help, the process
replaces itself (`os.execve`: the same pid, arguments and environment, plus
the tunable) and starts again. It does nothing when
- `ROBULT_JAX_HUGEPAGES=0` is set (the opt-out),
- the system is not Linux with glibc 2.35 or newer,
- the kernel's transparent huge pages are "never" (nothing to gain) or
  "always" (already on for such mappings),
- `GLIBC_TUNABLES` already sets `glibc.malloc.hugetlb` (yours is kept), which
  is also what stops a second re-exec.

In your own program or notebook (the library alone changes nothing), start
Python with the variable set: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python
train.py`. Accelerators' memory is not malloc's; on GPU and TPU hosts the
tunable changes only host allocations.
"""

from __future__ import annotations

import os
import sys

OPT_OUT = "ROBULT_JAX_HUGEPAGES"  # "0": never re-exec
TUNABLE = "glibc.malloc.hugetlb"
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


def tunables_with_hugepages(
    environ: dict[str, str], glibc: tuple[int, int] | None, mode: str | None
) -> str | None:
    """The GLIBC_TUNABLES value to re-exec with, or None where a re-exec would not help."""
    if environ.get(OPT_OUT, "1") == "0" or glibc is None or glibc < (2, 35):
        return None
    if mode != "madvise":
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if any(item.split("=")[0] == TUNABLE for item in current.split(":")):
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def hugepages_on(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs with the tunable (set at its start, by us or by the user)."""
    value = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
    return f"{TUNABLE}=1" in value.split(":")


def reexec_with_hugepages() -> None:
    """Replaces this process by itself with `glibc.malloc.hugetlb=1`, where that helps.

    Call it first thing in a program's entry point, before JAX starts threads:
    everything the process did before the call is done again after it. Returns
    (having done nothing) where the module docstring says, or if the exec fails.
    """
    if sys.platform != "linux" or not sys.executable:
        return
    tunables = tunables_with_hugepages(dict(os.environ), glibc_version(), thp_mode())
    if tunables is None:
        return
    env = dict(os.environ, GLIBC_TUNABLES=tunables)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # not reached on success; an unexecutable interpreter path: carry on
        return
