"""Robult's losses (docs/method.md section 3): pure, per-example, jit-able, optax-style.

Only static shapes and dtypes are checked (a ValueError naming both shapes), so
every check also runs under `jax.jit`; hyper-parameter values are validated with
the config. `task` and `mode` must be static under jit. The contrastive loss is
`weighted_contrastive_loss` with the weights of `positive_weights`.

Shape legend: B batch, M modalities, D latent width, P projection width,
C classes (or outputs).
"""

import jax
import jax.numpy as jnp
import optax

from robult_jax import contrastive
from robult_jax.contrastive import FactoredWeights  # noqa: F401 (re-exported)

# The modes of the PU positive weights (docs/method.md 3.2), defined here only.
PU_MODES = ("soft", "hard", "none")


def check_shape(name: str, x: jax.Array, shape: tuple[int | None, ...], ref: str) -> None:
    """Raises a ValueError unless x.shape matches shape (None = any size).

    The message names x's shape, the expected one and `ref`, the argument that
    fixed it, e.g. "labels_B has shape (7,), expected (8,) to match probs_BxC (8, 3)."
    """
    if x.ndim != len(shape) or any(s not in (None, d) for s, d in zip(shape, x.shape, strict=True)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} has shape {x.shape}, expected {want} to match {ref}.")


def masked_mean(x: jax.Array, where: jax.Array) -> jax.Array:
    """Mean of x over the entries where `where` is True; 0 when there are none.

    `jnp.where` (not `x * where`) keeps nan/inf in masked-out entries from leaking.

    >>> masked_mean(jnp.array([1.0, 3.0, jnp.nan]), jnp.array([True, True, False]))
    Array(2., dtype=float32)
    """
    check_shape("where", where, x.shape, f"x {x.shape}")
    where = where.astype(bool)
    total = jnp.sum(jnp.where(where, x, 0))
    return total / jnp.maximum(jnp.sum(where), 1).astype(total.dtype)


# ----------------------------------------------------------------------------- L_sup


def _check_logits(logits_BxC: jax.Array, name: str, labels: jax.Array, ndim: int) -> None:
    """The classification losses' checks: (B, C) logits, labels of their first `ndim` dims."""
    if logits_BxC.ndim != 2:
        raise ValueError(f"logits_BxC must have shape (B, C), got {logits_BxC.shape}.")
    check_shape(name, labels, logits_BxC.shape[:ndim], f"logits_BxC {logits_BxC.shape}")


