"""The Robult model: encoders f_i, fusion f_0, heads c, g_i, r_i and classifier q.

method.md section 2. `build_model(config.model, dataset_spec)` returns a linen
`Robult`; `Robult.apply({"params": p}, inputs, mask_BxM, train=...)` returns
the dict described in docs/interfaces.md.

Shape legend: B batch, M modalities, D latent width, K unique width,
P projection width, C classes (outputs), H hidden width.

Absent modalities: every h_i of an absent modality is replaced by zeros right
after its encoder, so no output depends on the values an absent modality's
input happens to hold (batches carry zeros there, but nothing relies on it).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from robult_jax import encoders as enc

FUSIONS = ("attention", "mean")


def default_model_config() -> ml_collections.ConfigDict:
    """Defaults for `config.model`; configs/*.py embed and override these."""
    c = ml_collections.ConfigDict()
    c.latent_dim = 64  # D: width of every h_i and of h_0.
    c.unique_dim = 32  # K: width of the unique features u_i = g_i(h_i).
    c.proj_dim = 64  # P: width of the unit-sphere embeddings s and z_i.
    c.fusion = "attention"  # f_0 [ours]: "attention" (masked self-attention) | "mean".
    c.num_heads = 4  # Heads in f_0 and in "transformer" encoders; divides D and seq_width.
    c.hidden_dim = 128  # H: hidden width of every MLP (encoders and heads).
    c.dropout_rate = 0.0  # Dropout in MLPs/attention, only when train=True.
    # Modality name -> encoder name ("mlp" | "cnn1d" | "cnn2d" | "transformer" | "gru");
    # modalities not listed get a default by kind (vector: mlp, timeseries: cnn1d,
    # image: cnn2d, sequence: transformer).
    c.encoders = ml_collections.ConfigDict()
    c.cnn1d_features = (32, 64, 64)  # Channels of the strided Conv1D layers.
    c.cnn2d_features = (16, 32, 64)  # Channels of the strided 3x3 Conv2D layers.
    c.seq_layers = 1  # Attention blocks ("transformer") or stacked GRUs ("gru").
    c.seq_width = 0  # W: width inside the sequence encoders; 0 = latent_dim.
    return c


def l2_normalize(x_Bx_: jax.Array, *, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| along the last axis; eps inside the rsqrt keeps x = 0 finite (and its grad)."""
    return x_Bx_ * jax.lax.rsqrt(jnp.sum(jnp.square(x_Bx_), axis=-1, keepdims=True) + eps)


def masked_mean(x_BxMxD: jax.Array, mask_BxM: jax.Array) -> jax.Array:
    """Mean over present modalities; rows with none present give zeros, not NaN."""
    m_BxMx1 = mask_BxM[..., None].astype(x_BxMxD.dtype)
    count_Bx1 = jnp.maximum(m_BxMx1.sum(axis=1), 1.0)
    return (x_BxMxD * m_BxMx1).sum(axis=1) / count_Bx1


class AttentionFusion(nn.Module):
    """f_0 [ours]: one pre-LN transformer block over modality tokens, masked mean-pool, MLP."""

    latent_dim: int
    num_heads: int
    hidden_dim: int
    dropout_rate: float = 0.0

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
        pooled_BxD = masked_mean(x_BxMxD, mask_BxM)
        out = enc.MLP((self.hidden_dim,), self.latent_dim, self.dropout_rate, name="out_mlp")
        return out(pooled_BxD, train=train)


class MeanFusion(nn.Module):
    """f_0 alternative [ours]: masked mean of the h_i, then an MLP."""

    latent_dim: int
    hidden_dim: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, h_BxMxD: jax.Array, mask_BxM: jax.Array, *, train: bool) -> jax.Array:
        pooled_BxD = masked_mean(h_BxMxD, mask_BxM)
        out = enc.MLP((self.hidden_dim,), self.latent_dim, self.dropout_rate, name="out_mlp")
        return out(pooled_BxD, train=train)


class Robult(nn.Module):
    """Encoders f_i, fusion f_0, projection c, unique g_i, decoders r_i, classifier q.

    Build it with `build_model`, which validates the config against the dataset.
    """

    modality_names: tuple[str, ...]
    modality_shapes: tuple[tuple[int, ...], ...]
    encoder_names: tuple[str, ...]
    num_outputs: int
    latent_dim: int = 64
    unique_dim: int = 32
    proj_dim: int = 64
    fusion: str = "attention"
    num_heads: int = 4
    hidden_dim: int = 128
    dropout_rate: float = 0.0
    cnn1d_features: tuple[int, ...] = (32, 64, 64)
    cnn2d_features: tuple[int, ...] = (16, 32, 64)
    seq_layers: int = 1
    seq_width: int = 0  # 0 = latent_dim

    def _check_inputs(self, inputs: Mapping[str, jax.Array], mask_BxM: jax.Array) -> None:
        missing = [n for n in self.modality_names if n not in inputs]
        if missing:
            raise ValueError(
                f"inputs lack modalities {missing}; expected keys {list(self.modality_names)}"
            )
        num_modalities = len(self.modality_names)
        if mask_BxM.ndim != 2 or mask_BxM.shape[1] != num_modalities:
            raise ValueError(
                f"mask_BxM must have shape (B, {num_modalities}), got {mask_BxM.shape}"
            )
        for name, shape in zip(self.modality_names, self.modality_shapes, strict=True):
            got = tuple(inputs[name].shape)
            if got != (mask_BxM.shape[0], *shape):
                raise ValueError(
                    f"inputs[{name!r}] must have shape (B, *{shape}) with "
                    f"B={mask_BxM.shape[0]} (from mask_BxM), got {got}"
                )

    @nn.compact
    def __call__(
        self, inputs: Mapping[str, jax.Array], mask_BxM: jax.Array, *, train: bool = False
    ) -> dict[str, jax.Array]:
        mask_BxM = jnp.asarray(mask_BxM).astype(bool)
        self._check_inputs(inputs, mask_BxM)
        mask_BxMx1 = mask_BxM[..., None]

        # f_i: one encoder per modality (shapes differ, so a Python loop, not vmap).
        h_list = []
        for name, encoder_name in zip(self.modality_names, self.encoder_names, strict=True):
            encoder = enc.make_encoder(
                encoder_name,
                latent_dim=self.latent_dim,
                hidden_dim=self.hidden_dim,
                dropout_rate=self.dropout_rate,
                cnn1d_features=self.cnn1d_features,
                cnn2d_features=self.cnn2d_features,
                seq_width=self.seq_width or self.latent_dim,
                seq_layers=self.seq_layers,
                num_heads=self.num_heads,
                name=f"encoder_{name}",
            )
            h_list.append(encoder(jnp.asarray(inputs[name], jnp.float32), train=train))
        # `where`, not a multiply: an absent modality's h_i becomes exactly zero even
        # if its input held inf/NaN, so nothing downstream depends on it.
        h_BxMxD = jnp.where(mask_BxMx1, jnp.stack(h_list, axis=1), 0.0)

        # f_0: fusion over present modalities only.
        if self.fusion == "attention":
            fusion = AttentionFusion(
                self.latent_dim, self.num_heads, self.hidden_dim, self.dropout_rate, name="fusion"
            )
        elif self.fusion == "mean":
            fusion = MeanFusion(self.latent_dim, self.hidden_dim, self.dropout_rate, name="fusion")
        else:
            raise ValueError(f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        h0_BxD = fusion(h_BxMxD, mask_BxM, train=train)

        # c: one projection head shared by the fused and the unimodal latents, so
        # s and z_i live on the same sphere and can be compared by dot product.
        proj = enc.MLP((self.hidden_dim,), self.proj_dim, self.dropout_rate, name="projection")
        s_BxP = l2_normalize(proj(h0_BxD, train=train))
        z_BxMxP = l2_normalize(proj(h_BxMxD, train=train))

        # g_i and r_i: per-modality unique modules and latent decoders.
        u_list, h_hat_list = [], []
        for i, name in enumerate(self.modality_names):
            g = enc.MLP(
                (self.hidden_dim,), self.unique_dim, self.dropout_rate, name=f"unique_{name}"
            )
            u_BxK = jnp.where(mask_BxMx1[:, i], g(h_BxMxD[:, i], train=train), 0.0)
            r = enc.MLP(
                (self.hidden_dim,), self.latent_dim, self.dropout_rate, name=f"decoder_{name}"
            )
            h_hat_list.append(r(jnp.concatenate([s_BxP, u_BxK], axis=-1), train=train))
            u_list.append(u_BxK)
        u_BxMxK = jnp.stack(u_list, axis=1)
        h_hat_BxMxD = jnp.stack(h_hat_list, axis=1)

        # q: fused embedding, masked unique features, and the mask bits themselves,
        # so the classifier knows which zeros mean "absent" rather than "small".
        batch_size = mask_BxM.shape[0]
        q_in_BxI = jnp.concatenate(
            [s_BxP, u_BxMxK.reshape(batch_size, -1), mask_BxM.astype(jnp.float32)], axis=-1
        )
        q = enc.MLP(
            (self.hidden_dim, self.hidden_dim),
            self.num_outputs,
            self.dropout_rate,
            name="classifier",
        )
        logits_BxC = q(q_in_BxI, train=train)

        return {
            "h_BxMxD": h_BxMxD,
            "h0_BxD": h0_BxD,
            "s_BxP": s_BxP,
            "z_BxMxP": z_BxMxP,
            "u_BxMxK": u_BxMxK,
            "h_hat_BxMxD": h_hat_BxMxD,
            "logits_BxC": logits_BxC,
        }


def _positive_int(cfg: Mapping[str, Any], field: str) -> int:
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{field} must be a positive int, got {value!r}")
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return dict(value)


def _int_tuple(cfg: Mapping[str, Any], field: str) -> tuple[int, ...]:
    value = tuple(cfg[field])
    if not value or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"model.{field} must be a non-empty sequence of positive ints, got {value}"
        )
    return value


def build_model(
    model_config: ml_collections.ConfigDict | Mapping[str, Any], dataset_spec
) -> Robult:
    """Validates `model_config` against `dataset_spec` and returns a `Robult` module.

    `dataset_spec` is duck-typed: `.modalities` (each with `.name`, `.shape`,
    `.kind`) and `.num_outputs`. Fields missing from `model_config` take the
    values of `default_model_config()`.
    """
    cfg = default_model_config().to_dict()
    cfg.update(_as_dict(model_config))

    names = tuple(m.name for m in dataset_spec.modalities)
    if not names:
        raise ValueError("dataset_spec.modalities is empty; the model needs at least one modality")
    if len(set(names)) != len(names):
        raise ValueError(f"dataset_spec.modalities has duplicate names: {names}")

    encoder_cfg = _as_dict(cfg["encoders"])
    unknown = sorted(set(encoder_cfg) - set(names))
    if unknown:
        raise ValueError(
            f"model.encoders names modalities {unknown} that the dataset does not have; "
            f"dataset modalities: {names}"
        )
    encoder_names = []
    for m in dataset_spec.modalities:
        encoder_name = encoder_cfg.get(m.name) or enc.default_encoder(m.kind, m.name)
        enc.check_encoder(encoder_name, m.name, tuple(m.shape), m.kind)
        encoder_names.append(encoder_name)

    if cfg["fusion"] not in FUSIONS:
        raise ValueError(f"model.fusion must be one of {FUSIONS}, got {cfg['fusion']!r}")
    latent_dim = _positive_int(cfg, "latent_dim")
    num_heads = _positive_int(cfg, "num_heads")
    if cfg["fusion"] == "attention" and latent_dim % num_heads:
        raise ValueError(
            f"model.latent_dim ({latent_dim}) must be divisible by model.num_heads ({num_heads})"
        )
    seq_layers = _positive_int(cfg, "seq_layers")
    seq_width = cfg["seq_width"]
    if isinstance(seq_width, bool) or not isinstance(seq_width, int) or seq_width < 0:
        raise ValueError(f"model.seq_width must be an int >= 0 (0 = latent_dim), got {seq_width!r}")
    if "transformer" in encoder_names and (seq_width or latent_dim) % num_heads:
        raise ValueError(
            f"the transformer encoder's width (model.seq_width={seq_width}, 0 = latent_dim "
            f"{latent_dim}) must be divisible by model.num_heads ({num_heads})"
        )
    dropout_rate = float(cfg["dropout_rate"])
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"model.dropout_rate must be in [0, 1), got {dropout_rate}")
    num_outputs = int(dataset_spec.num_outputs)
    if num_outputs < 1:
        raise ValueError(f"dataset_spec.num_outputs must be >= 1, got {num_outputs}")

    return Robult(
        modality_names=names,
        modality_shapes=tuple(tuple(int(d) for d in m.shape) for m in dataset_spec.modalities),
        encoder_names=tuple(encoder_names),
        num_outputs=num_outputs,
        latent_dim=latent_dim,
        unique_dim=_positive_int(cfg, "unique_dim"),
        proj_dim=_positive_int(cfg, "proj_dim"),
        fusion=cfg["fusion"],
        num_heads=num_heads,
        hidden_dim=_positive_int(cfg, "hidden_dim"),
        dropout_rate=dropout_rate,
        cnn1d_features=_int_tuple(cfg, "cnn1d_features"),
        cnn2d_features=_int_tuple(cfg, "cnn2d_features"),
        seq_layers=seq_layers,
        seq_width=seq_width,
    )
