"""One compilation per shape: a whole run traces and compiles its train step once,
and its evaluation function once per split shape and number of masks scored
together, however many steps, evaluations and checkpoints it makes (a recompile
would cost seconds per step on CPU)."""

import collections
import logging
import re

import jax
import pytest
from test_train import _config

from robult_jax import evaluate, train


class _Compiles(logging.Handler):
    """Counts JAX's "Compiling jit(<name>)" log lines (jax_log_compiles) by function name."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.counts = collections.Counter()

    def emit(self, record):
        match = re.match(r"Compiling jit\((\w+)\)", record.getMessage())
        if match:
            self.counts[match.group(1)] += 1


@pytest.fixture
def compiles():
    handler, logger = _Compiles(), logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        yield handler.counts
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)


@pytest.mark.slow  # a whole run of train_and_evaluate
def test_a_run_compiles_its_train_step_once(tmp_path, compiles):
    # 8 steps: logs every 2, evaluates and checkpoints every 4, then the final
    # evaluation over every subset and missing rate.
    results = train.train_and_evaluate(_config(), str(tmp_path / "run"))
    assert results is not None
    assert compiles["train_step"] == 1, dict(compiles)
    # Validation and test have the same row count here, and every evaluation pads to
    # eval.batch_size: one program per number of masks scored in a pass, here the
    # 3 subsets of 2 modalities, and the masks of every missing rate and seed
    # (2 x 2), which share their passes.
    config = _config()
    random_masks = len(config.eval.missing_rates) * len(config.eval.mask_seeds)
    passes = {2 ** len(config.model.encoders) - 1, min(random_masks, evaluate.MAX_MASKS_PER_PASS)}
    assert all(k <= evaluate.MAX_MASKS_PER_PASS for k in passes) and len(passes) == 2
    assert compiles["predict_many"] == len(passes), dict(compiles)