def multiclass_loss(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Softmax cross-entropy l_j = -log softmax(x_j)[y_j]; int labels -> loss_B.

    Out-of-range labels cannot be checked under jit: y >= C (or y < -C) gives a
    nan loss (mask such rows out with `masked_mean`), -C <= y < 0 wraps to y + C.

    >>> multiclass_loss(jnp.zeros((2, 4)), jnp.array([0, 3])).round(4)
    Array([1.3863, 1.3863], dtype=float32)
    """
    _check_logits(logits_BxC, "labels_B", labels_B, 1)
    if not jnp.issubdtype(labels_B.dtype, jnp.integer):
        raise ValueError(f"multiclass labels must be integers, got dtype {labels_B.dtype}.")
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)


def multilabel_loss(logits_BxC: jax.Array, labels_BxC: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy over targets y in [0, 1] (0/1 or soft) -> loss_B.

        l_j = mean_c -(y_jc log sigmoid(x_jc) + (1 - y_jc) log sigmoid(-x_jc))

    >>> multilabel_loss(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]])).round(4)
    Array([0.6931], dtype=float32)
    """
    _check_logits(logits_BxC, "labels_BxC", labels_BxC, 2)
    bce_BxC = optax.losses.sigmoid_binary_cross_entropy(logits_BxC, labels_BxC)
    return jnp.mean(bce_BxC, axis=-1)


def regression_loss(preds_Bx1: jax.Array, labels_B: jax.Array) -> jax.Array:
    """L1 loss l_j = |pred_j - y_j| of the head's single output -> loss_B.

    >>> regression_loss(jnp.array([[0.5], [-2.0]]), jnp.array([1.5, -1.0]))
    Array([1., 1.], dtype=float32)
    """
    if preds_Bx1.ndim != 2 or preds_Bx1.shape[1] != 1:
        raise ValueError(f"regression needs preds_Bx1 of shape (B, 1), got {preds_Bx1.shape}.")
    check_shape("labels_B", labels_B, preds_Bx1.shape[:1], f"preds_Bx1 {preds_Bx1.shape}")
    return jnp.abs(preds_Bx1[:, 0] - labels_B.astype(preds_Bx1.dtype))


def supervised_loss(
    logits_BxC: jax.Array, labels: jax.Array, *, task: str = "multiclass"
) -> jax.Array:
    """L_sup (docs/method.md 3.1): `tasks.get(task).loss`, i.e. the `<task>_loss` above.

    Returns loss_B for every row; mask the unlabeled ones outside.

    >>> supervised_loss(jnp.zeros((2, 4)), jnp.array([0, 3])).round(4)
    Array([1.3863, 1.3863], dtype=float32)
    """
    from robult_jax import tasks  # deferred: tasks imports this module

    return tasks.get(task).loss(logits_BxC, labels)


# ----------------------------------------------------------------------------- L_lb, L_ulb


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
    factored: bool = False,
) -> "jax.Array | contrastive.FactoredWeights":
    """w_BxB in [0, 1] (row j = anchor, column k = candidate; docs/method.md 3.2).

    `tasks.get(task).positive_weights`; the modes and rules are in
    `robult_jax.task_weights`. Labels and beliefs (`Task.beliefs`) take the
    task's shapes: multilabel (B, C) label vectors, regression (B,) float
    targets and (B, 1) values. Arguments a task does not use are ignored
    (`label_sigma`: regression only; the centroids, an EMA of labeled embeddings
    per class: multiclass only; `threshold`: not regression), so that a trainer
    may pass its state unconditionally. `factored=True`: the multi-class
    weights as a `FactoredWeights` (no B x B array; the same values, see
    `task_weights.multiclass_weights`); other tasks return the (B, B) array.

    >>> positive_weights(jnp.array([0, 1]), jnp.array([True, True]),
    ...                  jnp.eye(2), jnp.zeros((2, 3)))
    Array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    from robult_jax import tasks  # deferred: tasks imports this module

    return tasks.get(task).positive_weights(
        labels_B, is_labeled_B, probs_BxC, s_BxP, mode=mode, sigma=sigma, threshold=threshold,
        label_sigma=label_sigma, centroids_CxP=centroids_CxP, centroid_valid_C=centroid_valid_C,
        factored=factored,
    )  # fmt: skip


def weighted_contrastive_loss(
    s_BxP: jax.Array,
    z_BxMxP: jax.Array,
    w_BxB: "jax.Array | contrastive.FactoredWeights",
    mask_BxM: jax.Array,
    *,
    temperature: float | jax.Array,
    row_block: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Contrastive loss between anchors s and each modality's candidates z_i, weights w.

    For modality i, anchor j and candidates k with modality i present (m_ki):

        logit_ijk = <s_j, z_ik> / tau
        l_ij = - sum_k w_jk m_ki log softmax_{k: m_ki}(logit_ijk) / sum_k w_jk m_ki

    w is treated as a constant (stop_gradient). w = I gives cross-modal
    InfoNCE; w_jk = 1[y_j == y_k] gives SupCon's multi-positive form with s as
    anchors and z as candidates; `positive_weights` gives the soft PU loss.
    The pair (j, i) is valid when m_ji; it then needs sum_k w_jk m_ki > 0,
    which w_jj > 0 guarantees. Invalid pairs get loss 0 with zero (finite)
    gradient; absent rows of z, rows of s with no modality present and the
    weights of absent pairs may hold garbage, even nan. The softmax runs
    over the whole (global) batch: under jit with a sharded batch, XLA gathers
    the candidates.

    Computed by `robult_jax.contrastive` (a hand-written backward pass; no
    M x B x B tensor is kept): `row_block` anchor rows at a time (static;
    default `contrastive.row_block`: blocks that stay in cache on CPU, the
    whole batch elsewhere). Any block size gives the same loss. `w_BxB` may
    also be a `FactoredWeights` (w = F F^T off the diagonal, 1 on it, as
    `positive_weights(..., factored=True)` gives the multi-class weights): the
    same loss without any B x B array of weights.

    >>> s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> loss, valid = weighted_contrastive_loss(
    ...     s, s[:, None], jnp.eye(2), jnp.ones((2, 1), bool), temperature=1.0)
    >>> [round(float(x), 4) for x in loss[:, 0]]  # -log(e / (e + 1)) for both anchors
    [0.3133, 0.3133]

    Returns (loss_BxM, valid_BxM = mask_BxM), for `reduce_pu_losses`.
    """
    if s_BxP.ndim != 2:
        raise ValueError(f"s_BxP must have shape (B, P), got {s_BxP.shape}.")
    b, p = s_BxP.shape
    check_shape("z_BxMxP", z_BxMxP, (b, None, p), f"s_BxP {s_BxP.shape}")
    check_shape("mask_BxM", mask_BxM, z_BxMxP.shape[:2], f"z_BxMxP {z_BxMxP.shape}")
    factored = isinstance(w_BxB, contrastive.FactoredWeights)
    ref = f"s_BxP {s_BxP.shape}"
    if factored:
        check_shape("FactoredWeights.factor_BxC", w_BxB.factor_BxC, (b, None), ref)
    else:
        check_shape("w_BxB", w_BxB, (b, b), ref)

    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    present_BxM = mask_BxM.astype(bool)
    any_B = present_BxM.any(axis=1)
    # Sanitise absent rows first: a nan there would otherwise reach the
    # gradient of s through the matmul even though its logit is masked. Rows
    # of s with no modality present are never anchors, so they may be garbage
    # too, and so may the weights of pairs without a modality in common
    # (where, not a product: w is multiplied by zeros in contrastive's matmuls).
    z_MxBxP = jnp.where(present_BxM[..., None], z_BxMxP, 0).astype(dtype).swapaxes(0, 1)
    st_BxP = jnp.where(any_B[:, None], s_BxP, 0).astype(dtype) / temperature
    if factored:
        # Zero factors on rows without a modality: the pairs they are in are
        # read by no term (a valid anchor and a present candidate of modality i
        # always share i), so only garbage there needs removing.
        f_BxC = jnp.where(any_B[:, None], jax.lax.stop_gradient(w_BxB.factor_BxC), 0)
        w = contrastive.FactoredWeights(f_BxC.astype(dtype))
    else:
        read_BxB = jnp.any(present_BxM[:, None, :] & present_BxM[None, :, :], axis=-1)
        w = jnp.where(read_BxB, jax.lax.stop_gradient(w_BxB), 0).astype(dtype)
    rows = contrastive.row_block(b, z_MxBxP.shape[0]) if row_block is None else row_block
    loss_MxB = contrastive.contrastive_loss(st_BxP, z_MxBxP, w, present_BxM.T, rows)
    return loss_MxB.T, present_BxM


