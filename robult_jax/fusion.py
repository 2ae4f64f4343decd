"""Fusion f_0 of the "fused" architecture over the present h_i (docs/method.md 2.2) [ours].

Shape legend: B batch, M modalities, D latent width.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from robult_jax import encoders as enc


def mean_over_present(x_BxMx_: jax.Array, mask_BxM: jax.Array) -> jax.Array:
    """Mean over the present modalities (axis 1); rows with none present give zeros, not NaN."""
    m = mask_BxM.reshape(mask_BxM.shape + (1,) * (x_BxMx_.ndim - 2)).astype(x_BxMx_.dtype)
    return (x_BxMx_ * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


class AttentionFusion(nn.Module):
    """f_0 [ours]: one pre-LN transformer block over modality tokens, masked mean-pool, MLP."""

    latent_dim: int
    num_heads: int
    hidden_dim: int
    dropout_rate: float

    @nn.compact
    def __call__(self, h_BxMxD: jax.Array, mask_BxM: jax.Array, *, train: bool) -> jax.Array:
        num_modalities = h_BxMxD.shape[1]
        embed_MxD = self.param(
            "modality_embed_MxD",
            nn.initializers.normal(0.02),
            (num_modalities, self.latent_dim),
        )
        # Tells the block which token is which modality (tokens are otherwise unordered).
        x_BxMxD = h_BxMxD + embed_MxD[None]
        # A row with no modality present would mask every key; let such rows attend
        # to all tokens instead. Their h_i are zeros, so nothing input-dependent
        # enters, and the result is discarded by the masked mean-pool below.
        none_present_Bx1 = ~mask_BxM.any(axis=1, keepdims=True)
        key_mask_BxM = mask_BxM | none_present_Bx1
        attn_mask_Bx1xMxM = nn.make_attention_mask(jnp.ones_like(key_mask_BxM), key_mask_BxM)
        y_BxMxD = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            qkv_features=self.latent_dim,
            out_features=self.latent_dim,
            dropout_rate=self.dropout_rate,
            name="attention",
        )(nn.LayerNorm()(x_BxMxD), mask=attn_mask_Bx1xMxM, deterministic=not train)
        x_BxMxD = x_BxMxD + y_BxMxD
        ff = enc.MLP((self.hidden_dim,), self.latent_dim, self.dropout_rate, name="ffn")
        x_BxMxD = x_BxMxD + ff(nn.LayerNorm()(x_BxMxD), train=train)
        pooled_BxD = mean_over_present(x_BxMxD, mask_BxM)
        out = enc.MLP((self.hidden_dim,), self.latent_dim, self.dropout_rate, name="out_mlp")
        return out(pooled_BxD, train=train)


class MeanFusion(nn.Module):
    """f_0 alternative [ours]: masked mean of the h_i, then an MLP."""

    latent_dim: int
    hidden_dim: int
    dropout_rate: float

    @nn.compact
    def __call__(self, h_BxMxD: jax.Array, mask_BxM: jax.Array, *, train: bool) -> jax.Array:
        pooled_BxD = mean_over_present(h_BxMxD, mask_BxM)
        out = enc.MLP((self.hidden_dim,), self.latent_dim, self.dropout_rate, name="out_mlp")
        return out(pooled_BxD, train=train)
