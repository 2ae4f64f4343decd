"""`python -m robult_jax <command> ...`: the `robult-jax` command (robult_jax/cli.py)."""

from robult_jax import cli

cli.main()
