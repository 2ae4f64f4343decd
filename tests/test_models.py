"""Tests for robult_jax.models and robult_jax.encoders: shapes, masking, jit, errors.

Shape legend: B batch, M modalities, D latent, K unique, P projection, C classes.
Dataset specs are stand-ins (duck-typed) so these tests do not depend on
robult_jax.data.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import models

B = 5


@dataclasses.dataclass(frozen=True)
class FakeModality:
    name: str
    shape: tuple[int, ...]
    kind: str


@dataclasses.dataclass(frozen=True)
class FakeSpec:
    modalities: tuple[FakeModality, ...]
    num_outputs: int


SPEC2 = FakeSpec(
    (FakeModality("acc", (16, 3), "timeseries"), FakeModality("gyro", (16, 3), "timeseries")), 4
)
SPEC3 = FakeSpec(
    (
        FakeModality("vec", (7,), "vector"),
        FakeModality("ts", (12, 2), "timeseries"),
        FakeModality("img", (8, 8), "image"),
    ),
    3,
)
SPEC_VEC = FakeSpec((FakeModality("v1", (6,), "vector"), FakeModality("v2", (4,), "vector")), 3)
# CMU-MOSI-like: (T, F + 1) sequences, last channel = validity.
SPEC_SEQ = FakeSpec(
    (
        FakeModality("vision", (8, 4), "sequence"),
        FakeModality("audio", (8, 3), "sequence"),
        FakeModality("text", (8, 6), "sequence"),
    ),
    1,
)


def small_config(**overrides):
    cfg = models.default_model_config()
    cfg.latent_dim, cfg.unique_dim, cfg.proj_dim, cfg.hidden_dim = 16, 8, 12, 24
    cfg.num_heads = 2
    cfg.cnn1d_features = (8, 8)
    cfg.cnn2d_features = (4, 8)
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def make_inputs(spec, seed=0, batch=B):
    rng = np.random.default_rng(seed)
    return {m.name: rng.normal(size=(batch, *m.shape)).astype(np.float32) for m in spec.modalities}


def init(model, spec, batch=B, seed=0):
    """Random params of the right shapes, without compiling `model.init`.

    Why: XLA:CPU takes ~10 s to compile a full init of this model, while
    `eval_shape` only traces it; the tests need shapes, not Flax's init scheme.
    """
    inputs = make_inputs(spec, batch=batch)
    mask = np.ones((batch, len(spec.modalities)), bool)
    shapes = jax.eval_shape(model.init, jax.random.key(seed), inputs, mask)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.3 * rng.normal(size=x.shape)).astype(x.dtype), shapes)


def setup(spec, fusion="attention", dropout_rate=0.0):
    """(model, params, jitted apply), shared by tests so each config compiles once.

    Why: compiling one forward pass takes seconds on a busy CPU; tests reuse the
    same jitted function with the same shapes (B rows), so later calls hit the cache.
    """
    # Positional call so setup(S) and setup(S, "attention") share one cache entry.
    return _setup(spec, fusion, dropout_rate)


@functools.cache
def _setup(spec, fusion, dropout_rate):
    model = models.build_model(small_config(fusion=fusion, dropout_rate=dropout_rate), spec)
    apply = jax.jit(model.apply, static_argnames="train")
    return model, init(model, spec), apply


def num_params(params):
    return sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "spec,fusion",
    [(SPEC2, "attention"), (SPEC3, "attention"), (SPEC3, "mean")],
    ids=["M2-attention", "M3-attention", "M3-mean"],
)
def test_output_shapes_and_unit_norm(spec, fusion):
    _, params, apply = setup(spec, fusion)
    m, c = len(spec.modalities), spec.num_outputs
    mask = np.random.default_rng(1).random((B, m)) < 0.7
    out = apply({"params": params}, make_inputs(spec), mask)
    assert set(out) == {
        "h_BxMxD", "h0_BxD", "s_BxP", "z_BxMxP", "u_BxMxK", "h_hat_BxMxD", "logits_BxC",
    }  # fmt: skip
    chex.assert_shape(out["h_BxMxD"], (B, m, 16))
    chex.assert_shape(out["h0_BxD"], (B, 16))
    chex.assert_shape(out["s_BxP"], (B, 12))
    chex.assert_shape(out["z_BxMxP"], (B, m, 12))
    chex.assert_shape(out["u_BxMxK"], (B, m, 8))
    chex.assert_shape(out["h_hat_BxMxD"], (B, m, 16))
    chex.assert_shape(out["logits_BxC"], (B, c))
    np.testing.assert_allclose(jnp.linalg.norm(out["s_BxP"], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(out["z_BxMxP"], axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fusion", ["attention", "mean"])
def test_absent_modality_inputs_do_not_matter(fusion):
    _, params, apply = setup(SPEC3, fusion)
    inputs = make_inputs(SPEC3)
    mask = np.ones((B, 3), bool)
    mask[0, 1] = mask[2, 2] = mask[3, 0] = False
    mask[4] = [False, True, False]
    out = apply({"params": params}, inputs, mask)

    # Put large junk (and a NaN) where modalities are absent: nothing may change.
    junk = make_inputs(SPEC3, seed=7)
    perturbed = {}
    for i, m in enumerate(SPEC3.modalities):
        x = inputs[m.name].copy()
        absent = ~mask[:, i]
        x[absent] = 100.0 * junk[m.name][absent]
        perturbed[m.name] = x
    perturbed["vec"][3, 0] = np.nan
    out_perturbed = apply({"params": params}, perturbed, mask)
    chex.assert_trees_all_close(out, out_perturbed, atol=1e-6)

    # Sanity check that the test can fail: a *present* modality does change s.
    changed = dict(inputs, ts=inputs["ts"] + 1.0)
    out_changed = apply({"params": params}, changed, mask)
    assert not np.allclose(out["s_BxP"], out_changed["s_BxP"])


def test_u_and_h_zeroed_where_absent():
    _, params, apply = setup(SPEC3)
    mask = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 1]], bool)
    out = apply({"params": params}, make_inputs(SPEC3), mask)
    absent = ~mask
    assert np.all(np.asarray(out["u_BxMxK"])[absent] == 0.0)
    assert np.all(np.asarray(out["h_BxMxD"])[absent] == 0.0)
    assert np.all(np.abs(np.asarray(out["u_BxMxK"])[mask]).sum(-1) > 0)


@pytest.mark.parametrize("fusion", ["attention", "mean"])
def test_all_absent_rows_are_finite(fusion):
    _, params, apply = setup(SPEC3, fusion)
    inputs = make_inputs(SPEC3)
    mask = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]], bool)
    out = apply({"params": params}, inputs, mask)
    for key, value in out.items():
        assert np.all(np.isfinite(value)), key


def test_all_absent_rows_have_finite_gradients():
    # The attention path is the risky one: every key masked in some rows.
    model = models.build_model(small_config(), SPEC_VEC)
    params = init(model, SPEC_VEC)
    inputs = make_inputs(SPEC_VEC)
    mask = np.array([[0, 0], [1, 0], [0, 0], [1, 1], [0, 1]], bool)

    @jax.jit
    def grads(p):
        def loss(p):
            o = model.apply({"params": p}, inputs, mask)
            return o["logits_BxC"].sum() + o["s_BxP"].sum() + o["h_hat_BxMxD"].sum()

        return jax.grad(loss)(p)

    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads(params)))


def test_jit_traces_once_and_dropout_only_when_training():
    # One test, so the eval-mode forward pass compiles once for both checks.
    model = models.build_model(small_config(dropout_rate=0.5), SPEC_VEC)
    params = init(model, SPEC_VEC)
    inputs = make_inputs(SPEC_VEC)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(params, inputs, mask):
        return model.apply({"params": params}, inputs, mask)

    ones = jnp.ones((B, 2), bool)
    try:
        out_a = forward(params, inputs, ones)
        out_b = forward(params, inputs, jnp.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], bool))
        out_a_again = forward(params, inputs, ones)
    finally:
        chex.clear_trace_counter()
    assert not np.allclose(out_a["logits_BxC"], out_b["logits_BxC"])
    chex.assert_trees_all_close(out_a, out_a_again)  # no dropout without train=True

    train_apply = jax.jit(functools.partial(model.apply, train=True))
    out_train = train_apply({"params": params}, inputs, ones, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(out_train["logits_BxC"], out_a["logits_BxC"])


def test_encoders_follow_config_and_kind_defaults():
    model = models.build_model(small_config(encoders={"img": "mlp"}), SPEC3)
    assert model.encoder_names == ("mlp", "cnn1d", "mlp")
    params = init(model, SPEC3)
    assert "Conv_0" in params["encoder_ts"]
    assert "Conv_0" not in params["encoder_img"]
    n_params = num_params(params)
    assert 1_000 < n_params < 200_000, n_params
    # Defaults at full size stay small enough for a laptop run.
    full = models.build_model(models.default_model_config(), SPEC3)
    n_full = num_params(init(full, SPEC3, batch=2))
    assert 50_000 < n_full < 2_000_000, n_full


def test_bad_config_raises():
    with pytest.raises(
        ValueError, match=r"allowed: \('mlp', 'cnn1d', 'cnn2d', 'transformer', 'gru'\)"
    ):
        models.build_model(small_config(encoders={"acc": "lstm"}), SPEC2)
    with pytest.raises(ValueError, match=r"dataset modalities: \('acc', 'gyro'\)"):
        models.build_model(small_config(encoders={"mag": "cnn1d"}), SPEC2)
    with pytest.raises(ValueError, match="model.fusion"):
        models.build_model(small_config(fusion="sum"), SPEC2)
    with pytest.raises(ValueError, match="divisible"):
        models.build_model(small_config(num_heads=3), SPEC2)
    with pytest.raises(ValueError, match="rank"):
        models.build_model(small_config(encoders={"vec": "cnn2d"}), SPEC3)
    with pytest.raises(ValueError, match="needs kind 'sequence'"):
        models.build_model(small_config(encoders={"ts": "gru"}), SPEC3)
    with pytest.raises(ValueError, match="F >= 1"):
        models.build_model(small_config(), FakeSpec((FakeModality("s", (8, 1), "sequence"),), 2))
    with pytest.raises(ValueError, match="model.seq_layers"):
        models.build_model(small_config(seq_layers=0), SPEC_SEQ)
    with pytest.raises(ValueError, match="model.seq_width"):
        models.build_model(small_config(seq_width=-1), SPEC_SEQ)
    with pytest.raises(ValueError, match="transformer encoder's width"):
        models.build_model(small_config(seq_width=9), SPEC_SEQ)
    models.build_model(
        small_config(seq_width=9, encoders={m: "gru" for m in ("vision", "audio", "text")}),
        SPEC_SEQ,
    )  # heads unused
    bad_kind = FakeSpec((FakeModality("x", (3,), "graph"),), 2)
    with pytest.raises(ValueError, match="allowed kinds"):
        models.build_model(small_config(), bad_kind)


def test_bad_inputs_raise():
    _, params, apply = setup(SPEC2)
    inputs = make_inputs(SPEC2)
    with pytest.raises(ValueError, match="lack modalities"):
        apply({"params": params}, {"acc": inputs["acc"]}, np.ones((B, 2), bool))
    with pytest.raises(ValueError, match="mask_BxM"):
        apply({"params": params}, inputs, np.ones((B, 3), bool))
    with pytest.raises(ValueError, match=r"inputs\['gyro'\]"):
        apply({"params": params}, dict(inputs, gyro=inputs["gyro"][:, :8]), np.ones((B, 2)))


def test_single_modality_and_six_modalities():
    spec1 = FakeSpec((FakeModality("only", (4,), "vector"),), 2)
    spec6 = FakeSpec(tuple(FakeModality(f"m{i}", (10, 3), "timeseries") for i in range(6)), 5)
    for spec in (spec1, spec6):
        model = models.build_model(small_config(), spec)
        params = init(model, spec, batch=3)
        mask = np.ones((3, len(spec.modalities)), bool)
        # eval_shape traces the full forward pass (all shape logic) without compiling.
        out = jax.eval_shape(model.apply, {"params": params}, make_inputs(spec, batch=3), mask)
        chex.assert_shape(out["logits_BxC"], (3, spec.num_outputs))
        chex.assert_shape(out["u_BxMxK"], (3, len(spec.modalities), 8))


def make_sequence_inputs(lengths_BxM, seed=0):
    """Right-padded (B, T, F + 1) inputs for SPEC_SEQ; length 0 = all zeros (absent)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for i, m in enumerate(SPEC_SEQ.modalities):
        num_steps, num_features = m.shape[0], m.shape[1] - 1
        valid_BxT = np.arange(num_steps)[None] < lengths_BxM[:, i : i + 1]
        x = rng.normal(size=(len(lengths_BxM), num_steps, num_features)) * valid_BxT[..., None]
        inputs[m.name] = np.concatenate([x, valid_BxT[..., None]], -1).astype(np.float32)
    return inputs


