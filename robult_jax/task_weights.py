"""Positive weights of the soft PU contrastive loss, one rule per task type (docs/method.md 3.2).

docs/method.md 3.2 defines the multi-class rule; multi-label and regression data
use this project's generalisation (docs/task_types.md). Each rule gives a label
agreement a_jk in [0, 1], a confidence test pass_j, a "hard" agreement same_jk
and reference weights r_jl; one tail (`_combine`) turns them into w_BxB (row j
= anchor, column k = candidate), w_jj = 1 and off the diagonal:

- "none": w_jk = 0 (w = I: plain InfoNCE); "hard": w_jk = same_jk * pass_j * pass_k;
- "soft": w_jk = a_jk * rho_j * rho_k * pass_j * pass_k, with rho = 1 for labeled
  rows and, for unlabeled j, the r-weighted mean RBF proximity to labeled rows l,

      rho_j = sum_l r_jl k(s_j, s_l) / sum_l r_jl,   k(s, s') = exp(-||s - s'||^2 / (2 sigma^2)),

  or the rule's fallback (default 0) when sum_l r_jl = 0: with no evidence of
  j's class, its pairs count as negatives (the conservative choice).

The threshold applies on both sides of a pair: a pair is only as trustworthy as
its less confident member. Labels of unlabeled rows are never read; w is under
stop_gradient. Use the rules through `Task.positive_weights` (`robult_jax.tasks`)
or `losses.positive_weights(..., task=...)`.

Shape legend: B batch, C classes (or outputs), P projection width.
"""

import jax
import jax.numpy as jnp

from robult_jax import contrastive
from robult_jax.losses import PU_MODES, check_shape


def rbf(sq_dist: jax.Array, sigma: float) -> jax.Array:
    """exp(-d^2 / (2 sigma^2)), elementwise on squared distances."""
    return jnp.exp(-sq_dist / (2.0 * sigma**2))


