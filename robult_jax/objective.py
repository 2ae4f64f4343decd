"""The Robult objective and the pure train step (docs/method.md section 3).

    L = w_sup * (L_sup_fused + w_uni * L_sup_uni) + w_lb * L_lb + w_ulb * L_ulb + w_rec * L_rec

`compute_losses` is the whole method in one screen, the same for both
architectures: the model returns the same keys for each (robult_jax/models.py),
and the task object (robult_jax/tasks.py) owns everything that differs between
multi-class, multi-label and regression data.

Shape legend: B batch (labeled rows first), M modalities, D latent width,
P projection width, C classes.

Everything here is a pure function of (state, batch, key): no Python branching
on traced values, so `train_step` compiles once. Loss terms whose weight is 0
in the config are not computed at all (the weights are static Python floats).
"""

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from robult_jax import losses
from robult_jax.config import LossConfig, OptimConfig
from robult_jax.models import mean_over_present
from robult_jax.tasks import Task


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the config and the data."""

    step: jax.Array
    params: Any
    opt_state: Any
    # Per-class EMA of labeled fused embeddings: the RBF fallback reference when
    # a class has no labeled sample in the batch (docs/method.md 3.2) [ours].
    centroids_CxP: jax.Array
    centroid_valid_C: jax.Array  # float 0/1 (checkpoint-friendly)


def update_centroids(
    centroids_CxP: jax.Array,
    valid_C: jax.Array,
    s_BxP: jax.Array,
    labels_B: jax.Array,
    is_labeled_B: jax.Array,
    *,
    decay: float,
) -> tuple[jax.Array, jax.Array]:
    """EMA of each class's mean labeled embedding; classes absent from the batch keep theirs."""
    num_classes = centroids_CxP.shape[0]
    onehot_BxC = jax.nn.one_hot(labels_B, num_classes) * is_labeled_B[:, None]
    count_C = onehot_BxC.sum(0)
    mean_CxP = (onehot_BxC.T @ jax.lax.stop_gradient(s_BxP)) / jnp.maximum(count_C, 1.0)[:, None]
    seen_C = count_C > 0
    # A class seen for the first time takes the batch mean outright (no decay towards 0).
    new_CxP = jnp.where(
        (valid_C > 0)[:, None], decay * centroids_CxP + (1 - decay) * mean_CxP, mean_CxP
    )
    centroids_CxP = jnp.where(seen_C[:, None], new_CxP, centroids_CxP)
    valid_C = jnp.maximum(valid_C, seen_C.astype(valid_C.dtype))
    return centroids_CxP, valid_C


def compute_losses(
    params: Any,
    model: nn.Module,
    batch: dict,
    key: jax.Array,
    state: TrainState,
    cfg: LossConfig,
    task: Task,
) -> tuple[jax.Array, dict]:
    """Total loss and its terms for one batch. Returns (loss, aux)."""
    mask_BxM, labels = batch["mask"], batch["labels"]
    out = model.apply(
        {"params": params}, batch["inputs"], mask_BxM, train=True, rngs={"dropout": key}
    )
    # Rows where the fused branch (h_0, s) exists; "paper": every modality present.
    # Every term that needs h_0 or s masks the other rows out.
    fused_B = out["fused_valid_B"]
    lab_B = batch["is_labeled"] & fused_B
    terms = {"sup": losses.masked_mean(task.loss(out["fused_logits_BxC"], labels), lab_B)}
    if cfg.w_uni:  # "paper": the per-modality predictions c(u_i + z_i) learn the task too
        uni_BxM = jax.vmap(task.loss, in_axes=(1, None), out_axes=1)(
            out["uni_logits_BxMxC"], labels
        )
        uni_B = mean_over_present(uni_BxM, mask_BxM)  # absent rows of uni_BxM: c(0), finite
        terms["uni"] = losses.masked_mean(uni_B, batch["is_labeled"] & mask_BxM.any(1))

    if cfg.w_lb or cfg.w_ulb:
        w_BxB = task.positive_weights(
            labels,
            lab_B,
            task.beliefs(out["fused_logits_BxC"]),
            out["s_BxP"],
            mode=cfg.pu_mode,
            sigma=cfg.sigma,
            threshold=cfg.threshold,
            label_sigma=cfg.label_sigma,
            centroids_CxP=state.centroids_CxP,
            centroid_valid_C=state.centroid_valid_C > 0,
        )
        pu_mask_BxM = mask_BxM & fused_B[:, None]  # rows without s: neither anchor nor candidate
        pu_BxM, valid_BxM = losses.weighted_contrastive_loss(
            out["s_BxP"], out["z_BxMxP"], w_BxB, pu_mask_BxM, temperature=cfg.temperature
        )
        terms["lb"], terms["ulb"] = losses.reduce_pu_losses(pu_BxM, valid_BxM, lab_B)
    if cfg.w_rec:
        target_BxMxD, rec_mask_BxM = out["h_BxMxD"], mask_BxM
        if cfg.rec_target == "h_0":  # each modality learns to stand in for the fused latent
            target_BxMxD = jnp.broadcast_to(out["h0_BxD"][:, None], target_BxMxD.shape)
            rec_mask_BxM = mask_BxM & fused_B[:, None]
        rec_BxM = losses.latent_reconstruction_loss(
            out["h_hat_BxMxD"], target_BxMxD, rec_mask_BxM, stop_gradient=cfg.rec_stop_gradient
        )
        terms["rec"] = losses.masked_mean(rec_BxM, rec_mask_BxM)

    weights = {
        "sup": cfg.w_sup,
        "uni": cfg.w_sup * (cfg.w_uni or 0.0),
        "lb": cfg.w_lb,
        "ulb": cfg.w_ulb,
        "rec": cfg.w_rec,
    }
    total = sum(weights[name] * value for name, value in terms.items())
    aux = {
        "terms": terms,
        "s_BxP": out["s_BxP"],
        "centroid_rows_B": lab_B,
        "train_metrics": task.train_metrics(out["logits_BxC"], labels, batch["is_labeled"]),
    }
    return total, aux


def make_schedule(optim: OptimConfig, num_steps: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine decay to 1% of it at `num_steps`."""
    warmup = min(optim.warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=optim.learning_rate * 0.01,
    )


def make_optimizer(optim: OptimConfig, num_steps: int) -> optax.GradientTransformation:
    """AdamW on `make_schedule`, after global-norm clipping."""
    return optax.chain(
        optax.clip_by_global_norm(optim.grad_clip_norm),
        optax.adamw(make_schedule(optim, num_steps), weight_decay=optim.weight_decay),
    )


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_config: LossConfig,
    task: Task,
    schedule: optax.Schedule,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds `train_step(state, batch, key) -> (state, metrics)` (not yet jitted).

    `schedule` is only read to log the learning rate of the step.
    """

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        # One key per step, never reused: fold the step into the run's train key.
        step_key = jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(compute_losses, has_aux=True)
        (loss, aux), grads = grad_fn(state.params, model, batch, step_key, state, loss_config, task)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        centroids_CxP, valid_C = state.centroids_CxP, state.centroid_valid_C
        if task.uses_centroids:
            centroids_CxP, valid_C = update_centroids(
                centroids_CxP,
                valid_C,
                aux["s_BxP"],
                batch["labels"],
                aux["centroid_rows_B"],
                decay=loss_config.centroid_decay,
            )
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            centroids_CxP=centroids_CxP,
            centroid_valid_C=valid_C,
        )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "learning_rate": schedule(state.step),
            **{f"loss_{k}": v for k, v in aux["terms"].items()},
            **aux["train_metrics"],
        }
        return new_state, metrics

    return train_step
