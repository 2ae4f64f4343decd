"""Test set-up: four fake CPU devices, configured before JAX starts.

Why here: `jax_num_cpu_devices` only takes effect before the backend is
initialised, and conftest.py is imported by pytest before any test module.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
