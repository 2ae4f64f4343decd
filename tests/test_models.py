"""Tests for robult_jax.models: both architectures, the paper figure's behaviour, masking, jit.

Shape legend: B batch, M modalities, D latent, K unique, P projection, C classes.
Config errors are tested in tests/test_configs.py (they are raised there, once).
"""

import dataclasses
import functools

import chex
import flax
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import encoders as enc
from robult_jax import models
from robult_jax.data.types import DatasetSpec, ModalitySpec

B = 5
D, H = 16, 24


def _spec(*modalities, outputs=3, task="multiclass"):
    mods = tuple(ModalitySpec(*m) for m in modalities)
    return DatasetSpec("fake", mods, task=task, num_outputs=outputs)


SPEC2 = _spec(("acc", (16, 3), "timeseries"), ("gyro", (16, 3), "timeseries"), outputs=4)
SPEC3 = _spec(("vec", (7,), "vector"), ("ts", (12, 2), "timeseries"), ("img", (8, 8), "image"))
SPEC_VEC = _spec(("v1", (6,), "vector"), ("v2", (4,), "vector"))
# CMU-MOSI-like: (T, F + 1) sequences, last channel = validity.
SPEC_SEQ = _spec(
    ("vision", (8, 4), "sequence"),
    ("audio", (8, 3), "sequence"),
    ("text", (8, 6), "sequence"),
    outputs=1,
    task="regression",
)


def small_config(architecture="paper", **overrides):
    """The synthetic config's model group, made smaller still."""
    widths = dict(latent_dim=D, hidden_dim=H, num_heads=2, cnn1d_features=(8, 8))
    widths.update(cnn2d_features=(4, 8), dropout_rate=0.0, encoders=())
    if architecture == "fused":
        widths.update(unique_dim=8, proj_dim=12, fusion="attention")
    return dataclasses.replace(helpers.typed_config(architecture).model, **{**widths, **overrides})


def make_inputs(spec, seed=0, batch=B):
    rng = np.random.default_rng(seed)
    return {m.name: rng.normal(size=(batch, *m.shape)).astype(np.float32) for m in spec.modalities}


def init(model, spec, batch=B, seed=0):
    """Random params of the right shapes, without compiling `model.init`.

    Why: XLA:CPU takes seconds to compile a full init of this model, while
    `eval_shape` only traces it; the tests need shapes, not Flax's init scheme.
    """
    inputs = make_inputs(spec, batch=batch)
    mask = np.ones((batch, len(spec.modalities)), bool)
    shapes = jax.eval_shape(model.init, jax.random.key(seed), inputs, mask)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.3 * rng.normal(size=x.shape)).astype(x.dtype), shapes)


@functools.cache
def setup(spec, architecture="paper", **overrides):
    """(model, params, jitted apply), shared by tests so each config compiles once."""
    model = models.build_model(small_config(architecture, **overrides), spec)
    return model, init(model, spec), jax.jit(model.apply, static_argnames="train")


