"""Per-modality encoders f_i and the small MLP block shared by all heads.

Each encoder maps one modality's per-sample input to a latent vector h_i in
R^D (docs/method.md section 2). The encoder of a modality is chosen by name in
`config.model.encoders`; a modality without an entry gets a default by kind.
Encoders of padded variable-length sequences ("transformer", "gru") live in
robult_jax/sequence_encoders.py; `make_encoder` builds all of them.

Shape legend: B batch, D latent width, H hidden width, T time steps,
F features per time step, X/Y image height/width, Ch channels.

`dtype` of every module is the computation dtype (`model.compute_dtype`):
bfloat16 runs the matmuls, convolutions and activations in bfloat16, while
parameters stay float32 (flax's `param_dtype`) and LayerNorm statistics are
reduced in float32.

The LayerNorm + GELU pairs of the conv blocks and of the MLP encoder are one
op with a hand-written backward pass (`robult_jax.fused.layer_norm_gelu`: the
same values as flax's pair, far less memory traffic), computed in float32.

Only per-sample normalisation (LayerNorm) is used, never BatchNorm: batch
statistics would let one sample (or an absent modality's zero inputs) change
another sample's encoding, and would add mutable state to every apply.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from robult_jax import fused
from robult_jax import sequence_encoders as seq

ENCODER_NAMES = ("mlp", "cnn1d", "cnn2d", *seq.SEQUENCE_ENCODER_NAMES)

# Default encoder per modality kind. "sequence" is (T, F + 1) with a validity
# channel last; only the sequence encoders read that channel as a mask.
DEFAULT_ENCODER_BY_KIND = {
    "vector": "mlp",
    "timeseries": "cnn1d",
    "image": "cnn2d",
    "sequence": "transformer",
}


class MLP(nn.Module):
    """Dense -> [LayerNorm] -> gelu -> [dropout], repeated, then a linear output layer."""

    hidden_dims: Sequence[int]
    out_dim: int
    dropout_rate: float
    layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxI: jax.Array, *, train: bool = False) -> jax.Array:
        x = x_BxI
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, dtype=self.dtype)(x)
            if self.layer_norm:  # gelu(LayerNorm(x)), named as the LayerNorm it replaces
                x = fused.LayerNormGelu(name=f"LayerNorm_{i}")(x)
            else:
                x = nn.gelu(x)
            # Dropout is a no-op (and needs no rng) when rate == 0 or not training.
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.out_dim, dtype=self.dtype)(x)


class MLPEncoder(nn.Module):
    """Vectors (or anything): flatten, then a 2-hidden-layer MLP with LayerNorm."""

    latent_dim: int
    hidden_dim: int
    dropout_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_Bx_: jax.Array, *, train: bool = False) -> jax.Array:
        x_BxI = x_Bx_.reshape(x_Bx_.shape[0], -1)
        hidden_dims = (self.hidden_dim, self.hidden_dim)
        mlp = MLP(
            hidden_dims, self.latent_dim, self.dropout_rate, layer_norm=True, dtype=self.dtype
        )
        return mlp(x_BxI, train=train)


class ConvEncoder(nn.Module):
    """Strided conv stack with LayerNorm, global mean pool, dense to D.

    "cnn1d": time series (T, F) or (T,), kernel (5,). "cnn2d": images (X, Y) or
    (X, Y, Ch), kernel (3, 3). Inputs without a channel axis (grey-scale images,
    spectrograms, univariate series) get one.
    """

    latent_dim: int
    features: Sequence[int]
    dropout_rate: float
    kernel_size: tuple[int, ...]  # (5,) or (3, 3); fixed, not a config field
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_Bx_: jax.Array, *, train: bool = False) -> jax.Array:
        spatial_axes = tuple(range(1, len(self.kernel_size) + 1))
        x = x_Bx_[..., None] if x_Bx_.ndim == len(spatial_axes) + 1 else x_Bx_
        for i, width in enumerate(self.features):
            # Stride 2 halves each spatial axis: cheap downsampling without a pooling op.
            conv = nn.Conv(
                width, kernel_size=self.kernel_size, strides=2, padding="SAME", dtype=self.dtype
            )
            x = fused.LayerNormGelu(name=f"LayerNorm_{i}")(conv(x))  # gelu(LayerNorm(.))
        pooled_BxH = x.mean(axis=spatial_axes)
        pooled_BxH = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled_BxH)
        return nn.Dense(self.latent_dim, dtype=self.dtype)(pooled_BxH)


# Per-sample input ranks each encoder accepts (rank of `ModalitySpec.shape`).
_ALLOWED_RANKS = {"mlp": None, "cnn1d": (1, 2), "cnn2d": (2, 3), "transformer": (2,), "gru": (2,)}

# Encoders registered by users: name -> builder(model_config, name=...) -> nn.Module.
_REGISTERED: dict = {}


def register_encoder(
    name: str, builder, *, ranks: tuple[int, ...] | None = None, overwrite: bool = False
) -> None:
    """Makes `builder` available as `model.encoders[<modality>] = name`.

    `builder(model, name=...)` gets the typed `config.ModelConfig` and the flax
    module name, and returns a linen module whose `__call__(x, *, train)` maps
    (B, *shape) float32 inputs to (B, model.latent_dim). `ranks`: the
    per-sample ranks it accepts (None: any). Register before the config is
    checked, e.g. at the top of your own config file, which the CLI imports:

        from robult_jax import encoders

        class Tiny(nn.Module):
            latent_dim: int

            @nn.compact
            def __call__(self, x, *, train=False):
                return nn.Dense(self.latent_dim)(x.reshape(len(x), -1))

        encoders.register_encoder("tiny", lambda model, name: Tiny(model.latent_dim, name=name))
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"encoder name must be a non-empty string, got {name!r}.")
    if not overwrite and (name in _ALLOWED_RANKS or name in _REGISTERED):
        raise ValueError(f"encoder {name!r} already exists; pass overwrite=True to replace it.")
    if name in ENCODER_NAMES:
        raise ValueError(f"{name!r} is a built-in encoder; register yours under another name.")
    _REGISTERED[name] = builder
    _ALLOWED_RANKS[name] = ranks


