"""model.compute_dtype="bfloat16": bfloat16 compute, float32 parameters, optimizer state and losses.

Checked on CPU, where bfloat16 is emulated: the point is the numbers (finite,
close to float32) and the dtypes, not the speed (see the README's Performance
section for where bfloat16 pays).
"""

import types

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import encoders as enc
from robult_jax import models, objective, tasks, train
from robult_jax.data import load_dataset, sampler


def _first_steps(architecture: str, dtype: str, num_steps: int = 3):
    config = helpers.typed_config(architecture, **{"model.compute_dtype": dtype})
    dataset = load_dataset(config.data)
    idx = sampler.label_split(dataset.train.labels, 0.25, 0)
    batches = train.make_sampler(config, dataset.train, idx)
    model = models.build_model(config.model, dataset.spec)
    tx = objective.make_optimizer(config.optim, 10)
    init_key, train_key = jax.random.split(jax.random.key(0))
    state = train.init_state(config, model, tx, dataset.spec, init_key, batches.batch(0))
    step = jax.jit(
        objective.make_train_step(
            model,
            tx,
            config.loss,
            tasks.get("multiclass"),
            objective.make_schedule(config.optim, 10),
        )
    )
    rows = []
    for s in range(num_steps):
        state, metrics = step(state, batches.batch(s), train_key)
        rows.append(jax.device_get(metrics))
    batch = batches.batch(0)
    outputs = model.apply({"params": state.params}, batch["inputs"], batch["mask"])
    jaxpr = str(
        jax.make_jaxpr(lambda p: model.apply({"params": p}, batch["inputs"], batch["mask"]))(
            state.params
        )
    )
    return state, rows, outputs, jaxpr


@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_bfloat16_trains_finite_and_close_to_float32(architecture):
    state32, rows32, _, jaxpr32 = _first_steps(architecture, "float32")
    state16, rows16, outputs16, jaxpr16 = _first_steps(architecture, "bfloat16")
    # The computation really is bfloat16 (dense layers and convolutions), and only there.
    # (Attention's softmax weights, and so their product with the values, stay float32.)
    assert "bf16" not in jaxpr32
    for op in ("dot_general", "conv_general_dilated"):
        outs = [line.split("=")[0] for line in jaxpr16.splitlines() if f"= {op}[" in line]
        dense = [o for o in outs if o.count(",") <= 1 or op.startswith("conv")]
        assert dense and all(":bf16[" in o for o in dense), (op, dense)
    # Parameters, optimizer state and centroids stay float32; so do the outputs.
    for tree in (state16.params, state16.opt_state, state16.centroids_CxP):
        dtypes = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}
    for name, value in outputs16.items():
        assert value.dtype in (jnp.float32, jnp.bool_), name
    for r32, r16 in zip(rows32, rows16, strict=True):
        for key in ("loss", "loss_sup", "loss_lb", "loss_ulb", "loss_rec", "grad_norm"):
            assert np.isfinite(r16[key]), key
            # bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding, a few % after a step.
            np.testing.assert_allclose(r16[key], r32[key], rtol=0.05, err_msg=key)
    # Adam moves each weight by about the learning rate a step, whatever the gradient's
    # scale: the two runs' weights can part by at most ~2 lr a step.
    bound = 2.5 * sum(float(r["learning_rate"]) for r in rows32) + 1e-5
    for a, b in zip(jax.tree.leaves(state32.params), jax.tree.leaves(state16.params), strict=True):
        np.testing.assert_allclose(b, a, atol=bound)


@pytest.mark.parametrize("name", ["transformer", "gru", "cnn2d"])
def test_bfloat16_encoders_close_to_float32(name):
    rng = np.random.default_rng(0)
    if name == "cnn2d":
        x = rng.normal(size=(4, 8, 8)).astype(np.float32)
    else:  # (B, T, F + 1): valid steps first, one row all padding (an absent modality)
        x = np.concatenate([rng.normal(size=(4, 6, 3)), np.ones((4, 6, 1))], -1)
        x[1, 3:] = 0.0
        x[2] = 0.0
        x = x.astype(np.float32)
    outs = {}
    for dtype in ("float32", "bfloat16"):
        widths = types.SimpleNamespace(
            latent_dim=8, hidden_dim=8, dropout_rate=0.0, cnn1d_features=(4,),
            cnn2d_features=(4, 4), seq_width=8, seq_layers=1, num_heads=2, compute_dtype=dtype,
        )  # fmt: skip
        module = enc.make_encoder(name, widths)
        params = module.init(jax.random.key(0), x)  # same names and keys: same init
        outs[dtype] = module.apply(params, x)
    assert outs["bfloat16"].dtype == jnp.bfloat16
    out16 = np.asarray(outs["bfloat16"], np.float32)
    assert np.isfinite(out16).all()
    np.testing.assert_allclose(out16, outs["float32"], atol=0.05 * np.abs(outs["float32"]).max())