def test_sequence_modalities_default_to_transformer_and_run_under_jit():
    model = models.build_model(small_config(encoders={"audio": "gru"}, seq_layers=2), SPEC_SEQ)
    assert model.encoder_names == ("transformer", "gru", "transformer")
    assert (model.seq_layers, model.seq_width) == (2, 0)
    params = init(model, SPEC_SEQ)
    assert params["encoder_vision"]["pos_embed_TxW"].shape == (8, 16)  # seq_width 0 -> D
    assert "block_1" in params["encoder_text"] and "gru_1" in params["encoder_audio"]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(params, inputs, mask):
        return model.apply({"params": params}, inputs, mask)

    # Variable lengths; absent modalities (length 0, all zeros) include a row with none.
    lengths_BxM = np.array([[8, 5, 2], [3, 0, 8], [0, 0, 0], [1, 1, 1], [0, 7, 0]])
    mask = lengths_BxM > 0
    try:
        out = forward(params, make_sequence_inputs(lengths_BxM), mask)
        out_all = forward(params, make_sequence_inputs(np.full((B, 3), 8)), np.ones((B, 3), bool))
    finally:
        chex.clear_trace_counter()
    chex.assert_shape(out["h_BxMxD"], (B, 3, 16))
    chex.assert_shape(out["logits_BxC"], (B, 1))
    for key, value in out.items():
        assert np.all(np.isfinite(value)), key
    assert np.all(np.asarray(out["h_BxMxD"])[~mask] == 0.0)
    assert np.all(np.abs(np.asarray(out["h_BxMxD"])[mask]).sum(-1) > 0)
    assert not np.allclose(out["logits_BxC"], out_all["logits_BxC"])