def sq_dist(a_NxP: jax.Array, b_LxP: jax.Array) -> jax.Array:
    """(N, L) squared Euclidean distances between the rows of a and b.

    As |a|^2 + |b|^2 - 2 a.b, clamped at 0: one (N, P) x (P, L) matmul instead of
    an (N, L, P) tensor of differences (at B = 8192, P = 64: 4.3e9 elements a
    step). Meant for embeddings on (or inside) the unit sphere, where the
    cancellation error is ~1e-7 absolute, invisible through the RBF kernel; the
    diagonal is then ~1e-7 rather than exactly 0 (the weights set it to 1 anyway).
    """
    a_sq_N = jnp.sum(jnp.square(a_NxP), axis=-1)
    b_sq_L = jnp.sum(jnp.square(b_LxP), axis=-1)
    dots_NxL = jnp.einsum("np,lp->nl", a_NxP, b_LxP, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(a_sq_N[:, None] + b_sq_L[None, :] - 2.0 * dots_NxL, 0.0)


def _prepare(
    mode: str, name: str, beliefs: jax.Array, s_BxP: jax.Array, is_labeled_B: jax.Array
) -> tuple[str, jnp.dtype, jax.Array, jax.Array]:
    """Checks shared by the rules; (ref for messages, dtype, lab_B, sg(beliefs) in dtype)."""
    if mode not in PU_MODES:
        raise ValueError(f"Unknown mode {mode!r}; allowed values are {PU_MODES}.")
    ref = f"{name} {beliefs.shape}"
    if beliefs.ndim != 2 or s_BxP.ndim != 2:
        raise ValueError(f"{ref} and s_BxP {s_BxP.shape} must both be 2-D.")
    check_shape("is_labeled_B", is_labeled_B, beliefs.shape[:1], ref)
    check_shape("s_BxP", s_BxP, (beliefs.shape[0], None), ref)
    # Canonical: float32 unless x64 is on (a float64 numpy s_BxP would warn otherwise).
    dtype = jax.dtypes.canonicalize_dtype(jnp.promote_types(s_BxP.dtype, jnp.float32))
    # jnp.asarray: eagerly, a numpy input would otherwise stay numpy (float64) here.
    lab_B = jnp.asarray(is_labeled_B).astype(bool)
    return ref, dtype, lab_B, jax.lax.stop_gradient(jnp.asarray(beliefs)).astype(dtype)


def _rho(lab_B, num_B, den_B, fallback_B):
    """rho_j: 1 if labeled, else num_j / den_j (the r-weighted mean kernel), or the fallback."""
    rho_batch_B = num_B / jnp.where(den_B > 0, den_B, 1)
    return jnp.where(lab_B, 1, jnp.where(den_B > 0, rho_batch_B, fallback_B))


def _combine(
    mode: str,
    lab_B: jax.Array,
    pass_B: jax.Array,
    same_BxB: jax.Array,
    a_BxB: jax.Array,
    ref_BxB: jax.Array,
    s_BxP: jax.Array,
    sigma: float,
    rho_fallback_B: jax.Array | float = 0.0,
) -> jax.Array:
    """w_BxB for `mode` as in the module docstring; ref_BxB is r, rho_fallback_B the fallback.

    Inputs other than s_BxP are already stop-gradient.
    """
    # Canonical: float32 unless x64 is on (a float64 numpy s_BxP would warn otherwise).
    dtype = jax.dtypes.canonicalize_dtype(jnp.promote_types(s_BxP.dtype, jnp.float32))
    eye_BxB = jnp.eye(lab_B.shape[0], dtype=dtype)
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
    rho_B = _rho(lab_B, num_B, den_B, rho_fallback_B)
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
    factored: bool = False,
) -> "jax.Array | contrastive.FactoredWeights":
    """Multi-class positive weights (docs/method.md 3.2), by the module docstring's rule with:

    - p_j = one_hot(y_j) if j is labeled else probs_j; a_jk = <p_j, p_k>
      (= 1[y_j == y_k] when both are labeled);
    - yhat_j = y_j or argmax probs_j; same_jk = 1[yhat_j == yhat_k];
    - pass_j = labeled or max_c probs_j(c) >= threshold;
    - for unlabeled j of predicted class c, the references are the labeled l with
      y_l == c: rho_j = mean_l exp(-||s_j - s_l||^2 / (2 sigma^2)); with no such
      l, the same kernel to centroids_CxP[c] if centroid_valid_C[c], else 0.

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
      factored: return the same weights as a `contrastive.FactoredWeights`:
        w_jk = <F_j, F_k> off the diagonal with F_j = rho_j pass_j p_j (soft),
        pass_j one_hot(yhat_j) (hard) or 0 (none). No B x B array is made:
        rho's RBF kernel is reduced in blocks of rows (`contrastive.row_block`).

    Returns:
      w_BxB, shape (B, B): row j = anchor, column k = candidate; or, with
      `factored`, a `contrastive.FactoredWeights` whose `dense()` it equals.
    """
    ref, dtype, lab_B, probs_BxC = _prepare(mode, "probs_BxC", probs_BxC, s_BxP, is_labeled_B)
    check_shape("labels_B", labels_B, lab_B.shape, ref)
    c = probs_BxC.shape[1]
    if centroid_valid_C is not None and centroids_CxP is None:
        raise ValueError("centroid_valid_C was given without centroids_CxP.")
    if mode != "none" and not jnp.issubdtype(labels_B.dtype, jnp.integer):
        raise ValueError(f"mode {mode!r} needs integer class labels_B, got dtype {labels_B.dtype}.")
    # Zero the labels of unlabeled rows so that nothing below can depend on them.
    y_B = jnp.where(lab_B, labels_B, 0)
    pred_B = jnp.argmax(probs_BxC, axis=-1)
    yhat_B = jnp.where(lab_B, y_B, pred_B)
    p_BxC = jnp.where(lab_B[:, None], jax.nn.one_hot(y_B, c, dtype=dtype), probs_BxC)
    pass_B = lab_B | (jnp.max(probs_BxC, axis=-1) >= threshold)
    rho_fallback_B = 0.0
    if centroids_CxP is not None:
        want = (c, s_BxP.shape[1])
        check_shape("centroids_CxP", centroids_CxP, want, f"{ref} and s_BxP {s_BxP.shape}")
        if centroid_valid_C is not None:
            check_shape("centroid_valid_C", centroid_valid_C, (c,), ref)
        s_sg_BxP = jax.lax.stop_gradient(s_BxP).astype(dtype)
        cent_BxP = jax.lax.stop_gradient(centroids_CxP).astype(dtype)[pred_B]
        valid_B = (
            True if centroid_valid_C is None else jnp.asarray(centroid_valid_C).astype(bool)[pred_B]
        )
        rho_cent_B = rbf(jnp.sum(jnp.square(s_sg_BxP - cent_BxP), axis=-1), sigma)
        rho_fallback_B = jnp.where(valid_B, rho_cent_B, 0)
    if factored:
        return _factored_multiclass(
            mode, lab_B, pass_B, y_B, pred_B, yhat_B, p_BxC, s_BxP, sigma, rho_fallback_B
        )
    same_BxB = yhat_B[:, None] == yhat_B[None, :]
    ref_BxB = y_B[None, :] == pred_B[:, None]  # rho's references: labeled l of j's class
    a_BxB = p_BxC @ p_BxC.T
    return _combine(mode, lab_B, pass_B, same_BxB, a_BxB, ref_BxB, s_BxP, sigma, rho_fallback_B)


