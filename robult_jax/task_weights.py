"""Positive weights of the soft PU contrastive loss, one rule per task type (docs/method.md 3.2).

docs/method.md 3.2 defines the weights for multi-class data; multi-label and
regression data use this project's generalisation (docs/task_types.md). Every
rule has the same shape: a task-specific label agreement a_jk in [0, 1], a
confidence test pass_j and a "hard" agreement 1[t_j == t_k]; one shared tail
(`_combine`) turns them into w for the three modes. Use them through
`Task.positive_weights` (`robult_jax.tasks`) or `losses.positive_weights(..., task=...)`.

Shape legend: B batch, C classes (or outputs), P projection width.
"""

import jax
import jax.numpy as jnp

from robult_jax.losses import PU_MODES, check_shape


def rbf(sq_dist: jax.Array, sigma: float) -> jax.Array:
    """exp(-d^2 / (2 sigma^2)), elementwise on squared distances."""
    return jnp.exp(-sq_dist / (2.0 * sigma**2))


def sq_dist(a_NxP: jax.Array, b_LxP: jax.Array) -> jax.Array:
    """(N, L) squared Euclidean distances between the rows of a and b."""
    # Explicit differences rather than |a|^2 + |b|^2 - 2ab: exact 0 on the
    # diagonal and never negative; B is small so the (N, L, P) tensor is cheap.
    return jnp.sum(jnp.square(a_NxP[:, None, :] - b_LxP[None, :, :]), axis=-1)


def _check_mode(mode: str) -> None:
    if mode not in PU_MODES:
        raise ValueError(f"Unknown mode {mode!r}; allowed values are {PU_MODES}.")


def _check_common(
    labels: jax.Array,
    label_shape: tuple[int, ...],
    is_labeled_B: jax.Array,
    preds: jax.Array,
    s_BxP: jax.Array,
    ref: str,
) -> None:
    """Static shape checks shared by the three rules; preds is (B, C) or (B, 1)."""
    if preds.ndim != 2 or s_BxP.ndim != 2:
        raise ValueError(f"{ref} and s_BxP {s_BxP.shape} must both be 2-D.")
    b = preds.shape[0]
    name = "labels_BxC" if len(label_shape) == 2 else "labels_B"
    check_shape(name, labels, label_shape, ref)
    check_shape("is_labeled_B", is_labeled_B, (b,), ref)
    check_shape("s_BxP", s_BxP, (b, None), ref)


def _combine(
    mode: str,
    *,
    lab_B: jax.Array,
    pass_B: jax.Array,
    same_BxB: jax.Array,
    a_BxB: jax.Array,
    ref_BxB: jax.Array,
    s_BxP: jax.Array,
    sigma: float,
    rho_fallback_B: jax.Array | None = None,
) -> jax.Array:
    """The tail shared by every task: w_BxB from agreements, for each mode.

    - "none": w = I.
    - "hard": w_jk = 1[same_jk] * pass_j * pass_k, w_jj = 1.
    - "soft": w_jk = a_jk * rho_j * rho_k * pass_j * pass_k, w_jj = 1, with
      rho = 1 for labeled rows and, for unlabeled j, the ref-weighted mean RBF
      proximity to the labeled rows l of the batch,

          rho_j = sum_l r_jl k(s_j, s_l) / sum_l r_jl   (labeled l only),

      or rho_fallback_j (default 0) when sum_l r_jl = 0.

    ref_BxB (r) is the reference weight of labeled l for anchor j: 1[y_l == argmax
    p_j] (multiclass) or a_jl (the others). Inputs are already stop-gradient.
    """
    b = lab_B.shape[0]
    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    eye_BxB = jnp.eye(b, dtype=dtype)
    if mode == "none":
        return eye_BxB
    pass_BxB = pass_B[:, None] & pass_B[None, :]
    if mode == "hard":
        return jnp.maximum((same_BxB & pass_BxB).astype(dtype), eye_BxB)

    s_BxP = jax.lax.stop_gradient(s_BxP).astype(dtype)
    kernel_BxB = rbf(sq_dist(s_BxP, s_BxP), sigma)
    ref_BxB = jnp.where(lab_B[None, :], ref_BxB.astype(dtype), 0)
    den_B = jnp.sum(ref_BxB, axis=-1)
    # where, not a product: a garbage (nan) embedding of a row that is no
    # reference must not reach anyone's rho.
    num_B = jnp.sum(jnp.where(ref_BxB > 0, ref_BxB * kernel_BxB, 0), axis=-1)
    fallback_B = jnp.zeros((b,), dtype) if rho_fallback_B is None else rho_fallback_B
    rho_batch_B = num_B / jnp.where(den_B > 0, den_B, 1)
    rho_B = jnp.where(lab_B, 1, jnp.where(den_B > 0, rho_batch_B, fallback_B))
    # Both labeled: rho = pass = 1, so w = a_jk, the agreement of the true labels.
    w_BxB = a_BxB * rho_B[:, None] * rho_B[None, :] * pass_BxB
    return jax.lax.stop_gradient(jnp.where(eye_BxB > 0, 1, w_BxB))


