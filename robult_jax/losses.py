"""Robult's losses: pure, per-example, jit-able functions (method.md section 3).

Written in the style of optax's loss modules: arrays first, keyword-only
hyper-parameters, masks as arguments, per-example outputs. Shape checks use
static shapes only, so every function also validates under `jax.jit` (string
hyper-parameters such as `task` and `mode` must then be static).

Shape legend: B batch, M modalities, D latent width, P projection width,
C classes (or outputs).
"""

import jax
import jax.numpy as jnp

from robult_jax.task_weights import rbf, sq_dist, task_positive_weights

TASKS = ("multiclass", "multilabel", "regression")
MODES = ("soft", "hard", "none")

# Finite stand-in for -inf on masked-out candidates: exp() of it underflows
# to 0, while (unlike -inf) it never yields inf - inf = nan in log_softmax or
# 0 * inf = nan in the weighted sum and its gradient.
_MASKED_LOGIT = -1e9


def _check_shape(name: str, x: jax.Array, shape: tuple[int | None, ...], ref: str) -> None:
    """Raises a ValueError unless x.shape matches shape (None = any size)."""
    ok = x.ndim == len(shape) and all(
        s is None or s == d for s, d in zip(shape, x.shape, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} has shape {x.shape}, expected {want} to match {ref}.")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; allowed values are {allowed}.")


def _check_positive(name: str, value: float) -> None:
    # Traced values cannot be checked without breaking jit; Python numbers are.
    if isinstance(value, int | float) and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def masked_mean(x: jax.Array, where: jax.Array) -> jax.Array:
    """Mean of x over the entries where `where` is True; 0 when there are none.

    `jnp.where` (not `x * where`) keeps nan/inf in masked-out entries from leaking.

    >>> masked_mean(jnp.array([1.0, 3.0, jnp.nan]), jnp.array([True, True, False]))
    Array(2., dtype=float32)
    """
    if x.shape != where.shape:
        raise ValueError(
            f"x has shape {x.shape} but where has shape {where.shape}; they must match."
        )
    where = where.astype(bool)
    total = jnp.sum(jnp.where(where, x, 0))
    return total / jnp.maximum(jnp.sum(where), 1).astype(total.dtype)


def supervised_loss(
    logits_BxC: jax.Array, labels: jax.Array, *, task: str = "multiclass"
) -> jax.Array:
    """Per-example task loss L_sup (method.md 3.1); mask unlabeled rows outside.

    - "multiclass": -log softmax(logits)[y], labels (B,) int in [0, C).
    - "multilabel": mean_c BCE(sigmoid(logits_c), y_c), labels (B, C) in [0, 1].
    - "regression": |logits[:, 0] - y| (L1), labels (B,) float, C must be 1.

    Out-of-range class indices cannot be checked under jit; they give 0 loss
    for "multiclass" (as `jnp.take_along_axis` with fill) and must be avoided.

    >>> supervised_loss(jnp.zeros((2, 4)), jnp.array([0, 3])).round(4)
    Array([1.3863, 1.3863], dtype=float32)

    Returns:
      loss_B, shape (B,).
    """
    _check_choice("task", task, TASKS)
    if logits_BxC.ndim != 2:
        raise ValueError(f"logits_BxC must have shape (B, C), got {logits_BxC.shape}.")
    b, c = logits_BxC.shape
    if task == "multiclass":
        _check_shape(
            "labels", labels, (b,), f"logits_BxC {logits_BxC.shape} (multiclass: int (B,))"
        )
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"multiclass labels must be integers, got dtype {labels.dtype}.")
        logp_BxC = jax.nn.log_softmax(logits_BxC, axis=-1)
        return -jnp.take_along_axis(logp_BxC, labels[:, None], axis=-1, mode="fill", fill_value=0)[
            :, 0
        ]
    if task == "multilabel":
        _check_shape("labels", labels, (b, c), f"logits_BxC {logits_BxC.shape} (multilabel)")
        y_BxC = labels.astype(logits_BxC.dtype)
        # log_sigmoid(-x) = log(1 - sigmoid(x)), stable for large |x|.
        bce_BxC = -(
            y_BxC * jax.nn.log_sigmoid(logits_BxC) + (1 - y_BxC) * jax.nn.log_sigmoid(-logits_BxC)
        )
        return jnp.mean(bce_BxC, axis=-1)
    if c != 1:
        raise ValueError(f"regression needs logits_BxC of shape (B, 1), got {logits_BxC.shape}.")
    _check_shape("labels", labels, (b,), f"logits_BxC {logits_BxC.shape} (regression: float (B,))")
    return jnp.abs(logits_BxC[:, 0] - labels.astype(logits_BxC.dtype))