def _factored_multiclass(mode, lab_B, pass_B, y_B, pred_B, yhat_B, p_BxC, s_BxP, sigma, fallback):
    """`multiclass_weights(..., factored=True)`: the factor F of `_combine`'s w, in O(B C)."""
    b, c = p_BxC.shape
    dtype = p_BxC.dtype
    if mode == "none":
        return contrastive.FactoredWeights(jnp.zeros((b, 1), dtype))
    if mode == "hard":
        one_hot_BxC = jax.nn.one_hot(yhat_B, c, dtype=dtype)
        return contrastive.FactoredWeights(jnp.where(pass_B[:, None], one_hot_BxC, 0))
    # rho's references of j: the labeled l with y_l == pred_j.
    s_BxP = jax.lax.stop_gradient(s_BxP).astype(dtype)
    den_B = jnp.zeros(c, dtype).at[y_B].add(lab_B.astype(dtype))[pred_B]

    def kernel_sum(s_P, pred):  # sum_l [l is a reference of j] k(s_j, s_l), for one row j
        ref_B = lab_B & (y_B == pred)
        kernel_B = rbf(sq_dist(s_P[None], s_BxP)[0], sigma)
        return jnp.sum(jnp.where(ref_B, kernel_B, 0))  # where: garbage s_l of non-references

    rows = contrastive.row_block(b, 1)
    num_B = jax.lax.map(lambda x: kernel_sum(*x), (s_BxP, pred_B), batch_size=min(rows, b))
    rho_B = _rho(lab_B, num_B, den_B, fallback)
    f_BxC = jnp.where(pass_B[:, None], rho_B[:, None] * p_BxC, 0)
    return contrastive.FactoredWeights(jax.lax.stop_gradient(f_BxC))


def multilabel_weights(
    labels_BxC: jax.Array, is_labeled_B: jax.Array, probs_BxC: jax.Array, s_BxP: jax.Array,
    *, mode: str, sigma: float, threshold: float,
) -> jax.Array:  # fmt: skip
    """Multi-label positive weights (docs/task_types.md), by the module docstring's rule.

    Let q_j be j's label vector if labeled, else its sigmoid probabilities. The
    agreement, also rho's reference weight (r = a), is the soft Jaccard index

        a_jk = sum_c q_jc q_kc / sum_c (q_jc + q_kc - q_jc q_kc)   (1 if both are empty),

    = 1[y_j == y_k] for 0/1 vectors (so one-hot labels give the multiclass
    rule). pass_j: labeled, or mean_c max(p_jc, 1 - p_jc) >= threshold.
    same_jk = 1[t_j == t_k] with t = the label set q > 0.5.

    Args (the others and the result as in `multiclass_weights`):
      labels_BxC: (B, C) label vectors in [0, 1]; unlabeled rows are ignored.
      probs_BxC: (B, C) sigmoid probabilities (`Task.beliefs`).
    """
    ref, dtype, lab_B, probs_BxC = _prepare(mode, "probs_BxC", probs_BxC, s_BxP, is_labeled_B)
    check_shape("labels_BxC", labels_BxC, probs_BxC.shape, ref)
    # where (not multiplication), so that nothing depends on unlabeled labels, even nan.
    q_BxC = jnp.where(lab_B[:, None], labels_BxC.astype(dtype), probs_BxC)
    pass_B = lab_B | (jnp.mean(jnp.maximum(probs_BxC, 1 - probs_BxC), axis=-1) >= threshold)
    t_BxC = q_BxC > 0.5
    same_BxB = jnp.all(t_BxC[:, None, :] == t_BxC[None, :, :], axis=-1)
    inter_BxB = q_BxC @ q_BxC.T
    size_B = jnp.sum(q_BxC, axis=-1)
    union_BxB = size_B[:, None] + size_B[None, :] - inter_BxB
    a_BxB = jnp.where(union_BxB > 0, inter_BxB / jnp.where(union_BxB > 0, union_BxB, 1), 1)
    return _combine(mode, lab_B, pass_B, same_BxB, a_BxB, a_BxB, s_BxP, sigma)


def regression_weights(
    labels_B: jax.Array, is_labeled_B: jax.Array, preds_Bx1: jax.Array, s_BxP: jax.Array,
    *, mode: str, sigma: float, label_sigma: float,
) -> jax.Array:  # fmt: skip
    """Regression positive weights (docs/task_types.md), by the module docstring's rule.

    Let q_j be j's target if labeled, else its predicted value. The agreement,
    also rho's reference weight (r = a), is a_jk = exp(-(q_j - q_k)^2 /
    (2 label_sigma^2)). A prediction carries no confidence, so every row passes
    (there is no threshold). same_jk = 1[q_j > 0 == q_k > 0] (same sign).

    Args (the others and the result as in `multiclass_weights`):
      labels_B: (B,) float targets; unlabeled rows are ignored.
      preds_Bx1: (B, 1) predicted values (`Task.beliefs`).
    """
    ref, dtype, lab_B, preds_Bx1 = _prepare(mode, "preds_Bx1", preds_Bx1, s_BxP, is_labeled_B)
    check_shape("labels_B", labels_B, lab_B.shape, ref)
    if preds_Bx1.shape[1] != 1:
        raise ValueError(f"regression needs predictions of shape (B, 1), got {ref}.")
    # where (not multiplication), so that nothing depends on unlabeled labels, even nan.
    q_B = jnp.where(lab_B, labels_B.astype(dtype), preds_Bx1[:, 0])
    a_BxB = rbf(jnp.square(q_B[:, None] - q_B[None, :]), label_sigma)
    same_BxB = (q_B[:, None] > 0) == (q_B[None, :] > 0)
    return _combine(mode, lab_B, jnp.ones_like(lab_B), same_BxB, a_BxB, a_BxB, s_BxP, sigma)
