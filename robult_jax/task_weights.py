"""Positive weights of the soft PU contrastive loss for multi-label and regression tasks.

method.md section 3.2 defines the weights for multi-class data only; this
module holds this project's generalisation (docs/task_types.md), kept apart
so that `robult_jax.losses` stays one screenful per loss. Use it through
`losses.positive_weights(..., task=...)`.

Shape legend: B batch, C classes (or outputs), P projection width.
"""

import jax
import jax.numpy as jnp


def rbf(sq_dist: jax.Array, sigma: float) -> jax.Array:
    return jnp.exp(-sq_dist / (2.0 * sigma**2))


def sq_dist(a_NxP: jax.Array, b_LxP: jax.Array) -> jax.Array:
    # Explicit differences rather than |a|^2 + |b|^2 - 2ab: exact 0 on the
    # diagonal and never negative; B is small so the (N, L, P) tensor is cheap.
    return jnp.sum(jnp.square(a_NxP[:, None, :] - b_LxP[None, :, :]), axis=-1)


def task_positive_weights(
    labels: jax.Array,
    is_labeled_B: jax.Array,
    preds_BxC: jax.Array,
    s_BxP: jax.Array,
    *,
    task: str,
    mode: str,
    sigma: float,
    threshold: float,
    label_sigma: float,
) -> jax.Array:
    """positive_weights for "multilabel" and "regression" (docs/task_types.md).

    Let q_j be j's label if labeled, else its prediction (sigmoid probabilities
    (C,) or the predicted value). The label agreement a_jk in [0, 1] is

    - multilabel: soft Jaccard index sum_c q_j q_k / sum_c (q_j + q_k - q_j q_k)
      (1 when both sets are empty), = 1[y_j == y_k] for one-hot vectors;
    - regression: exp(-(q_j - q_k)^2 / (2 label_sigma^2)).

    "soft": w_jk = a_jk * rho_j * rho_k * pass_j * pass_k, w_jj = 1, where
    rho = 1 for labeled rows and, for unlabeled j, the a-weighted proximity to
    the labeled rows l of the batch (0 when sum_l a_jl = 0):

        rho_j = sum_l a_jl exp(-||s_j - s_l||^2 / (2 sigma^2)) / sum_l a_jl

    With one-hot a_jl = 1[y_l == argmax p_j] this is the multiclass rule.
    pass_j: labeled, or mean_c max(p_jc, 1 - p_jc) >= threshold (multilabel);
    always true for regression (no confidence, threshold ignored).
    "hard": w_jk = 1[t_j == t_k] * pass_j * pass_k, w_jj = 1, with t the
    label set thresholded at 0.5 (multilabel) or the sign q > 0 (regression).
    """
    b = preds_BxC.shape[0]
    dtype = jnp.promote_types(s_BxP.dtype, jnp.float32)
    eye_BxB = jnp.eye(b, dtype=dtype)
    if mode == "none":
        return eye_BxB
    lab_B = is_labeled_B.astype(bool)
    preds_BxC = jax.lax.stop_gradient(preds_BxC).astype(dtype)
    # Where (not multiplication) so that nothing depends on unlabeled labels, even nan.
    labels = jnp.where(lab_B.reshape((b,) + (1,) * (labels.ndim - 1)), labels, 0).astype(dtype)
    if task == "multilabel":
        q_BxC = jnp.where(lab_B[:, None], labels, preds_BxC)
        conf_B = jnp.mean(jnp.maximum(preds_BxC, 1 - preds_BxC), axis=-1)
        pass_B = lab_B | (conf_B >= threshold)
        t_BxC = q_BxC > 0.5
        same_BxB = jnp.all(t_BxC[:, None, :] == t_BxC[None, :, :], axis=-1)
        inter_BxB = q_BxC @ q_BxC.T
        size_B = jnp.sum(q_BxC, axis=-1)
        union_BxB = size_B[:, None] + size_B[None, :] - inter_BxB
        a_BxB = jnp.where(union_BxB > 0, inter_BxB / jnp.where(union_BxB > 0, union_BxB, 1), 1)
    else:
        q_B = jnp.where(lab_B, labels, preds_BxC[:, 0])
        pass_B = jnp.ones((b,), bool)
        same_BxB = (q_B[:, None] > 0) == (q_B[None, :] > 0)
        a_BxB = rbf(jnp.square(q_B[:, None] - q_B[None, :]), label_sigma)
    pass_BxB = pass_B[:, None] & pass_B[None, :]
    if mode == "hard":
        return jnp.maximum((same_BxB & pass_BxB).astype(dtype), eye_BxB)

    s_BxP = jax.lax.stop_gradient(s_BxP).astype(dtype)
    kernel_BxB = rbf(sq_dist(s_BxP, s_BxP), sigma)
    ref_a_BxB = jnp.where(lab_B[None, :], a_BxB, 0)
    den_B = jnp.sum(ref_a_BxB, axis=-1)
    num_B = jnp.sum(ref_a_BxB * kernel_BxB, axis=-1)
    rho_B = jnp.where(lab_B, 1, jnp.where(den_B > 0, num_B / jnp.where(den_B > 0, den_B, 1), 0))
    # Both labeled: rho = pass = 1, so w = a_jk, the agreement of the true labels.
    w_BxB = a_BxB * rho_B[:, None] * rho_B[None, :] * pass_BxB
    return jax.lax.stop_gradient(jnp.where(eye_BxB > 0, 1, w_BxB))