def soft_pu_contrastive_loss(
    s_BxP: jax.Array, z_BxMxP: jax.Array, labels_B: jax.Array, is_labeled_B: jax.Array,
    probs_BxC: jax.Array, mask_BxM: jax.Array, *, mode: str = "soft", temperature: float = 0.1,
    sigma: float = 0.5, threshold: float = 0.0, centroids_CxP: jax.Array | None = None,
    centroid_valid_C: jax.Array | None = None, task: str = "multiclass", label_sigma: float = 0.5,
) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """Soft PU contrastive loss (docs/method.md 3.2): `weighted_contrastive_loss` with
    w = `positive_weights(labels_B, is_labeled_B, probs_BxC, s_BxP, ...)`.

    A labeled row with no modality present is not a labeled reference for the
    others: its s_BxP is not a representation of anything."""
    check_shape("mask_BxM", mask_BxM, z_BxMxP.shape[:2], f"z_BxMxP {z_BxMxP.shape}")
    check_shape("is_labeled_B", is_labeled_B, z_BxMxP.shape[:1], f"z_BxMxP {z_BxMxP.shape}")
    lab_B = jnp.asarray(is_labeled_B).astype(bool) & jnp.asarray(mask_BxM).astype(bool).any(axis=1)
    w_BxB = positive_weights(
        labels_B, lab_B, probs_BxC, s_BxP, mode=mode, sigma=sigma, threshold=threshold,
        centroids_CxP=centroids_CxP, centroid_valid_C=centroid_valid_C, task=task,
        label_sigma=label_sigma,
    )  # fmt: skip
    return weighted_contrastive_loss(s_BxP, z_BxMxP, w_BxB, mask_BxM, temperature=temperature)