def multiclass_weights(
    labels_B: jax.Array,
    is_labeled_B: jax.Array,
    probs_BxC: jax.Array,
    s_BxP: jax.Array,
    *,
    mode: str,
    sigma: float,
    threshold: float,
    centroids_CxP: jax.Array | None = None,
    centroid_valid_C: jax.Array | None = None,
) -> jax.Array:
    """Multi-class positive weights (docs/method.md 3.2).

    Let p_j = one_hot(y_j) if j is labeled else probs_j, yhat_j = y_j or
    argmax probs_j, and pass_j = labeled or max_c probs_j(c) >= threshold.

    - "none": w = I (only k == j is positive; plain InfoNCE).
    - "hard": w_jk = 1[yhat_j == yhat_k] * pass_j * pass_k; w_jj = 1.
    - "soft": w_jj = 1, else w_jk = a_jk * rho_j * rho_k * pass_j * pass_k with
      a_jk = <p_j, p_k> (= 1[y_j == y_k] when both are labeled). rho = 1 for
      labeled rows; for unlabeled j of predicted class c, rho_j = mean over
      labeled l in the batch with y_l == c of exp(-||s_j - s_l||^2 / (2 sigma^2));
      with no such l, the same kernel to centroids_CxP[c] if centroid_valid_C[c];
      with neither, rho_j = 0, so j's off-diagonal pairs count as negatives (the
      conservative choice: no evidence of j's class, so no pull towards it).

    The threshold applies on both sides of a pair: a pair is only as
    trustworthy as its less confident member. Labels of unlabeled rows are
    never read; the result is under stop_gradient.

    >>> multiclass_weights(jnp.array([0, 0]), jnp.array([True, False]),
    ...                    jnp.array([[0.5, 0.5], [0.8, 0.2]]), jnp.zeros((2, 1)),
    ...                    mode="soft", sigma=1.0, threshold=0.0)
    Array([[1. , 0.8],
           [0.8, 1. ]], dtype=float32)

    Args:
      labels_B: (B,) int class indices; rows with is_labeled False are ignored.
      is_labeled_B: (B,) bool.
      probs_BxC: (B, C) softmax probabilities (`Task.beliefs`).
      s_BxP: (B, P) fused embeddings, for the RBF proximity.
      centroids_CxP: optional (C, P) per-class EMA of labeled embeddings.
      centroid_valid_C: optional (C,) bool, which centroids exist (default all).

    Returns:
      w_BxB, shape (B, B): row j = anchor, column k = candidate.
    """
    _check_mode(mode)
    ref = f"probs_BxC {probs_BxC.shape}"
    _check_common(labels_B, probs_BxC.shape[:1], is_labeled_B, probs_BxC, s_BxP, ref)
    b, c = probs_BxC.shape
    if centroid_valid_C is not None and centroids_CxP is None:
        raise ValueError("centroid_valid_C was given without centroids_CxP.")
    if centroids_CxP is not None:
        want = (c, s_BxP.shape[1])
        check_shape("centroids_CxP", centroids_CxP, want, f"{ref} and s_BxP {s_BxP.shape}")
        if centroid_valid_C is not None:
            check_shape("centroid_valid_C", centroid_valid_C, (c,), ref)
    if mode != "none" and not jnp.issubdtype(labels_B.dtype, jnp.integer):
        raise ValueError(f"mode {mode!r} needs integer class labels_B, got dtype {labels_B.dtype}.")

    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    lab_B = is_labeled_B.astype(bool)
    probs_BxC = jax.lax.stop_gradient(probs_BxC).astype(dtype)
    # Zero the labels of unlabeled rows so that nothing below can depend on them.
    y_B = jnp.where(lab_B, labels_B, 0)
    pred_B = jnp.argmax(probs_BxC, axis=-1)
    yhat_B = jnp.where(lab_B, y_B, pred_B)
    p_BxC = jnp.where(lab_B[:, None], jax.nn.one_hot(y_B, c, dtype=dtype), probs_BxC)

    rho_fallback_B = None
    if centroids_CxP is not None:
        s_sg_BxP = jax.lax.stop_gradient(s_BxP).astype(dtype)
        cent_BxP = jax.lax.stop_gradient(centroids_CxP).astype(dtype)[pred_B]
        valid_C = (
            jnp.ones((c,), bool) if centroid_valid_C is None else centroid_valid_C.astype(bool)
        )
        rho_cent_B = rbf(jnp.sum(jnp.square(s_sg_BxP - cent_BxP), axis=-1), sigma)
        rho_fallback_B = jnp.where(valid_C[pred_B], rho_cent_B, 0)
    return _combine(
        mode,
        lab_B=lab_B,
        pass_B=lab_B | (jnp.max(probs_BxC, axis=-1) >= threshold),
        same_BxB=yhat_B[:, None] == yhat_B[None, :],
        a_BxB=p_BxC @ p_BxC.T,
        # rho's references: labeled l of j's predicted class.
        ref_BxB=y_B[None, :] == pred_B[:, None],
        s_BxP=s_BxP,
        sigma=sigma,
        rho_fallback_B=rho_fallback_B,
    )


