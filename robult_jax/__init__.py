"""robult_jax: Robult (robust semi-supervised multimodal learning) in JAX/Flax.

`from robult_jax import losses` gives the losses as pure, jit-able functions;
`robult_jax.train.train_and_evaluate(config, workdir)` runs an experiment.
"""

__version__ = "0.1.0"
