"""The two Robult architectures (docs/method.md section 2), as linen modules.

`build_model(config.model, dataset_spec)` returns `PaperRobult` (the paper's
figure, `model.architecture = "paper"`) or `FusedRobult` (this project's first
reconstruction, `"fused"`). Both are called as
`model.apply({"params": p}, inputs, mask_BxM, train=...)` and return one dict
with the same keys (`logits_BxC`, `fused_logits_BxC`, `fused_valid_B`, `s_BxP`,
`z_BxMxP`, `u_BxMxU`, `h_BxMxD`, `h0_BxD`, `h_hat_BxMxD`; "paper" adds
`uni_logits_BxMxC`;
what each holds: docs/interfaces.md), so that the objective never asks which
architecture it has.

Shape legend: B batch, M modalities, D latent width, K unique width (fused),
P projection width (paper: P = D), U width of the unique u_i (paper: D, fused:
K), C classes (outputs).

Precision: `model.compute_dtype` is the dtype of every layer's computation
("bfloat16": matmuls, convolutions and activations); parameters are float32,
and every output is returned in float32, so that the losses and their
reductions over the batch are float32 in both cases.

Absent modalities: their inputs are replaced by zeros before any encoder and
their h_i, z_i, u_i by zeros after, so no output depends on what an absent
modality's input holds (NaN included), and neither do gradients.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from robult_jax import encoders as enc
from robult_jax import tasks
from robult_jax.config import ModelConfig
from robult_jax.data.types import ModalitySpec


def l2_normalize(x_Bx_: jax.Array, *, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| along the last axis; eps inside the rsqrt keeps x = 0 finite (and its grad)."""
    return x_Bx_ * jax.lax.rsqrt(jnp.sum(jnp.square(x_Bx_), axis=-1, keepdims=True) + eps)


def as_float32(outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The model's outputs with every floating array in float32 (booleans untouched)."""
    return {
        k: v.astype(jnp.float32) if jnp.issubdtype(v.dtype, jnp.floating) else v
        for k, v in outputs.items()
    }


def mean_over_present(x_BxMx_: jax.Array, mask_BxM: jax.Array) -> jax.Array:
    """Mean over the present modalities (axis 1); rows with none present give zeros, not NaN."""
    m = mask_BxM.reshape(mask_BxM.shape + (1,) * (x_BxMx_.ndim - 2)).astype(x_BxMx_.dtype)
    return (x_BxMx_ * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


class Fusion(nn.Module):
    """f_0 of "fused" [ours] over the present h_i, then an MLP: `kind` "attention" (one
    pre-LN transformer block over modality tokens, masked mean-pool) or "mean" (masked mean)."""

    kind: str
    latent_dim: int
    num_heads: int
    hidden_dim: int
    dropout_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxMxD: jax.Array, mask_BxM: jax.Array, *, train: bool) -> jax.Array:
        x_BxMxD, dtype = h_BxMxD, self.dtype
        if self.kind == "attention":
            shape = (h_BxMxD.shape[1], self.latent_dim)
            embed_MxD = self.param("modality_embed_MxD", nn.initializers.normal(0.02), shape)
            # Tells the block which token is which modality (tokens are otherwise unordered).
            x_BxMxD = h_BxMxD + embed_MxD[None].astype(dtype)
            # A row with no modality present would mask every key; let such rows attend
            # to all tokens instead. Their h_i are zeros, so nothing input-dependent
            # enters, and the result is discarded by the masked mean-pool below.
            key_mask_BxM = mask_BxM | ~mask_BxM.any(axis=1, keepdims=True)
            attn_mask_Bx1xMxM = nn.make_attention_mask(jnp.ones_like(key_mask_BxM), key_mask_BxM)
            y_BxMxD = nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads,
                qkv_features=self.latent_dim,
                out_features=self.latent_dim,
                dropout_rate=self.dropout_rate,
                dtype=dtype,
                force_fp32_for_softmax=True,  # a no-op in float32
                name="attention",
            )(nn.LayerNorm(dtype=dtype)(x_BxMxD), mask=attn_mask_Bx1xMxM, deterministic=not train)
            x_BxMxD = x_BxMxD + y_BxMxD
            ff = enc.MLP(
                (self.hidden_dim,), self.latent_dim, self.dropout_rate, dtype=dtype, name="ffn"
            )
            x_BxMxD = x_BxMxD + ff(nn.LayerNorm(dtype=dtype)(x_BxMxD), train=train)
        pooled_BxD = mean_over_present(x_BxMxD, mask_BxM)
        out = enc.MLP(
            (self.hidden_dim,), self.latent_dim, self.dropout_rate, dtype=dtype, name="out_mlp"
        )
        return out(pooled_BxD, train=train)