def _zero_unlabeled(labels: jax.Array, lab_B: jax.Array, dtype: jnp.dtype) -> jax.Array:
    # Where (not multiplication) so that nothing depends on unlabeled labels, even nan.
    lab = lab_B.reshape(lab_B.shape + (1,) * (labels.ndim - 1))
    return jnp.where(lab, labels, 0).astype(dtype)


def multilabel_weights(
    labels_BxC: jax.Array,
    is_labeled_B: jax.Array,
    probs_BxC: jax.Array,
    s_BxP: jax.Array,
    *,
    mode: str,
    sigma: float,
    threshold: float,
) -> jax.Array:
    """Multi-label positive weights (docs/task_types.md).

    Let q_j be j's label vector if labeled, else its sigmoid probabilities. The
    agreement is the soft Jaccard index

        a_jk = sum_c q_jc q_kc / sum_c (q_jc + q_kc - q_jc q_kc)   (1 if both are empty),

    = 1[y_j == y_k] for 0/1 vectors. pass_j: labeled, or
    mean_c max(p_jc, 1 - p_jc) >= threshold. "soft": w_jk = a_jk * rho_j *
    rho_k * pass_j * pass_k, w_jj = 1, with rho_j = sum_l a_jl k(s_j, s_l) /
    sum_l a_jl over labeled l (0 when that sum is 0; with one-hot labels this is
    the multiclass rule). "hard": 1[t_j == t_k] * pass_j * pass_k with t = the
    label set q > 0.5. "none": w = I.

    Args:
      labels_BxC: (B, C) label vectors in [0, 1]; unlabeled rows are ignored.
      is_labeled_B: (B,) bool.
      probs_BxC: (B, C) sigmoid probabilities (`Task.beliefs`).
      s_BxP: (B, P) fused embeddings.

    Returns:
      w_BxB, shape (B, B), under stop_gradient.
    """
    _check_mode(mode)
    ref = f"probs_BxC {probs_BxC.shape}"
    _check_common(labels_BxC, probs_BxC.shape, is_labeled_B, probs_BxC, s_BxP, ref)
    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    lab_B = is_labeled_B.astype(bool)
    probs_BxC = jax.lax.stop_gradient(probs_BxC).astype(dtype)
    q_BxC = jnp.where(lab_B[:, None], _zero_unlabeled(labels_BxC, lab_B, dtype), probs_BxC)
    conf_B = jnp.mean(jnp.maximum(probs_BxC, 1 - probs_BxC), axis=-1)
    t_BxC = q_BxC > 0.5
    inter_BxB = q_BxC @ q_BxC.T
    size_B = jnp.sum(q_BxC, axis=-1)
    union_BxB = size_B[:, None] + size_B[None, :] - inter_BxB
    a_BxB = jnp.where(union_BxB > 0, inter_BxB / jnp.where(union_BxB > 0, union_BxB, 1), 1)
    return _combine(
        mode,
        lab_B=lab_B,
        pass_B=lab_B | (conf_B >= threshold),
        same_BxB=jnp.all(t_BxC[:, None, :] == t_BxC[None, :, :], axis=-1),
        a_BxB=a_BxB,
        ref_BxB=a_BxB,
        s_BxP=s_BxP,
        sigma=sigma,
    )