def positive_weights(
    labels_B: jax.Array,
    is_labeled_B: jax.Array,
    probs_BxC: jax.Array,
    s_BxP: jax.Array,
    *,
    mode: str = "soft",
    sigma: float = 0.5,
    threshold: float = 0.0,
    centroids_CxP: jax.Array | None = None,
    centroid_valid_C: jax.Array | None = None,
    task: str = "multiclass",
    label_sigma: float = 0.5,
) -> jax.Array:
    """Positive weights w_jk in [0, 1] of the soft PU contrastive loss (method.md 3.2).

    This docstring describes task="multiclass"; "multilabel" and "regression"
    (see `task_positive_weights` and docs/task_types.md) use the same shape of rule
    with a task-specific label agreement a_jk. `label_sigma` is used by
    "regression" only; the centroids by "multiclass" only (ignored otherwise,
    so that a trainer may pass its state unconditionally).

    Computed under stop_gradient. Labels of unlabeled rows are never read.
    Let p_j = one_hot(y_j) if j is labeled else probs_j, and let j "pass" the
    threshold if j is labeled or max_c p_j(c) >= threshold.

    - "none": w = I (only k == j is positive; plain InfoNCE).
    - "hard": w_jk = 1[yhat_j == yhat_k] * pass_j * pass_k, with yhat = y for
      labeled rows and argmax p for unlabeled rows; w_jj = 1.
    - "soft": w_jj = 1; both labeled: w_jk = 1[y_j == y_k]; otherwise
      w_jk = a_jk * rho_j * rho_k * pass_j * pass_k with a_jk = <p_j, p_k>.
      rho = 1 for labeled rows. For unlabeled j of predicted class c,
      rho_j = mean over labeled l in the batch with y_l == c of
      exp(-||s_j - s_l||^2 / (2 sigma^2)); with no such l, the same kernel to
      centroids_CxP[c] if centroid_valid_C[c]; with neither, rho_j = 0, so j's
      off-diagonal pairs count as negatives (the conservative choice: no
      evidence of j's class, so no pull towards it).

    The threshold applies on both sides of a pair (j or k unconfident -> 0):
    a pair is only as trustworthy as its less confident member.

    Args:
      labels_B: (B,) int class indices ("multilabel": (B, C) 0/1 label vectors;
        "regression": (B,) float targets); rows with is_labeled False are ignored.
      is_labeled_B: (B,) bool.
      probs_BxC: (B, C) the classifier's predictions used as targets: softmax
        probabilities ("multilabel": sigmoid probabilities (B, C);
        "regression": the predicted value, (B, 1)).
      s_BxP: (B, P) fused embeddings, for the RBF proximity.
      centroids_CxP: optional (C, P) per-class EMA of labeled embeddings.
      centroid_valid_C: optional (C,) bool, which centroids exist (default all).

    >>> positive_weights(jnp.array([0, 1]), jnp.array([True, True]),
    ...                  jnp.eye(2), jnp.zeros((2, 3)))
    Array([[1., 0.],
           [0., 1.]], dtype=float32)

    Returns:
      w_BxB, shape (B, B): row j = anchor, column k = candidate.
    """
    _check_choice("mode", mode, MODES)
    _check_choice("task", task, TASKS)
    _check_positive("sigma", sigma)
    _check_positive("label_sigma", label_sigma)
    if isinstance(threshold, int | float) and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    if probs_BxC.ndim != 2 or s_BxP.ndim != 2:
        raise ValueError(
            f"probs_BxC {probs_BxC.shape} and s_BxP {s_BxP.shape} must both be 2-D (B, C), (B, P)."
        )
    b, c = probs_BxC.shape
    p = s_BxP.shape[1]
    ref = f"probs_BxC {probs_BxC.shape}"
    _check_shape("labels_B", labels_B, (b, c) if task == "multilabel" else (b,), ref)
    _check_shape("is_labeled_B", is_labeled_B, (b,), ref)
    _check_shape("s_BxP", s_BxP, (b, None), ref)
    if task == "regression" and c != 1:
        raise ValueError(f"regression needs predictions probs_BxC of shape (B, 1), got {ref}.")
    if task != "multiclass":
        return task_positive_weights(
            labels_B, is_labeled_B, probs_BxC, s_BxP, task=task, mode=mode, sigma=sigma,
            threshold=threshold, label_sigma=label_sigma,
        )  # fmt: skip
    if centroid_valid_C is not None and centroids_CxP is None:
        raise ValueError("centroid_valid_C was given without centroids_CxP.")
    if centroids_CxP is not None:
        _check_shape("centroids_CxP", centroids_CxP, (c, p), f"{ref} and s_BxP {s_BxP.shape}")
        if centroid_valid_C is not None:
            _check_shape("centroid_valid_C", centroid_valid_C, (c,), ref)

    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    eye_BxB = jnp.eye(b, dtype=dtype)
    if mode == "none":
        return eye_BxB
    if not jnp.issubdtype(labels_B.dtype, jnp.integer):
        raise ValueError(f"mode {mode!r} needs integer class labels_B, got dtype {labels_B.dtype}.")

    lab_B = is_labeled_B.astype(bool)
    probs_BxC = jax.lax.stop_gradient(probs_BxC).astype(dtype)
    # Zero the labels of unlabeled rows so that nothing below can depend on them.
    y_B = jnp.where(lab_B, labels_B, 0)
    pred_B = jnp.argmax(probs_BxC, axis=-1)
    yhat_B = jnp.where(lab_B, y_B, pred_B)
    pass_B = lab_B | (jnp.max(probs_BxC, axis=-1) >= threshold)
    pass_BxB = pass_B[:, None] & pass_B[None, :]
    both_lab_BxB = lab_B[:, None] & lab_B[None, :]
    same_BxB = yhat_B[:, None] == yhat_B[None, :]

    if mode == "hard":
        w_BxB = (same_BxB & pass_BxB).astype(dtype)
        return jnp.maximum(w_BxB, eye_BxB)

    p_BxC = jnp.where(lab_B[:, None], jax.nn.one_hot(y_B, c, dtype=dtype), probs_BxC)
    a_BxB = p_BxC @ p_BxC.T

    s_BxP = jax.lax.stop_gradient(s_BxP).astype(dtype)
    # rho from labeled references in the batch: k_jl * [l labeled and y_l == pred_j].
    kernel_BxB = rbf(sq_dist(s_BxP, s_BxP), sigma)
    ref_BxB = lab_B[None, :] & (y_B[None, :] == pred_B[:, None])
    n_ref_B = jnp.sum(ref_BxB, axis=-1)
    rho_batch_B = jnp.sum(jnp.where(ref_BxB, kernel_BxB, 0), axis=-1) / jnp.maximum(n_ref_B, 1)
    if centroids_CxP is None:
        rho_fallback_B = jnp.zeros((b,), dtype)
    else:
        cent_BxP = jax.lax.stop_gradient(centroids_CxP).astype(dtype)[pred_B]
        valid_C = (
            jnp.ones((c,), bool) if centroid_valid_C is None else centroid_valid_C.astype(bool)
        )
        rho_cent_B = rbf(jnp.sum(jnp.square(s_BxP - cent_BxP), axis=-1), sigma)
        rho_fallback_B = jnp.where(valid_C[pred_B], rho_cent_B, 0)
    rho_B = jnp.where(lab_B, 1, jnp.where(n_ref_B > 0, rho_batch_B, rho_fallback_B))

    w_soft_BxB = a_BxB * rho_B[:, None] * rho_B[None, :] * pass_BxB
    w_BxB = jnp.where(both_lab_BxB, same_BxB.astype(dtype), w_soft_BxB)
    w_BxB = jnp.where(eye_BxB > 0, 1, w_BxB)
    return jax.lax.stop_gradient(w_BxB)