def reduce_pu_losses(
    loss_BxM: jax.Array, valid_BxM: jax.Array, is_labeled_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(L_lb, L_ulb): `masked_mean` of loss over valid (j, i), j labeled / unlabeled."""
    check_shape("valid_BxM", valid_BxM, loss_BxM.shape, f"loss_BxM {loss_BxM.shape}")
    check_shape("is_labeled_B", is_labeled_B, loss_BxM.shape[:1], f"loss_BxM {loss_BxM.shape}")
    valid_BxM = valid_BxM.astype(bool)
    lab_Bx1 = is_labeled_B.astype(bool)[:, None]
    return masked_mean(loss_BxM, valid_BxM & lab_Bx1), masked_mean(loss_BxM, valid_BxM & ~lab_Bx1)


# ----------------------------------------------------------------------------- L_rec


def latent_reconstruction_loss(
    h_hat_BxMxD: jax.Array, h_BxMxD: jax.Array, mask_BxM: jax.Array, *, stop_gradient: bool = True
) -> jax.Array:
    """Latent reconstruction L_rec per example and modality (docs/method.md 3.3).

        l_ji = mean_d (h_hat_jid - sg(h_jid))^2  if m_ji else 0

    The mean over D (not the sum) keeps the scale independent of the latent
    width. sg is stop_gradient when `stop_gradient`, so the encoders are not
    pulled towards what the decoder can produce. Absent rows may hold garbage
    (even nan): loss and gradients there are exactly 0.

    >>> latent_reconstruction_loss(jnp.ones((1, 2, 4)), jnp.zeros((1, 2, 4)),
    ...                            jnp.array([[True, False]]))
    Array([[1., 0.]], dtype=float32)
    """
    if h_hat_BxMxD.ndim != 3:
        raise ValueError(f"h_hat_BxMxD must have shape (B, M, D), got {h_hat_BxMxD.shape}.")
    check_shape("h_BxMxD", h_BxMxD, h_hat_BxMxD.shape, f"h_hat_BxMxD {h_hat_BxMxD.shape}")
    check_shape("mask_BxM", mask_BxM, h_hat_BxMxD.shape[:2], f"h_hat_BxMxD {h_hat_BxMxD.shape}")
    if stop_gradient:
        h_BxMxD = jax.lax.stop_gradient(h_BxMxD)
    present_BxMx1 = mask_BxM.astype(bool)[..., None]
    # Mask the difference, not the square: the gradient of where() is 0 on the
    # unselected side, and a nan difference there is never multiplied.
    diff_BxMxD = jnp.where(present_BxMx1, h_hat_BxMxD - h_BxMxD, 0)
    return jnp.mean(jnp.square(diff_BxMxD), axis=-1)
