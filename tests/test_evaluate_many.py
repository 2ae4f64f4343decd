"""Evaluation of many conditions in one pass (`evaluate.make_predict_many_fn`).

The encoders run once per row and the rest of the model once per mask: the
logits must equal one `make_predict_fn` call per mask, for both architectures
(the paper's with its own fusion stems and with shared ones), under masks
that drop modalities the data has and rows whose own data lacks some, with
NaN in what is absent; and the metrics of `evaluate_subsets` and
`evaluate_random_missing` must not depend on how conditions are chunked.
"""

import functools

import helpers
import jax
import numpy as np
import pytest

from robult_jax import evaluate, models, parallel, tasks, train
from robult_jax.data import load_dataset, sampler
from robult_jax.data.types import Split
from robult_jax.objective import make_optimizer


@functools.cache
def _setup(architecture, stems="own"):
    overrides = {"model.fusion_stems": stems} if architecture == "paper" else {}
    config = helpers.typed_config(architecture, **overrides)
    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    idx = sampler.label_split(dataset.train.labels, 0.25, 0)
    batch = train.make_sampler(config, dataset.train, idx).batch(0)
    tx = make_optimizer(config.optim, 10)
    state = train.init_state(config, model, tx, dataset.spec, jax.random.key(0), batch)
    return config, dataset, model, state.params


def _with_gaps(split, seed):
    """The split with some modalities absent in the data itself, NaN in their inputs."""
    rng = np.random.default_rng(seed)
    mask = split.mask & (rng.random(split.mask.shape) > 0.3)
    mask[np.arange(len(mask)), rng.integers(0, mask.shape[1], len(mask))] = True
    inputs = {}
    for i, (name, x) in enumerate(split.inputs.items()):
        shape = (-1,) + (1,) * (x.ndim - 1)
        inputs[name] = np.where(mask[:, i].reshape(shape), x, np.nan).astype(x.dtype)
    return Split(inputs=inputs, labels=split.labels, mask=mask)


@pytest.mark.parametrize(
    "architecture,stems", [("paper", "own"), ("paper", "shared"), ("fused", "own")]
)
def test_many_masks_in_one_pass_equal_one_pass_per_mask(architecture, stems):
    config, dataset, model, params = _setup(architecture, stems)
    split = _with_gaps(dataset.test, seed=1)
    n, m = split.mask.shape
    rng = np.random.default_rng(2)
    masks = [rng.random((n, m)) > 0.4 for _ in range(3)] + [np.ones((n, m), bool)]
    mesh = parallel.make_mesh()
    kw = dict(batch_size=config.eval.batch_size, mesh=mesh)
    many = evaluate.make_predict_many_fn(model, mesh)
    got = evaluate.predict_split_many(many, params, split, np.stack(masks), **kw)
    one = evaluate.make_predict_fn(model, mesh)
    for mask, got_NxC in zip(masks, got, strict=True):
        want = evaluate.predict_split(one, params, split, mask, **kw)
        assert np.isfinite(got_NxC).all()
        np.testing.assert_allclose(got_NxC, want, rtol=1e-5, atol=1e-5)


def test_metrics_do_not_depend_on_how_conditions_are_chunked(monkeypatch):
    config, dataset, model, params = _setup("paper")
    split = _with_gaps(dataset.test, seed=3)
    mesh = parallel.make_mesh()
    many = evaluate.make_predict_many_fn(model, mesh)
    task = tasks.get(dataset.spec.task)
    kw = dict(batch_size=config.eval.batch_size, mesh=mesh)
    missing = dict(rates=(0.3, 0.6), seeds=(0, 1, 2), **kw)

    def evaluate_all():
        subsets = evaluate.evaluate_subsets(many, params, split, task, **kw)
        return subsets, evaluate.evaluate_random_missing(many, params, split, task, **missing)

    whole = evaluate_all()
    monkeypatch.setattr(evaluate, "MAX_MASKS_PER_PASS", 2)  # 3 subsets, 3 seeds: padded chunks
    chunked = evaluate_all()
    assert set(whole[0]) == set(chunked[0]) and len(whole[0]) == 2 ** split.mask.shape[1] - 1
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked), strict=True):
        if isinstance(a, str):  # the hashes of the masks
            assert a == b
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # One condition at a time, through predict_split, scores the same.
    one = evaluate.make_predict_fn(model, mesh)
    for name, result in whole[0].items():
        row = np.array([n in name.split("+") for n in split.inputs])
        mask = np.broadcast_to(row, split.mask.shape)
        keep = evaluate.scored_rows(split, mask)
        logits = evaluate.predict_split(one, params, split, mask, **kw)
        want = task.metrics(logits[keep], split.labels[keep])
        for key, value in want.items():
            np.testing.assert_allclose(result[key], value, rtol=1e-6)


@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_reused_encoder_outputs_give_every_output_of_a_direct_call(architecture):
    config, dataset, model, params = _setup(architecture)
    split = _with_gaps(dataset.test, seed=4)
    batch = next(sampler.iterate_eval_batches(split, config.eval.batch_size))
    own = batch["mask"]
    cond = own & (np.random.default_rng(5).random(own.shape) > 0.5)
    apply = jax.jit(functools.partial(model.apply, {"params": params}, train=False))
    encoded = jax.jit(
        functools.partial(model.apply, {"params": params}, train=False, encoders_only=True)
    )(batch["inputs"], own)
    want = apply(batch["inputs"], cond)
    got = jax.jit(lambda x, m, e: model.apply({"params": params}, x, m, encoded=e))(
        batch["inputs"], cond, encoded
    )
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