class _Base(nn.Module):
    """What both architectures share: the config, the inputs check, the encoders f_i."""

    config: ModelConfig
    modalities: tuple[ModalitySpec, ...]
    num_outputs: int
    task: str  # the dataset's task; "paper" combines probabilities with its link function

    def mlp(self, out_dim: int, name: str, hidden: int = 1) -> enc.MLP:
        cfg = self.config
        return enc.MLP(
            (cfg.hidden_dim,) * hidden,
            out_dim,
            cfg.dropout_rate,
            dtype=jnp.dtype(cfg.compute_dtype),
            name=name,
        )

    def encode(
        self, inputs: Mapping[str, jax.Array], mask_BxM: jax.Array, prefix: str, *, train: bool
    ) -> jax.Array:
        """(B, M, D): one encoder per modality (shapes differ: a Python loop, not vmap)."""
        h = []
        for i, m in enumerate(self.modalities):
            encoder = enc.make_encoder(
                self.config.encoder_for(m), self.config, name=f"{prefix}_{m.name}"
            )
            x = jnp.asarray(inputs[m.name], jnp.float32)
            present = mask_BxM[:, i].reshape((-1,) + (1,) * (x.ndim - 1))
            # `where`, not a multiply: NaN/inf in an absent input never reaches the encoder.
            h.append(encoder(jnp.where(present, x, 0.0), train=train))
        return jnp.where(mask_BxM[..., None], jnp.stack(h, axis=1), 0.0)

    def encode_or_reuse(
        self,
        inputs: Mapping[str, jax.Array],
        mask_BxM: jax.Array,
        prefix: str,
        encoded: Mapping[str, jax.Array] | None,
        *,
        train: bool,
    ) -> jax.Array:
        """`encode`, or `encoded[prefix]` (computed once for many masks) masked by mask_BxM.

        An encoder sees one modality of one row, so its output under any mask is
        its output under the data's own mask, zeroed where the mask drops the
        modality: `encoders_only=True` computes those once, `encoded=` reuses them.
        """
        if encoded is None:
            return self.encode(inputs, mask_BxM, prefix, train=train)
        return jnp.where(mask_BxM[..., None], encoded[prefix], 0.0)

    def check_inputs(self, inputs: Mapping[str, jax.Array], mask_BxM: jax.Array) -> jax.Array:
        names = [m.name for m in self.modalities]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"inputs lack modalities {missing}; expected keys {names}")
        mask_BxM = jnp.asarray(mask_BxM).astype(bool)
        if mask_BxM.ndim != 2 or mask_BxM.shape[1] != len(names):
            raise ValueError(f"mask_BxM must have shape (B, {len(names)}), got {mask_BxM.shape}")
        for m in self.modalities:
            got = tuple(inputs[m.name].shape)
            if got != (mask_BxM.shape[0], *m.shape):
                raise ValueError(
                    f"inputs[{m.name!r}] must have shape (B, *{m.shape}) with "
                    f"B={mask_BxM.shape[0]} (from mask_BxM), got {got}"
                )
        return mask_BxM


class PaperRobult(_Base):
    """f_i, f_0, shared g_0, g_i and one shared head c, as the paper's figure draws them."""

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        mask_BxM: jax.Array,
        *,
        train: bool = False,
        encoded: Mapping[str, jax.Array] | None = None,
        encoders_only: bool = False,
    ) -> dict[str, jax.Array]:
        """The outputs (module docstring); `encoders_only` / `encoded`: `encode_or_reuse`."""
        cfg, d = self.config, self.config.latent_dim
        mask_BxM = self.check_inputs(inputs, mask_BxM)
        mask_BxMx1 = mask_BxM[..., None]
        batch = mask_BxM.shape[0]
        h_BxMxD = self.encode_or_reuse(inputs, mask_BxM, "encoder", encoded, train=train)  # f_i

        # f_0: a separate branch over the raw inputs of all modalities. It exists
        # only for rows with every modality present (panel (b) of the figure).
        if cfg.fusion_stems == "own":
            stems_BxMxD = self.encode_or_reuse(
                inputs, mask_BxM, "fusion_stem", encoded, train=train
            )
        else:  # "shared": reuse the f_i trunks (cheaper, couples f_0 to f_i)
            stems_BxMxD = h_BxMxD
        if encoders_only:
            return {"encoder": h_BxMxD, "fusion_stem": stems_BxMxD}
        h0_BxD = self.mlp(d, "fusion")(stems_BxMxD.reshape(batch, -1), train=train)
        complete_B = mask_BxM.all(axis=1)

        g0 = self.mlp(d, "shared_g0")  # ONE g_0 for every branch
        s_BxD = g0(h0_BxD, train=train)
        z_BxMxD = jnp.where(mask_BxMx1, g0(h_BxMxD, train=train), 0.0)
        u_BxMxD = jnp.where(
            mask_BxMx1,
            jnp.stack(
                [
                    self.mlp(d, f"unique_{m.name}")(h_BxMxD[:, i], train=train)  # g_i
                    for i, m in enumerate(self.modalities)
                ],
                axis=1,
            ),
            0.0,
        )
        head = self.mlp(self.num_outputs, "head")  # ONE c for every branch
        fused_logits_BxC = head(h0_BxD, train=train)
        uz_BxMxD = u_BxMxD + z_BxMxD
        uni_logits_BxMxC = head(uz_BxMxD, train=train)

        # Panel (a): some modality missing, so the fusion branch is not used; the
        # present modalities' predictions c(u_i + z_i) are combined [ours].
        if cfg.combine == "mean_probs":  # in float32: probabilities of rare classes
            task = tasks.get(self.task)
            uni_probs_BxMxC = task.probs(uni_logits_BxMxC.astype(jnp.float32))
            probs_BxC = mean_over_present(uni_probs_BxMxC, mask_BxM)
            combined_BxC = task.logits_from_probs(probs_BxC)
        else:  # "mean_latent"
            combined_BxC = head(mean_over_present(uz_BxMxD, mask_BxM), train=train)
        out = as_float32(
            {
                "fused_logits_BxC": fused_logits_BxC,
                "combined_BxC": combined_BxC,
                "fused_valid_B": complete_B,
                "uni_logits_BxMxC": uni_logits_BxMxC,
                "s_BxP": s_BxD,
                "z_BxMxP": z_BxMxD,
                "u_BxMxU": u_BxMxD,
                "h_BxMxD": h_BxMxD,
                "h0_BxD": h0_BxD,
                "h_hat_BxMxD": uz_BxMxD,
            }
        )
        combined_BxC = out.pop("combined_BxC")
        out["logits_BxC"] = jnp.where(complete_B[:, None], out["fused_logits_BxC"], combined_BxC)
        out["s_BxP"], out["z_BxMxP"] = l2_normalize(out["s_BxP"]), l2_normalize(out["z_BxMxP"])
        return out