def soft_pu_contrastive_loss(
    s_BxP: jax.Array,
    z_BxMxP: jax.Array,
    labels_B: jax.Array,
    is_labeled_B: jax.Array,
    probs_BxC: jax.Array,
    mask_BxM: jax.Array,
    *,
    mode: str = "soft",
    temperature: float = 0.1,
    sigma: float = 0.5,
    threshold: float = 0.0,
    centroids_CxP: jax.Array | None = None,
    centroid_valid_C: jax.Array | None = None,
    task: str = "multiclass",
    label_sigma: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """Soft positive-unlabeled contrastive loss between s and each z_i (method.md 3.2).

    For modality i, anchor j and candidates k with modality i present (m_ki):

        logit_ijk = <s_j, z_ik> / tau
        l_ij = - sum_k w_jk m_ki log softmax_{k: m_ki}(logit_ijk) / sum_k w_jk m_ki

    with w = positive_weights(..., task=task, label_sigma=label_sigma), so
    labels_B and probs_BxC follow positive_weights' per-task shapes (regression:
    probs_BxC is the predicted value, (B, 1)). The pair (j, i) is valid when m_ji: then
    the positive k == j exists and the denominator is >= 1. Invalid pairs get
    loss 0 with zero (finite) gradient; absent rows of z may hold garbage,
    even nan. The softmax runs over the whole (global) batch: under jit with
    a sharded batch, XLA gathers the candidates (see jax_notes.md).

    Returns:
      loss_BxM: (B, M) per-example, per-modality loss (0 where not valid).
      valid_BxM: (B, M) bool, = mask_BxM.
    Reduce with `reduce_pu_losses`.
    """
    _check_choice("mode", mode, MODES)
    _check_positive("temperature", temperature)
    if s_BxP.ndim != 2:
        raise ValueError(f"s_BxP must have shape (B, P), got {s_BxP.shape}.")
    b, p = s_BxP.shape
    if z_BxMxP.ndim != 3:
        raise ValueError(f"z_BxMxP must have shape (B, M, P), got {z_BxMxP.shape}.")
    m = z_BxMxP.shape[1]
    _check_shape("z_BxMxP", z_BxMxP, (b, m, p), f"s_BxP {s_BxP.shape}")
    _check_shape("mask_BxM", mask_BxM, (b, m), f"z_BxMxP {z_BxMxP.shape}")
    _check_shape("probs_BxC", probs_BxC, (b, None), f"s_BxP {s_BxP.shape}")
    w_BxB = positive_weights(
        labels_B,
        is_labeled_B,
        probs_BxC,
        s_BxP,
        mode=mode,
        sigma=sigma,
        threshold=threshold,
        centroids_CxP=centroids_CxP,
        centroid_valid_C=centroid_valid_C,
        task=task,
        label_sigma=label_sigma,
    )

    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    present_BxM = mask_BxM.astype(bool)
    # Sanitise absent rows first: a nan there would otherwise reach the
    # gradient of s through the matmul even though its logit is masked.
    z_BxMxP = jnp.where(present_BxM[..., None], z_BxMxP, 0).astype(dtype)
    logits_MxBxB = jnp.einsum("jp,kmp->mjk", s_BxP.astype(dtype), z_BxMxP) / temperature
    cand_Mx1xB = present_BxM.T[:, None, :]
    logits_MxBxB = jnp.where(cand_Mx1xB, logits_MxBxB, _MASKED_LOGIT)
    logsm_MxBxB = jnp.where(cand_Mx1xB, jax.nn.log_softmax(logits_MxBxB, axis=-1), 0)

    wm_MxBxB = w_BxB[None] * cand_Mx1xB
    num_MxB = -jnp.sum(wm_MxBxB * logsm_MxBxB, axis=-1)
    den_MxB = jnp.sum(wm_MxBxB, axis=-1)
    valid_MxB = present_BxM.T
    loss_MxB = jnp.where(valid_MxB, num_MxB / jnp.where(valid_MxB, den_MxB, 1), 0)
    return loss_MxB.T, present_BxM


def reduce_pu_losses(
    loss_BxM: jax.Array, valid_BxM: jax.Array, is_labeled_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(L_lb, L_ulb): mean of loss over valid (j, i) with j labeled / unlabeled.

    Each is sum(loss * valid * sel) / max(1, count), so 0 when empty.
    """
    _check_shape("valid_BxM", valid_BxM, loss_BxM.shape, f"loss_BxM {loss_BxM.shape}")
    _check_shape("is_labeled_B", is_labeled_B, loss_BxM.shape[:1], f"loss_BxM {loss_BxM.shape}")
    valid_BxM = valid_BxM.astype(bool)
    lab_Bx1 = is_labeled_B.astype(bool)[:, None]
    l_lb = masked_mean(loss_BxM, valid_BxM & lab_Bx1)
    l_ulb = masked_mean(loss_BxM, valid_BxM & ~lab_Bx1)
    return l_lb, l_ulb


def latent_reconstruction_loss(
    h_hat_BxMxD: jax.Array, h_BxMxD: jax.Array, mask_BxM: jax.Array, *, stop_gradient: bool = True
) -> jax.Array:
    """Latent reconstruction L_rec per example and modality (method.md 3.3).

        l_ji = mean_d (h_hat_jid - sg(h_jid))^2  if m_ji else 0

    The mean over D (not the sum) keeps the scale independent of the latent
    width. sg is stop_gradient when `stop_gradient`, so the encoders are not
    pulled towards what the decoder can produce. Absent rows may hold garbage
    (even nan): loss and gradients there are exactly 0.

    >>> latent_reconstruction_loss(jnp.ones((1, 2, 4)), jnp.zeros((1, 2, 4)),
    ...                            jnp.array([[True, False]]))
    Array([[1., 0.]], dtype=float32)

    Returns:
      loss_BxM, shape (B, M).
    """
    if h_hat_BxMxD.ndim != 3:
        raise ValueError(f"h_hat_BxMxD must have shape (B, M, D), got {h_hat_BxMxD.shape}.")
    _check_shape("h_BxMxD", h_BxMxD, h_hat_BxMxD.shape, f"h_hat_BxMxD {h_hat_BxMxD.shape}")
    _check_shape("mask_BxM", mask_BxM, h_hat_BxMxD.shape[:2], f"h_hat_BxMxD {h_hat_BxMxD.shape}")
    if stop_gradient:
        h_BxMxD = jax.lax.stop_gradient(h_BxMxD)
    present_BxMx1 = mask_BxM.astype(bool)[..., None]
    # Mask the difference, not the square: the gradient of where() is 0 on the
    # unselected side, and a nan difference there is never multiplied.
    diff_BxMxD = jnp.where(present_BxMx1, h_hat_BxMxD - h_BxMxD, 0)
    return jnp.mean(jnp.square(diff_BxMxD), axis=-1)
