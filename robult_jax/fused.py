"""LayerNorm then GELU as one op with a hand-written backward pass: same values, less traffic.

Shape legend: R any leading (row) axes, F the normalised features (last axis).

Every conv block of the cnn1d / cnn2d encoders, and every hidden layer of the
MLP encoder, is `gelu(LayerNorm(x))`. Differentiated automatically, that pair
saves and re-reads several R x F intermediates (the centred input, the
normalised input, the pre-activation, tanh's output, the broadcast scale) in
many small kernels; on XLA:CPU those element-wise passes cost more than the
convolutions themselves (the benchmark's profile, README "Performance").
`layer_norm_gelu` keeps only the input and two per-row statistics, and
recomputes the rest in the backward pass, which is one read of the input and
of the incoming gradient for the two row reductions and one more for the
result. On two CPU cores this made the default watch model's train step
13% to 26% faster (paper and fused architectures, batches 128 and 2048;
README "Performance").

The forward pass is flax's, operation for operation (`nn.LayerNorm` with its
default fast variance, epsilon 1e-6, then the tanh approximation `nn.gelu`),
so a model's outputs do not change; gradients agree with automatic
differentiation's to float32 rounding (tests/test_fused.py).

Precision: the statistics, the normalisation and the GELU are computed in
float32 (or the input's dtype if wider), and the result is cast back to it (with
`model.compute_dtype = "bfloat16"`, flax computes the statistics in float32
too but the GELU in bfloat16).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

EPSILON = 1e-6  # nn.LayerNorm's default
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715  # of the tanh approximation of GELU


def _row_stats(x_RxF: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-row mean and 1 / std, as nn.LayerNorm computes them (E[x^2] - E[x]^2)."""
    mean_Rx1 = x_RxF.mean(-1, keepdims=True)
    var_Rx1 = jnp.maximum(jnp.mean(jnp.square(x_RxF), -1, keepdims=True) - jnp.square(mean_Rx1), 0)
    return mean_Rx1, jax.lax.rsqrt(var_Rx1 + EPSILON)


def _pre_activation(x_RxF, mean_Rx1, rstd_Rx1, scale_F, bias_F):
    """(normalised x, the GELU's input) as nn.LayerNorm orders the operations."""
    xhat_RxF = (x_RxF - mean_Rx1) * rstd_Rx1
    return xhat_RxF, (x_RxF - mean_Rx1) * (rstd_Rx1 * scale_F) + bias_F


def _gelu_grad(a_RxF: jax.Array) -> jax.Array:
    """d gelu(a) / da for the tanh approximation gelu(a) = a (1 + tanh(u)) / 2."""
    u = _SQRT_2_OVER_PI * (a_RxF + _CUBIC * a_RxF**3)
    t = jnp.tanh(u)
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _CUBIC * jnp.square(a_RxF))
    return 0.5 * (1.0 + t) + 0.5 * a_RxF * (1.0 - jnp.square(t)) * du


def layer_norm_gelu(x_RxF: jax.Array, scale_F: jax.Array, bias_F: jax.Array) -> jax.Array:
    """gelu(LayerNorm(x) * scale + bias) over the last axis, in x's dtype (module docstring).

    Under `jax.shard_map` the rows vary across devices while the parameters are
    the same on all of them; the parameters are cast to x's varying axes first,
    so that autodiff sums their per-device gradients (`pcast`'s transpose is a
    psum), as it does for flax's LayerNorm.
    """
    manual = getattr(jax.typeof(x_RxF), "manual_axis_type", None)
    axes = tuple(sorted(manual.varying)) if manual is not None else ()
    if axes:
        scale_F, bias_F = (jax.lax.pcast(p, axes, to="varying") for p in (scale_F, bias_F))
    return _layer_norm_gelu(x_RxF, scale_F, bias_F)


@jax.custom_vjp
def _layer_norm_gelu(x_RxF: jax.Array, scale_F: jax.Array, bias_F: jax.Array) -> jax.Array:
    return _forward(x_RxF, scale_F, bias_F)[0]


def _at_least_f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _forward(x_RxF, scale_F, bias_F):
    x32 = _at_least_f32(x_RxF)
    mean_Rx1, rstd_Rx1 = _row_stats(x32)
    _, a_RxF = _pre_activation(x32, mean_Rx1, rstd_Rx1, scale_F, bias_F)
    out = nn.gelu(a_RxF).astype(x_RxF.dtype)
    return out, (x_RxF, scale_F, bias_F, mean_Rx1, rstd_Rx1)


def _backward(residuals, g_RxF):
    x_RxF, scale_F, bias_F, mean_Rx1, rstd_Rx1 = residuals
    x32 = _at_least_f32(x_RxF)
    xhat_RxF, a_RxF = _pre_activation(x32, mean_Rx1, rstd_Rx1, scale_F, bias_F)
    ga_RxF = _at_least_f32(g_RxF) * _gelu_grad(a_RxF)  # gradient at the GELU's input
    rows = tuple(range(x_RxF.ndim - 1))
    d_scale_F, d_bias_F = jnp.sum(ga_RxF * xhat_RxF, rows), jnp.sum(ga_RxF, rows)
    gx_RxF = ga_RxF * scale_F  # gradient at xhat; then through the normalisation:
    d_x = rstd_Rx1 * (
        gx_RxF
        - gx_RxF.mean(-1, keepdims=True)
        - xhat_RxF * jnp.mean(gx_RxF * xhat_RxF, -1, keepdims=True)
    )
    return d_x.astype(x_RxF.dtype), d_scale_F.astype(scale_F.dtype), d_bias_F.astype(bias_F.dtype)


_layer_norm_gelu.defvjp(_forward, _backward)


class LayerNormGelu(nn.Module):
    """`nn.gelu(nn.LayerNorm()(x))` as one op: the same parameters ("scale" ones,
    "bias" zeros, float32), so a module named like the LayerNorm it replaces has
    the same parameter tree and checkpoints."""

    @nn.compact
    def __call__(self, x_RxF: jax.Array) -> jax.Array:
        features = x_RxF.shape[-1]
        scale_F = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias_F = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return layer_norm_gelu(x_RxF, scale_F, bias_F)
