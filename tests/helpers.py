"""Shared test set-up: the synthetic config (configs/synthetic.py), raw and typed;
field-by-field comparisons of two datasets and of their batches."""

import ml_collections
import numpy as np

from robult_jax import config as config_lib
from robult_jax.configs import synthetic
from robult_jax.data import clean, sampler


def raw_config(architecture: str = "paper", **overrides) -> ml_collections.ConfigDict:
    """configs/synthetic.py with dotted overrides, e.g. `**{"train.num_steps": 4}`."""
    config = synthetic.get_config(architecture)
    for dotted, value in overrides.items():
        node = config
        *path, leaf = dotted.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def typed_config(architecture: str = "paper", **overrides) -> config_lib.Config:
    return config_lib.from_config_dict(raw_config(architecture, **overrides))


def assert_same_dataset(want, got) -> None:
    """Equal spec, cleaning counts, statistics, labels, masks and inputs (bit for bit),
    and fingerprint; either may be streamed (`robult_jax.data.stream`)."""
    assert got.spec == want.spec
    assert got.cleaning == want.cleaning
    assert (got.input_stats is None) == (want.input_stats is None)
    for name, stats in (want.input_stats or {}).items():
        for k in ("mean", "std"):
            np.testing.assert_array_equal(got.input_stats[name][k], stats[k])
    for s in clean.SPLITS:
        w, g = getattr(want, s), getattr(got, s)
        np.testing.assert_array_equal(g.labels, w.labels)
        assert g.labels.dtype == w.labels.dtype
        np.testing.assert_array_equal(g.mask, w.mask)
        for name, x in w.inputs.items():
            assert g.inputs[name].shape == x.shape and g.inputs[name].dtype == x.dtype
            np.testing.assert_array_equal(np.asarray(g.inputs[name]), np.asarray(x))
    # The same content hash; a streamed one computed in chunks, never read whole.
    assert clean.fingerprint(got) == clean.fingerprint(want)


def _assert_same_batch(want: dict, got: dict) -> None:
    assert want.keys() == got.keys()
    for key in want.keys() - {"inputs"}:
        np.testing.assert_array_equal(got[key], want[key])
    for name, x in want["inputs"].items():
        np.testing.assert_array_equal(got["inputs"][name], x)


def assert_same_batches(want, got, *, steps, eval_batch: int) -> None:
    """The same training batches at `steps` (25% labels, modality dropout) and the same
    evaluation batches of the test split, from two datasets (either may be streamed)."""
    idx = sampler.label_split(want.train.labels, 0.25, 0)
    kw = dict(labeled_batch=8, unlabeled_batch=8, modality_dropout=0.3, seed=1)
    samplers = [sampler.SemiSupervisedSampler(d.train, idx, **kw) for d in (want, got)]
    for step in steps:
        _assert_same_batch(*(s.batch(step) for s in samplers))
    pairs = zip(
        sampler.iterate_eval_batches(want.test, eval_batch),
        sampler.iterate_eval_batches(got.test, eval_batch),
        strict=True,
    )
    for w, g in pairs:
        _assert_same_batch(w, g)