class FusedRobult(_Base):
    """Encoders f_i, fusion f_0 over the h_i, projection c, unique g_i, decoders r_i, q."""

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        mask_BxM: jax.Array,
        *,
        train: bool = False,
        encoded: Mapping[str, jax.Array] | None = None,
        encoders_only: bool = False,
    ) -> dict[str, jax.Array]:
        """The outputs (module docstring); `encoders_only` / `encoded`: `encode_or_reuse`."""
        cfg = self.config
        mask_BxM = self.check_inputs(inputs, mask_BxM)
        mask_BxMx1 = mask_BxM[..., None]
        h_BxMxD = self.encode_or_reuse(inputs, mask_BxM, "encoder", encoded, train=train)
        if encoders_only:
            return {"encoder": h_BxMxD}

        fusion = Fusion(
            cfg.fusion,
            cfg.latent_dim,
            cfg.num_heads,
            cfg.hidden_dim,
            cfg.dropout_rate,
            jnp.dtype(cfg.compute_dtype),
            name="fusion",
        )
        h0_BxD = fusion(h_BxMxD, mask_BxM, train=train)

        # c: one projection head shared by the fused and the unimodal latents, so
        # s and z_i live on the same sphere and can be compared by dot product.
        proj = self.mlp(cfg.proj_dim, "projection")
        # Normalised in float32 (as_float32 is a no-op in float32 runs).
        s_BxP = l2_normalize(proj(h0_BxD, train=train).astype(jnp.float32))
        z_BxMxP = l2_normalize(proj(h_BxMxD, train=train).astype(jnp.float32))

        u_list, h_hat_list = [], []
        for i, m in enumerate(self.modalities):
            g = self.mlp(cfg.unique_dim, f"unique_{m.name}")
            u_BxK = jnp.where(mask_BxMx1[:, i], g(h_BxMxD[:, i], train=train), 0.0)
            r = self.mlp(cfg.latent_dim, f"decoder_{m.name}")
            h_hat_list.append(r(jnp.concatenate([s_BxP, u_BxK], axis=-1), train=train))
            u_list.append(u_BxK)
        u_BxMxK = jnp.stack(u_list, axis=1)

        # q: fused embedding, masked unique features, and the mask bits themselves,
        # so the classifier knows which zeros mean "absent" rather than "small".
        q_in_BxI = jnp.concatenate(
            [s_BxP, u_BxMxK.reshape(mask_BxM.shape[0], -1), mask_BxM.astype(jnp.float32)], -1
        )
        logits_BxC = self.mlp(self.num_outputs, "classifier", hidden=2)(q_in_BxI, train=train)
        return as_float32(
            {
                "logits_BxC": logits_BxC,
                "fused_logits_BxC": logits_BxC,
                "fused_valid_B": jnp.ones(mask_BxM.shape[:1], bool),
                "s_BxP": s_BxP,
                "z_BxMxP": z_BxMxP,
                "u_BxMxU": u_BxMxK,
                "h_BxMxD": h_BxMxD,
                "h0_BxD": h0_BxD,
                "h_hat_BxMxD": jnp.stack(h_hat_list, axis=1),
            }
        )


def build_model(model_config: ModelConfig, dataset_spec) -> PaperRobult | FusedRobult:
    """The architecture `model_config.architecture` for the modalities of `dataset_spec`.

    `model_config` is the typed config (`robult_jax.config.from_config_dict`),
    already checked against the dataset with `config.check_against_dataset`.
    """
    cls = PaperRobult if model_config.architecture == "paper" else FusedRobult
    return cls(
        config=model_config,
        modalities=tuple(dataset_spec.modalities),
        num_outputs=int(dataset_spec.num_outputs),
        task=dataset_spec.task,
    )