def regression_weights(
    labels_B: jax.Array,
    is_labeled_B: jax.Array,
    preds_Bx1: jax.Array,
    s_BxP: jax.Array,
    *,
    mode: str,
    sigma: float,
    label_sigma: float,
) -> jax.Array:
    """Regression positive weights (docs/task_types.md).

    Let q_j be j's target if labeled, else its predicted value. The agreement
    is a_jk = exp(-(q_j - q_k)^2 / (2 label_sigma^2)); a prediction carries no
    confidence, so every row passes (there is no threshold). "soft": w_jk =
    a_jk * rho_j * rho_k, w_jj = 1, with rho_j = sum_l a_jl k(s_j, s_l) /
    sum_l a_jl over labeled l (0 when that sum is 0). "hard": 1[q_j > 0 ==
    q_k > 0] (same sign). "none": w = I.

    Args:
      labels_B: (B,) float targets; unlabeled rows are ignored.
      is_labeled_B: (B,) bool.
      preds_Bx1: (B, 1) predicted values (`Task.beliefs`).
      s_BxP: (B, P) fused embeddings.

    Returns:
      w_BxB, shape (B, B), under stop_gradient.
    """
    _check_mode(mode)
    ref = f"preds_Bx1 {preds_Bx1.shape}"
    _check_common(labels_B, preds_Bx1.shape[:1], is_labeled_B, preds_Bx1, s_BxP, ref)
    if preds_Bx1.shape[1] != 1:
        raise ValueError(f"regression needs predictions of shape (B, 1), got {ref}.")
    b = preds_Bx1.shape[0]
    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    lab_B = is_labeled_B.astype(bool)
    pred_B = jax.lax.stop_gradient(preds_Bx1).astype(dtype)[:, 0]
    q_B = jnp.where(lab_B, _zero_unlabeled(labels_B, lab_B, dtype), pred_B)
    a_BxB = rbf(jnp.square(q_B[:, None] - q_B[None, :]), label_sigma)
    return _combine(
        mode,
        lab_B=lab_B,
        pass_B=jnp.ones((b,), bool),
        same_BxB=(q_B[:, None] > 0) == (q_B[None, :] > 0),
        a_BxB=a_BxB,
        ref_BxB=a_BxB,
        s_BxP=s_BxP,
        sigma=sigma,
    )
