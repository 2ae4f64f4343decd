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

from robult_jax import losses, parallel
from robult_jax.config import LossConfig, OptimConfig, ParallelConfig
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


def _batch_mean(axis_name: str | None) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`losses.masked_mean` over the global batch.

    Under `jax.shard_map` (`axis_name` set) each device holds some rows: it
    returns this device's share, sum over its rows / the *global* count, whose
    psum over the axis is the global masked mean. A mean over the local rows
    would weigh a device's rows by 1 / its own count, wrong whenever devices
    hold different numbers of valid rows (labeled rows all sit on the first
    devices).
    """
    if axis_name is None:
        return losses.masked_mean

    def share(x: jax.Array, where: jax.Array) -> jax.Array:
        where = where.astype(bool)
        total = jnp.sum(jnp.where(where, x, 0))
        count = jax.lax.psum(jnp.sum(where), axis_name)
        return total / jnp.maximum(count, 1).astype(total.dtype)

    return share


def compute_losses(
    params: Any,
    model: nn.Module,
    batch: dict,
    key: jax.Array,
    state: TrainState,
    cfg: LossConfig,
    task: Task,
    *,
    axis_name: str | None = None,
) -> tuple[jax.Array, dict]:
    """Total loss and its terms for one batch. Returns (loss, aux).

    `axis_name`: inside `jax.shard_map` over that axis, `batch` holds this
    device's rows; the loss and the terms returned are then this device's
    shares (their psum over the axis is the global value), and the
    contrastive loss sees the candidates of the whole global batch.
    """
    mean = _batch_mean(axis_name)
    mask_BxM, labels = batch["mask"], batch["labels"]
    out = model.apply(
        {"params": params}, batch["inputs"], mask_BxM, train=True, rngs={"dropout": key}
    )
    # Rows where the fused branch (h_0, s) exists; "paper": every modality present.
    # Every term that needs h_0 or s masks the other rows out.
    fused_B = out["fused_valid_B"]
    lab_B = batch["is_labeled"] & fused_B
    terms = {"sup": mean(task.loss(out["fused_logits_BxC"], labels), lab_B)}
    if cfg.w_uni:  # "paper": the per-modality predictions c(u_i + z_i) learn the task too
        uni_BxM = jax.vmap(task.loss, in_axes=(1, None), out_axes=1)(
            out["uni_logits_BxMxC"], labels
        )
        uni_B = mean_over_present(uni_BxM, mask_BxM)  # absent rows of uni_BxM: c(0), finite
        terms["uni"] = mean(uni_B, batch["is_labeled"] & mask_BxM.any(1))

    if cfg.w_lb or cfg.w_ulb:
        pu_mask_BxM = mask_BxM & fused_B[:, None]  # rows without s: neither anchor nor candidate
        # Shard_map: every device gathers the global batch (G rows) of what the
        # weights and the candidates need, so negatives do not shrink as devices
        # are added, and keeps the loss of its own anchors. Each device computes
        # the whole G x G loss (cheap next to the encoders); gradients reach the
        # other devices' rows through the gather's transpose (a psum-scatter).
        gather = lambda x: x
        if axis_name is not None:
            gather = lambda x: jax.lax.all_gather(x, axis_name, tiled=True)
        s_GxP = gather(out["s_BxP"])
        w_GxG = task.positive_weights(
            gather(labels),
            gather(lab_B),
            gather(task.beliefs(out["fused_logits_BxC"])),
            s_GxP,
            mode=cfg.pu_mode,
            sigma=cfg.sigma,
            threshold=cfg.threshold,
            label_sigma=cfg.label_sigma,
            centroids_CxP=state.centroids_CxP,
            centroid_valid_C=state.centroid_valid_C > 0,
            factored=True,  # multi-class: no G x G array of weights (FactoredWeights)
        )
        pu_GxM, valid_GxM = losses.weighted_contrastive_loss(
            s_GxP, gather(out["z_BxMxP"]), w_GxG, gather(pu_mask_BxM), temperature=cfg.temperature
        )
        pu_BxM, valid_BxM = _own_rows(pu_GxM, axis_name), _own_rows(valid_GxM, axis_name)
        lab_Bx1 = lab_B[:, None]  # as losses.reduce_pu_losses
        terms["lb"] = mean(pu_BxM, valid_BxM & lab_Bx1)
        terms["ulb"] = mean(pu_BxM, valid_BxM & ~lab_Bx1)
    if cfg.w_rec:
        target_BxMxD, rec_mask_BxM = out["h_BxMxD"], mask_BxM
        if cfg.rec_target == "h_0":  # each modality learns to stand in for the fused latent
            target_BxMxD = jnp.broadcast_to(out["h0_BxD"][:, None], target_BxMxD.shape)
            rec_mask_BxM = mask_BxM & fused_B[:, None]
        rec_BxM = losses.latent_reconstruction_loss(
            out["h_hat_BxMxD"], target_BxMxD, rec_mask_BxM, stop_gradient=cfg.rec_stop_gradient
        )
        terms["rec"] = mean(rec_BxM, rec_mask_BxM)

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
        "logits_BxC": out["logits_BxC"],  # for the train metrics, taken over the global batch
    }
    return total, aux


def _own_rows(x_Gx_: jax.Array, axis_name: str | None) -> jax.Array:
    """This device's rows of an all-gathered (tiled) array; all of them outside shard_map."""
    if axis_name is None:
        return x_Gx_
    rows = x_Gx_.shape[0] // jax.lax.axis_size(axis_name)
    return jax.lax.dynamic_slice_in_dim(x_Gx_, jax.lax.axis_index(axis_name) * rows, rows)


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
    *,
    parallel_config: ParallelConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds `train_step(state, batch, key) -> (state, metrics)` (not yet jitted).

    `schedule` is only read to log the learning rate of the step.
    `parallel_config.form` "shard_map" computes the loss and its gradients per
    device over `mesh`'s "data" axis (`_shard_map_loss_and_grads`); "jit"
    (or no config) leaves the partitioning to the compiler. The update of
    parameters, optimizer state and centroids, and the metrics, are the same
    code in both forms, on global arrays: elementwise, or reductions the
    compiler partitions.
    """
    if parallel_config is not None and parallel_config.form == "shard_map":
        if mesh is None:
            raise ValueError('parallel.form="shard_map" needs the mesh to map over.')
        loss_and_grads = _shard_map_loss_and_grads(model, loss_config, task, mesh, parallel_config)
    else:

        def loss_and_grads(state, batch, key):
            grad_fn = jax.value_and_grad(compute_losses, has_aux=True)
            return grad_fn(state.params, model, batch, key, state, loss_config, task)

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        # One key per step, never reused: fold the step into the run's train key.
        step_key = jax.random.fold_in(key, state.step)
        (loss, aux), grads = loss_and_grads(state, batch, step_key)
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
            **task.train_metrics(aux["logits_BxC"], batch["labels"], batch["is_labeled"]),
        }
        return new_state, metrics

    return train_step


def _shard_map_loss_and_grads(
    model: nn.Module,
    loss_config: LossConfig,
    task: Task,
    mesh: jax.sharding.Mesh,
    parallel_config: ParallelConfig,
) -> Callable[[TrainState, dict, jax.Array], tuple[tuple[jax.Array, dict], Any]]:
    """`jax.value_and_grad(compute_losses)` written per device with `jax.shard_map`.

    Each device runs the model on its rows of the batch; `compute_losses`
    all-gathers the contrastive loss's inputs and takes global batch means, so
    the psum of the devices' loss shares is the jit form's loss. Gradients:
    the derivative of a device's share with respect to a replicated parameter
    is psum-med over the axis by autodiff itself (the transpose of using an
    axis-invariant value in per-device code), so they come out as the
    gradient of the global loss. With `parallel.shard_params` each device
    holds a slice of the large parameters and all-gathers them before the
    forward pass; the gather's transpose, a psum-scatter, hands each device
    the global gradient of its slice. Logits, s and the centroid rows come
    back as global (row-sharded) arrays, for the metrics and the centroid EMA.

    Dropout: device d draws its masks from fold_in(key, d), so with
    `model.dropout_rate > 0` the random stream, not the distribution,
    depends on the device count and differs from the jit form's; with
    dropout 0 the two forms give the same step (tests/test_parallel_forms.py).
    """
    axis = parallel.AXIS
    row = jax.sharding.PartitionSpec(axis)
    same = jax.sharding.PartitionSpec()

    def loss_and_grads(state, batch, key):
        specs = parallel.param_specs(
            state.params,
            mesh.size,
            shard_params=parallel_config.shard_params,
            min_size=parallel_config.shard_min_size,
        )

        def gather_params(params):
            def one(x, spec):
                if axis not in spec:
                    return x
                return jax.lax.all_gather(x, axis, axis=spec.index(axis), tiled=True)

            return jax.tree.map(one, params, specs)

        def per_device(params, batch, key, centroids_CxP, valid_C):
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))
            view = TrainState(None, None, None, centroids_CxP, valid_C)  # what the loss reads

            def share(params):
                return compute_losses(
                    gather_params(params), model, batch, key, view, loss_config, task,
                    axis_name=axis,
                )  # fmt: skip

            (loss, aux), grads = jax.value_and_grad(share, has_aux=True)(params)
            loss, terms = jax.lax.psum((loss, aux["terms"]), axis)
            rows = {k: aux[k] for k in ("s_BxP", "centroid_rows_B", "logits_BxC")}
            return loss, terms, rows, grads

        loss, terms, rows, grads = jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(specs, row, same, same, same),
            out_specs=(same, same, row, specs),
        )(state.params, batch, key, state.centroids_CxP, state.centroid_valid_C)
        return (loss, {"terms": terms, **rows}), grads

    return loss_and_grads
