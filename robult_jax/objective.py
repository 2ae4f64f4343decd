"""The Robult objective and the pure train step.

L = w_sup * L_sup + w_lb * L_lb + w_ulb * L_ulb + w_rec * L_rec  (method.md section 3).

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
import ml_collections
import optax

from robult_jax import losses


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the config and the data."""

    step: jax.Array
    params: Any
    opt_state: Any
    # Per-class EMA of labeled fused embeddings: the RBF fallback reference when
    # a class has no labeled sample in the batch (method.md 3.2) [ours].
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


def prediction_targets(logits_BxC: jax.Array, task: str) -> jax.Array:
    """What the PU weights read as the classifier's belief (docs/task_types.md):
    softmax probabilities (multiclass), sigmoid probabilities (multilabel), the
    predicted value itself, (B, 1) (regression)."""
    if task == "multiclass":
        return jax.nn.softmax(logits_BxC, axis=-1)
    if task == "multilabel":
        return jax.nn.sigmoid(logits_BxC)
    return logits_BxC


def compute_losses(
    params: Any,
    model: nn.Module,
    batch: dict,
    key: jax.Array,
    state: TrainState,
    loss_config: ml_collections.ConfigDict,
    task: str,
) -> tuple[jax.Array, dict]:
    """Total loss and its terms for one batch. Returns (loss, aux)."""
    mask_BxM = batch["mask"]
    is_labeled_B = batch["is_labeled"]
    labels = batch["labels"]
    out = model.apply(
        {"params": params}, batch["inputs"], mask_BxM, train=True, rngs={"dropout": key}
    )
    terms = {}
    sup_B = losses.supervised_loss(out["logits_BxC"], labels, task=task)
    terms["sup"] = losses.masked_mean(sup_B, is_labeled_B)

    if loss_config.w_lb or loss_config.w_ulb:
        # The classifier's beliefs decide soft positives; they are targets, not paths
        # for gradients (positive_weights also stops them).
        probs_BxC = prediction_targets(jax.lax.stop_gradient(out["logits_BxC"]), task)
        pu_BxM, valid_BxM = losses.soft_pu_contrastive_loss(
            out["s_BxP"],
            out["z_BxMxP"],
            labels,
            is_labeled_B,
            probs_BxC,
            mask_BxM,
            mode=loss_config.pu_mode,
            temperature=loss_config.temperature,
            sigma=loss_config.sigma,
            threshold=loss_config.threshold,
            centroids_CxP=state.centroids_CxP,
            centroid_valid_C=state.centroid_valid_C > 0,
            task=task,
            label_sigma=loss_config.label_sigma,
        )
        terms["lb"], terms["ulb"] = losses.reduce_pu_losses(pu_BxM, valid_BxM, is_labeled_B)
    if loss_config.w_rec:
        rec_BxM = losses.latent_reconstruction_loss(
            out["h_hat_BxMxD"],
            out["h_BxMxD"],
            mask_BxM,
            stop_gradient=loss_config.rec_stop_gradient,
        )
        terms["rec"] = losses.masked_mean(rec_BxM, mask_BxM)

    weights = {
        "sup": loss_config.w_sup,
        "lb": loss_config.w_lb,
        "ulb": loss_config.w_ulb,
        "rec": loss_config.w_rec,
    }
    total = sum(weights[name] * value for name, value in terms.items())
    pred_B = jnp.argmax(out["logits_BxC"], -1) if task == "multiclass" else None
    aux = {"terms": terms, "s_BxP": out["s_BxP"]}
    if pred_B is not None:
        aux["labeled_accuracy"] = losses.masked_mean(
            (pred_B == labels).astype(jnp.float32), is_labeled_B
        )
    return total, aux


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_config: ml_collections.ConfigDict,
    task: str,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds `train_step(state, batch, key) -> (state, metrics)` (not yet jitted)."""

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        # One key per step, never reused: fold the step into the run's train key.
        step_key = jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(compute_losses, has_aux=True)
        (loss, aux), grads = grad_fn(state.params, model, batch, step_key, state, loss_config, task)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        centroids_CxP, valid_C = state.centroids_CxP, state.centroid_valid_C
        if task == "multiclass":
            centroids_CxP, valid_C = update_centroids(
                centroids_CxP,
                valid_C,
                aux["s_BxP"],
                batch["labels"],
                batch["is_labeled"],
                decay=loss_config.centroid_decay,
            )
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            centroids_CxP=centroids_CxP,
            centroid_valid_C=valid_C,
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        metrics["param_norm"] = optax.tree.norm(params)
        metrics.update({f"loss_{k}": v for k, v in aux["terms"].items()})
        if "labeled_accuracy" in aux:
            metrics["labeled_accuracy"] = aux["labeled_accuracy"]
        return new_state, metrics

    return train_step


def make_optimizer(
    optim_config: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
    """AdamW on a warm-up + cosine schedule, after global-norm clipping."""
    warmup = min(optim_config.warmup_steps, max(num_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim_config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=optim_config.learning_rate * 0.01,
    )
    return optax.chain(
        optax.clip_by_global_norm(optim_config.grad_clip_norm),
        optax.adamw(schedule, weight_decay=optim_config.weight_decay),
    )
