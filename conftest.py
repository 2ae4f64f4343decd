"""Test set-up: four fake CPU devices, configured before JAX starts.

Why here, at the repository root: `jax_num_cpu_devices` only takes effect
before the backend is initialised, and pytest imports the rootdir conftest.py
before it collects anything: the test modules under tests/ and also the
library modules that `pytest --doctest-modules robult_jax` imports (`make test`
runs the doctests). A conftest.py under tests/ would not be loaded for
robult_jax/.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

# XLA compilation dominates the trainer tests on CPU; tests that build the
# same programs (same shapes, same mesh) share them through a per-session
# persistent cache instead of compiling each time. The directory is made once,
# by the first process that loads this file (pytest, or its controller under
# pytest-xdist, whose workers inherit the environment), and it is also the
# library's cache (`train.enable_compilation_cache`, which the CLI runs
# spawned by tests call): nothing is written to the user's ~/.cache.
import tempfile  # noqa: E402

# (Not setdefault: its argument would make a directory in every worker too.)
_CACHE = os.environ.get("ROBULT_JAX_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="robult_jax_xla_")
os.environ["ROBULT_JAX_TEST_XLA_CACHE"] = os.environ["ROBULT_JAX_COMPILE_CACHE"] = _CACHE
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

# The test files that take longest start first: `make test` runs whole files
# per process (pytest-xdist --dist loadfile) in collection order, and one of
# these collected last would run alone on one core while the other idles.
_LONGEST_FIRST = (
    "tests/test_train.py",
    "tests/test_parallel_forms.py",
    "tests/test_precision.py",
    "tests/test_faults.py",
    "tests/test_compare.py",
    "tests/test_multiprocess.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    root = str(config.rootpath)

    def key(item):
        path = os.path.relpath(str(item.path), root)
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: the order within each file, and of the others, is kept
