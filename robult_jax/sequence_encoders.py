"""Encoders f_i for padded variable-length sequences (modality kind "sequence").

Input convention (robult_jax/data/benchmarks/affect.py): each sample is
(T, F + 1), right-padded with zero steps; the LAST channel is 1.0 at valid
steps and 0.0 at padding. An absent modality is all zeros, i.e. all padding.

Both encoders ("transformer", "gru") read only the valid steps: feature values
at padded steps are replaced by zeros first, so no output depends on them (not
even on a NaN a loader left there), and a row without any valid step gives
finite outputs and gradients.

Shape legend: B batch, T time steps, F features per step (validity channel
excluded), W sequence width, D latent width, H feed-forward hidden width.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SEQUENCE_ENCODER_NAMES = ("transformer", "gru")


def split_validity(x_BxTxF1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Splits a (B, T, F + 1) input into (features_BxTxF, valid_BxT) with padding zeroed."""
    if x_BxTxF1.ndim != 3 or x_BxTxF1.shape[-1] < 2:
        raise ValueError(
            "sequence encoders need inputs of shape (B, T, F + 1) with F >= 1 (last channel "
            f"= validity), got {x_BxTxF1.shape}"
        )
    # > 0.5 rather than == 1.0: robust to a validity channel that went through float math.
    valid_BxT = x_BxTxF1[..., -1] > 0.5
    # `where`, not a multiply: NaN/inf at padded steps must not leak (0 * NaN = NaN).
    features_BxTxF = jnp.where(valid_BxT[..., None], x_BxTxF1[..., :-1], 0.0)
    return features_BxTxF, valid_BxT


def masked_mean_over_time(x_BxTxW: jax.Array, valid_BxT: jax.Array) -> jax.Array:
    """Mean over valid steps; a row with none gives zeros (count clamped to 1), not NaN."""
    m_BxTx1 = valid_BxT[..., None].astype(x_BxTxW.dtype)
    count_Bx1 = jnp.maximum(m_BxTx1.sum(axis=1), 1.0)
    return (x_BxTxW * m_BxTx1).sum(axis=1) / count_Bx1


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN(x)) under a mask, then x + FFN(LN(x))."""

    num_heads: int
    hidden_dim: int
    dropout_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x_BxTxW: jax.Array, attn_mask_Bx1xTxT: jax.Array, *, train: bool
    ) -> jax.Array:
        width, dtype = x_BxTxW.shape[-1], self.dtype
        y_BxTxW = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            qkv_features=width,
            out_features=width,
            dropout_rate=self.dropout_rate,
            dtype=dtype,
            force_fp32_for_softmax=True,  # a no-op in float32; bfloat16 softmax loses mass
            name="attention",
        )(nn.LayerNorm(dtype=dtype)(x_BxTxW), mask=attn_mask_Bx1xTxT, deterministic=not train)
        x_BxTxW = x_BxTxW + nn.Dropout(self.dropout_rate, deterministic=not train)(y_BxTxW)
        y_BxTxH = nn.Dense(self.hidden_dim, dtype=dtype)(nn.LayerNorm(dtype=dtype)(x_BxTxW))
        y_BxTxH = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.gelu(y_BxTxH))
        return x_BxTxW + nn.Dense(width, dtype=dtype)(y_BxTxH)


class TransformerSequenceEncoder(nn.Module):
    """(B, T, F + 1) -> (B, D): Dense projection of the F features, learned positional
    embedding, pre-LayerNorm self-attention blocks with a key padding mask, masked
    mean-pool over the valid steps, Dense to D."""

    latent_dim: int
    width: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    dropout_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxTxF1: jax.Array, *, train: bool = False) -> jax.Array:
        features_BxTxF, valid_BxT = split_validity(x_BxTxF1)
        num_steps, dtype = features_BxTxF.shape[1], self.dtype
        pos_TxW = self.param("pos_embed_TxW", nn.initializers.normal(0.02), (num_steps, self.width))
        x_BxTxW = nn.Dense(self.width, dtype=dtype, name="input_proj")(features_BxTxF)
        x_BxTxW = x_BxTxW + pos_TxW[None].astype(dtype)

        # A row without valid steps (absent modality) would mask every key. Flax fills
        # masked logits with finfo.min, so that happens to give uniform weights, but a
        # -inf fill (other attention kernels) gives softmax 0/0 = NaN; say what we mean
        # instead: such rows attend to all steps. Their features are zeros, so nothing
        # input-dependent enters, and the masked mean-pool below pools them to zero.
        none_valid_Bx1 = ~valid_BxT.any(axis=1, keepdims=True)
        key_ok_BxT = valid_BxT | none_valid_Bx1
        # Padded queries are left unmasked: their outputs are dropped by the pool.
        attn_mask_Bx1xTxT = nn.make_attention_mask(jnp.ones_like(key_ok_BxT), key_ok_BxT)
        for i in range(self.num_layers):
            block = TransformerBlock(
                self.num_heads, self.hidden_dim, self.dropout_rate, dtype, name=f"block_{i}"
            )
            x_BxTxW = block(x_BxTxW, attn_mask_Bx1xTxT, train=train)
        x_BxTxW = nn.LayerNorm(dtype=dtype, name="final_norm")(x_BxTxW)

        pooled_BxW = masked_mean_over_time(x_BxTxW, valid_BxT)
        pooled_BxW = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled_BxW)
        return nn.Dense(self.latent_dim, dtype=dtype, name="output")(pooled_BxW)


class GRUSequenceEncoder(nn.Module):
    """(B, T, F + 1) -> (B, D): Dense projection, stacked GRUs run with `seq_lengths`, the
    hidden state at the last valid step, Dense to D.

    Assumes the data convention that valid steps come first (right padding): the
    GRU runs over the first sum(valid) steps of each row.
    """

    latent_dim: int
    width: int
    num_layers: int
    dropout_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxTxF1: jax.Array, *, train: bool = False) -> jax.Array:
        features_BxTxF, valid_BxT = split_validity(x_BxTxF1)
        lengths_B = valid_BxT.sum(axis=1).astype(jnp.int32)
        dtype = self.dtype
        # Projecting first keeps the recurrent kernels W x 3W even for 300-d text.
        x_BxTxW = nn.Dense(self.width, dtype=dtype, name="input_proj")(features_BxTxF)
        last_BxW = None
        for i in range(self.num_layers):
            # seq_lengths makes the returned carry the one at step length-1 of each
            # row; outputs at later (padded) steps are never read by a valid step,
            # because the GRU is causal.
            # The cell, not the RNN, holds the parameters (and lives in this scope).
            rnn = nn.RNN(nn.GRUCell(self.width, dtype=dtype, name=f"gru_{i}"), return_carry=True)
            last_BxW, x_BxTxW = rnn(x_BxTxW, seq_lengths=lengths_B)
            if i + 1 < self.num_layers:
                x_BxTxW = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxTxW)
        # Length 0 (absent modality): flax would pick the carry at index -1, i.e. after
        # running over all padding; use the initial (zero) state instead.
        last_BxW = jnp.where((lengths_B > 0)[:, None], last_BxW, 0.0)
        last_BxW = nn.Dropout(self.dropout_rate, deterministic=not train)(last_BxW)
        return nn.Dense(self.latent_dim, dtype=dtype, name="output")(last_BxW)