def encoder_names() -> tuple[str, ...]:
    """The built-in encoders, then the registered ones."""
    return (*ENCODER_NAMES, *_REGISTERED)


def check_encoder(
    encoder_name: str, modality_name: str, shape: Sequence[int], kind: str | None = None
) -> None:
    """Raises ValueError if encoder `encoder_name` cannot take inputs of `shape` (`kind`).

    The name itself is one of `encoder_names()`: config.py checks `model.encoders`.
    """
    ranks = _ALLOWED_RANKS[encoder_name]
    if ranks is not None and len(shape) not in ranks:
        raise ValueError(
            f"encoder {encoder_name!r} for modality {modality_name!r} needs a per-sample shape "
            f"of rank {ranks}, got shape {tuple(shape)}"
        )
    if encoder_name in seq.SEQUENCE_ENCODER_NAMES:
        # Why: these read the last channel as a validity mask; on any other kind of
        # data they would silently drop every step where that feature is <= 0.5.
        if kind is not None and kind != "sequence":
            raise ValueError(
                f"encoder {encoder_name!r} for modality {modality_name!r} needs kind "
                f"'sequence' (last channel = validity), got kind {kind!r}"
            )
        if shape[-1] < 2:
            raise ValueError(
                f"encoder {encoder_name!r} for modality {modality_name!r} needs a per-sample "
                f"shape (T, F + 1) with F >= 1, got shape {tuple(shape)}"
            )


def make_encoder(encoder_name: str, model, *, name: str | None = None) -> nn.Module:
    """Builds the encoder called `encoder_name` (one of `encoder_names()`, checked in config.py).

    `model` is the typed `config.ModelConfig`: every encoder reads its widths
    from it (`seq_width`, `seq_layers` and `num_heads` only the sequence
    encoders; the transformer's feed-forward width is `hidden_dim`) and its
    computation dtype from `compute_dtype`. A registered builder gets the same
    `model` and may read `model.compute_dtype` too.
    """
    if encoder_name in _REGISTERED:
        return _REGISTERED[encoder_name](model, name=name)
    d, rate = model.latent_dim, model.dropout_rate
    kw = dict(dtype=jnp.dtype(model.compute_dtype), name=name)
    if encoder_name == "mlp":
        return MLPEncoder(d, model.hidden_dim, rate, **kw)
    if encoder_name == "cnn1d":
        return ConvEncoder(d, tuple(model.cnn1d_features), rate, (5,), **kw)
    if encoder_name == "cnn2d":
        return ConvEncoder(d, tuple(model.cnn2d_features), rate, (3, 3), **kw)
    width = model.seq_width or d
    if encoder_name == "transformer":
        return seq.TransformerSequenceEncoder(
            d, width, model.seq_layers, model.num_heads, model.hidden_dim, rate, **kw
        )
    return seq.GRUSequenceEncoder(d, width, model.seq_layers, rate, **kw)
