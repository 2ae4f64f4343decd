"""Test set-up: four fake CPU devices, configured before JAX starts.

Why here: `jax_num_cpu_devices` only takes effect before the backend is
initialised, and conftest.py is imported by pytest before any test module.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

# XLA compilation dominates the trainer tests on CPU; tests that build the
# same programs (same shapes, same mesh) share them through a per-session
# persistent cache instead of compiling each time.
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="robult_jax_xla_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