def perturb(params, prefixes, seed=3):
    """A copy of `params` with every leaf under the named top-level modules changed."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    rng = np.random.default_rng(seed)
    hit = set()
    for path in flat:
        if path[0].startswith(prefixes):
            flat[path] = flat[path] + rng.normal(size=flat[path].shape).astype(np.float32)
            hit.add(path[0])
    assert hit, f"no parameters under {prefixes}"
    return flax.traverse_util.unflatten_dict(flat)


ARCHS = [("paper", {}), ("paper", {"fusion_stems": "shared"}), ("fused", {})]
ARCH_IDS = ["paper", "paper-shared", "fused"]


@pytest.mark.parametrize("spec", [SPEC2, SPEC3], ids=["M2", "M3"])
@pytest.mark.parametrize("arch,overrides", ARCHS, ids=ARCH_IDS)
def test_output_shapes_and_unit_norm(spec, arch, overrides):
    _, params, apply = setup(spec, arch, **overrides)
    m, c = len(spec.modalities), spec.num_outputs
    mask = np.random.default_rng(1).random((B, m)) < 0.7
    out = apply({"params": params}, make_inputs(spec), mask)
    p = 12 if arch == "fused" else D
    chex.assert_shape(out["h_BxMxD"], (B, m, D))
    chex.assert_shape(out["h0_BxD"], (B, D))
    chex.assert_shape([out["s_BxP"], out["z_BxMxP"]], [(B, p), (B, m, p)])
    chex.assert_shape(out["h_hat_BxMxD"], (B, m, D))
    chex.assert_shape([out["logits_BxC"], out["fused_logits_BxC"]], [(B, c)] * 2)
    chex.assert_shape(out["fused_valid_B"], (B,))
    if arch == "paper":
        chex.assert_shape(out["uni_logits_BxMxC"], (B, m, c))
        np.testing.assert_array_equal(out["fused_valid_B"], mask.all(1))
    np.testing.assert_allclose(jnp.linalg.norm(out["s_BxP"], axis=-1), 1.0, atol=1e-5)
    z_norm = np.asarray(jnp.linalg.norm(out["z_BxMxP"], axis=-1))
    np.testing.assert_allclose(z_norm[mask], 1.0, atol=1e-5)


@pytest.mark.parametrize("arch,overrides", ARCHS, ids=ARCH_IDS)
def test_absent_modality_inputs_do_not_matter(arch, overrides):
    _, params, apply = setup(SPEC3, arch, **overrides)
    inputs = make_inputs(SPEC3)
    mask = np.ones((B, 3), bool)
    mask[0, 1] = mask[2, 2] = mask[3, 0] = False
    mask[4] = [False, True, False]
    out = apply({"params": params}, inputs, mask)

    # Put large junk (and NaN) where modalities are absent: no output may change.
    junk = make_inputs(SPEC3, seed=7)
    perturbed = {}
    for i, m in enumerate(SPEC3.modalities):
        x = inputs[m.name].copy()
        absent = ~mask[:, i]
        x[absent] = 100.0 * junk[m.name][absent]
        perturbed[m.name] = x
    perturbed["vec"][3, 0] = np.nan
    perturbed["img"][2] = np.nan
    out_perturbed = apply({"params": params}, perturbed, mask)
    chex.assert_trees_all_close(out, out_perturbed, atol=1e-6)

    # The test can fail: a *present* modality does change the prediction.
    changed = dict(inputs, ts=inputs["ts"] + 1.0)
    out_changed = apply({"params": params}, changed, mask)
    assert not np.allclose(out["logits_BxC"], out_changed["logits_BxC"])


def test_paper_all_present_prediction_depends_on_f0_and_c_only():
    """Figure panel (b): every modality present -> c(h_0); f_i, g_i and g_0 play no part."""
    _, params, apply = setup(SPEC3)
    inputs, ones = make_inputs(SPEC3), np.ones((B, 3), bool)
    logits = apply({"params": params}, inputs, ones)["logits_BxC"]
    for prefixes in [("unique_",), ("shared_g0",), ("encoder_",)]:
        other = apply({"params": perturb(params, prefixes)}, inputs, ones)["logits_BxC"]
        np.testing.assert_array_equal(logits, other, err_msg=str(prefixes))
    for prefixes in [("fusion",), ("head",)]:  # the test can fail: f_0 and c do matter
        other = apply({"params": perturb(params, prefixes)}, inputs, ones)["logits_BxC"]
        assert not np.allclose(logits, other), prefixes


def test_paper_missing_prediction_never_uses_f0():
    """Figure panel (a): any modality absent -> the fusion branch is not used at all."""
    _, params, apply = setup(SPEC3)
    inputs = make_inputs(SPEC3)
    mask = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 1]], bool)
    logits = apply({"params": params}, inputs, mask)["logits_BxC"]
    no_f0 = perturb(params, ("fusion",))  # fusion_stem_* and the fusion MLP
    np.testing.assert_array_equal(logits, apply({"params": no_f0}, inputs, mask)["logits_BxC"])
    other = apply({"params": perturb(params, ("shared_g0",))}, inputs, mask)["logits_BxC"]
    assert not np.allclose(logits, other)  # g_0 does matter here


def _by_hand(params, inputs, i, model):
    """c(u_i + z_i) for modality i, composed from the submodules' own params."""
    cfg = model.config
    m = model.modalities[i]

    def mlp(name, out_dim, x):
        return enc.MLP((cfg.hidden_dim,), out_dim, 0.0).apply({"params": params[name]}, x)

    encoder = enc.make_encoder(cfg.encoder_for(m), cfg)
    h = encoder.apply({"params": params[f"encoder_{m.name}"]}, jnp.asarray(inputs[m.name]))
    u, z = mlp(f"unique_{m.name}", D, h), mlp("shared_g0", D, h)
    return mlp("head", model.num_outputs, u + z)


@pytest.mark.parametrize("combine", ["mean_probs", "mean_latent"])
def test_paper_single_modality_prediction_is_c_of_u_plus_z(combine):
    model, params, apply = setup(SPEC3, combine=combine)
    inputs = make_inputs(SPEC3)
    for i in range(3):
        mask = np.zeros((B, 3), bool)
        mask[:, i] = True
        logits = apply({"params": params}, inputs, mask)["logits_BxC"]
        expected = _by_hand(params, inputs, i, model)
        # mean_probs returns log-probabilities: same softmax, same argmax.
        np.testing.assert_allclose(
            jax.nn.softmax(logits), jax.nn.softmax(expected), rtol=1e-5, atol=1e-6
        )
        if combine == "mean_latent":
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_paper_mean_probs_averages_present_modalities():
    model, params, apply = setup(SPEC3)
    inputs = make_inputs(SPEC3)
    mask = np.tile([[True, False, True]], (B, 1))
    probs = jax.nn.softmax(apply({"params": params}, inputs, mask)["logits_BxC"])
    expected = (
        jax.nn.softmax(_by_hand(params, inputs, 0, model))
        + jax.nn.softmax(_by_hand(params, inputs, 2, model))
    ) / 2
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["paper", "fused"])
def test_all_absent_rows_are_finite_with_finite_gradients(arch):
    model = models.build_model(small_config(arch), SPEC_VEC)
    params = init(model, SPEC_VEC)
    inputs = make_inputs(SPEC_VEC)
    mask = np.array([[0, 0], [1, 0], [0, 0], [1, 1], [0, 1]], bool)

    @jax.jit
    def forward_and_grads(p):
        def loss(p):
            o = model.apply({"params": p}, inputs, mask)
            return o["logits_BxC"].sum() + o["s_BxP"].sum() + o["h_hat_BxMxD"].sum(), o

        return jax.grad(loss, has_aux=True)(p)

    grads, out = forward_and_grads(params)
    for key, value in out.items():
        assert np.all(np.isfinite(value)), key
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_jit_traces_once_and_dropout_only_when_training():
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


def num_params(params):
    return sum(x.size for x in jax.tree.leaves(params))


def test_encoders_follow_config_and_kind_defaults():
    model = models.build_model(small_config(encoders=(("img", "mlp"),)), SPEC3)
    params = init(model, SPEC3)
    assert "Conv_0" in params["encoder_ts"] and "Conv_0" in params["fusion_stem_ts"]
    assert "Conv_0" not in params["encoder_img"]
    assert 1_000 < num_params(params) < 200_000, num_params(params)
    shared = init(models.build_model(small_config(fusion_stems="shared"), SPEC3), SPEC3)
    assert not any(k.startswith("fusion_stem") for k in shared)
    assert num_params(shared) < num_params(params)


def test_bad_inputs_raise():
    _, params, apply = setup(SPEC2)
    inputs = make_inputs(SPEC2)
    with pytest.raises(ValueError, match="lack modalities"):
        apply({"params": params}, {"acc": inputs["acc"]}, np.ones((B, 2), bool))
    with pytest.raises(ValueError, match="mask_BxM"):
        apply({"params": params}, inputs, np.ones((B, 3), bool))
    with pytest.raises(ValueError, match=r"inputs\['gyro'\]"):
        apply({"params": params}, dict(inputs, gyro=inputs["gyro"][:, :8]), np.ones((B, 2)))


@pytest.mark.parametrize("arch", ["paper", "fused"])
def test_single_modality_and_six_modalities(arch):
    spec1 = _spec(("only", (4,), "vector"), outputs=2)
    spec6 = _spec(*[(f"m{i}", (10, 3), "timeseries") for i in range(6)], outputs=5)
    for spec in (spec1, spec6):
        model = models.build_model(small_config(arch), spec)
        params = init(model, spec, batch=3)
        mask = np.ones((3, len(spec.modalities)), bool)
        # eval_shape traces the full forward pass (all shape logic) without compiling.
        out = jax.eval_shape(model.apply, {"params": params}, make_inputs(spec, batch=3), mask)
        chex.assert_shape(out["logits_BxC"], (3, spec.num_outputs))
        chex.assert_shape(out["h_hat_BxMxD"], (3, len(spec.modalities), D))


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
    model = models.build_model(
        small_config(encoders=(("audio", "gru"),), seq_layers=2, fusion_stems="shared"), SPEC_SEQ
    )
    assert [model.config.encoder_for(m) for m in SPEC_SEQ.modalities] == [
        "transformer", "gru", "transformer",
    ]  # fmt: skip
    params = init(model, SPEC_SEQ)
    assert params["encoder_vision"]["pos_embed_TxW"].shape == (8, D)  # seq_width 0 -> D
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
    chex.assert_shape(out["h_BxMxD"], (B, 3, D))
    chex.assert_shape(out["logits_BxC"], (B, 1))
    for key, value in out.items():
        assert np.all(np.isfinite(value)), key
    assert np.all(np.asarray(out["h_BxMxD"])[~mask] == 0.0)
    assert np.all(np.abs(np.asarray(out["h_BxMxD"])[mask]).sum(-1) > 0)
    assert not np.allclose(out["logits_BxC"], out_all["logits_BxC"])
