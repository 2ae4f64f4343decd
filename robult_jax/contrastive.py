"""The weighted contrastive loss as one op with a hand-written backward pass.

Shape legend: B batch (anchors and candidates), M modalities, P projection
width, R a block of anchor rows, N the number of blocks.

`losses.weighted_contrastive_loss` checks and sanitises its inputs, then calls
`contrastive_loss`. Written as automatic differentiation would have it, the
loss materialises M x B x B logits, log-softmax, masked weights and products,
and their cotangents: at B = 8192 and M = 2 each is 512 MiB, and on XLA:CPU
the step spent most of the contrastive term's time writing and re-reading
them (2.5 GiB of temporaries; README "Performance"). Two rewrites, the same
loss:

- **The weighted part is two matmuls with w.** With the candidate mask c_mk
  folded into the candidates,

      sum_k w_jk c_mk logit_mjk = <s_j / tau, (w @ (c_m z_m))_j>
      sum_k w_jk c_mk           = (w @ c_m)_j

  so the numerator and the denominator need no B x B x M tensor; the
  backward pass needs w^T @ (g / den * s / tau), one more matmul.
- **The softmax part is computed in blocks of R anchor rows**, on CPU (an
  `R x B x M` block of logits stays in the caches; R from `row_block`), and
  recomputed in the backward pass from the per-row log-sum-exp instead of
  being saved. On GPU and TPU the whole batch is one block.

The residuals are the inputs, the M x B log-sum-exp and denominators and the
M x B x P weighted candidates: memory is O(B^2) for a dense w (an input; O(B C)
for `FactoredWeights`) plus one block, not O(M B^2).

Inputs here are already clean (`losses.weighted_contrastive_loss` sanitises
absent rows and the weights of absent pairs): anchors `st_BxP` = s / tau,
candidates `z_MxBxP` zero where absent, finite weights `w` (a (B, B) array
zero on pairs without a modality in common, or a `FactoredWeights` zero on
rows without any), the presence mask `present_MxB`. The
temperature is applied outside (st = s / tau), so automatic differentiation
handles it, traced or not. w gets a zero gradient (it is a constant of the
loss, as `weighted_contrastive_loss` documents).
"""

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp

# Finite stand-in for -inf on masked-out candidates: exp() of it underflows
# to 0, while (unlike -inf) it never yields inf - inf = nan in the
# log-sum-exp or 0 * inf = nan in its gradient.
MASKED_LOGIT = -1e9

# An R x B x M block of float32 logits of at most this many elements (2 MiB,
# the size of a core's L2 cache on common x86 CPUs) stays in cache; measured
# on 2 cores, B = 2048 and 8192, M = 2 (README "Performance"). Blocks of
# fewer than _MIN_ROWS rows cost more in the loop than they gain in cache:
# at B = 8192 (M = 2), 128 rows against 64 cut the term's value and gradient
# from 620 to 505 ms and the train step by about 3% (docs/performance.md).
_BLOCK_ELEMENTS = 2**19
_MIN_ROWS = 128
_whole_batch = False


@contextlib.contextmanager
def whole_batch():
    """Within it, `row_block` is the whole batch on any backend: traced programs have no loop.

    For counting FLOPs: XLA's cost analysis counts the body of a loop once,
    not once per iteration, so for a step traced with N blocks of rows it
    counts one block's worth of the loops' FLOPs. The same step traced here
    computes the same loss in one block, so its count is whole (lower it to
    count, do not run it on CPU: its M x B x B logits leave the caches).
    Trace a new function object inside it (a `jax.jit` of a function traced
    before may reuse that trace). `experiments/bench_jax.executed_flops`
    uses it.

    >>> with whole_batch():
    ...     row_block(8192, 2, "cpu")
    8192
    """
    global _whole_batch
    before, _whole_batch = _whole_batch, True
    try:
        yield
    finally:
        _whole_batch = before


def row_block(b: int, m: int, backend: str | None = None) -> int:
    """Anchor rows per block: the whole batch off CPU, when it fits or within `whole_batch`,
    else a power of 2.

    >>> row_block(8192, 2, "cpu"), row_block(2048, 2, "cpu"), row_block(512, 2, "cpu")
    (128, 128, 512)
    >>> row_block(8192, 2, "gpu")
    8192
    """
    if _whole_batch or (backend or jax.default_backend()) != "cpu" or b * b * m <= _BLOCK_ELEMENTS:
        return b
    rows = _MIN_ROWS
    while 2 * rows * b * m <= _BLOCK_ELEMENTS:
        rows *= 2
    return min(rows, b)


def _blocks(x_BxF: jax.Array, rows: int) -> jax.Array:
    """(B, ...) -> (N, R, ...), zero-padded to a multiple of R."""
    x = jnp.pad(x_BxF, [(0, -x_BxF.shape[0] % rows)] + [(0, 0)] * (x_BxF.ndim - 1))
    return x.reshape((x.shape[0] // rows, rows) + x.shape[1:])


def _unblock(y_NxMxRxF: jax.Array, b: int) -> jax.Array:
    """(N, M, R, ...) -> (M, B, ...): the inverse of `_blocks` on the rows, padding dropped."""
    n, m, r = y_NxMxRxF.shape[:3]
    y = jnp.moveaxis(y_NxMxRxF, 0, 1).reshape((m, n * r) + y_NxMxRxF.shape[3:])
    return y[:, :b]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["factor_BxC"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class FactoredWeights:
    """Contrastive weights w_jk = <F_j, F_k> off the diagonal and w_jj = 1, as the factor F.

    The multi-class PU weights have this form (`task_weights.multiclass_weights`
    with `factored=True`): w_jk = <d_j p_j, d_k p_k> with p_j a class
    distribution and d_j a per-row scale. Products with w then cost O(B C)
    per column instead of O(B^2), and no B x B array exists: at B = 8192 the
    dense w and the arrays that build it are each 256 MiB.
    `weighted_contrastive_loss` takes either form.
    """

    factor_BxC: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        b = self.factor_BxC.shape[0]
        return (b, b)

    def dense(self) -> jax.Array:
        """The (B, B) weights."""
        f_BxC = self.factor_BxC
        eye_BxB = jnp.eye(f_BxC.shape[0], dtype=bool)
        return jnp.where(eye_BxB, 1, f_BxC @ f_BxC.T).astype(f_BxC.dtype)


def _weights_times(w, x_MxBxQ: jax.Array) -> jax.Array:
    """(w @ x_m) for every m -> (M, B, Q); w dense (B, B) or a (symmetric) FactoredWeights."""
    if not isinstance(w, FactoredWeights):
        return jnp.einsum("jk,mkq->mjq", w, x_MxBxQ)
    f_BxC = w.factor_BxC
    low_MxBxQ = jnp.einsum("jc,mcq->mjq", f_BxC, jnp.einsum("kc,mkq->mcq", f_BxC, x_MxBxQ))
    diag_B = 1 - jnp.sum(jnp.square(f_BxC), axis=-1)  # w_jj = 1 instead of |F_j|^2
    return low_MxBxQ + diag_B[:, None] * x_MxBxQ


def _logits_t(z_MxBxP: jax.Array, st_RxP: jax.Array, present_MxB: jax.Array) -> jax.Array:
    """logit_mjk = <st_j, z_mk> as (M, B, R): candidates k first, anchors j last.

    Masked where candidate k lacks modality m. Candidate-major on purpose:
    z_m @ st^T is the matmul's natural output, and every use below reduces
    or contracts over k (axis 1) or keeps j (axis 2) minor, so XLA needs no
    transposed copy of a block (anchor-major, XLA:CPU transposed every
    block before its log-sum-exp and ran the backward's contraction over k
    in a slow kernel: README "Performance").
    """
    logits_MxBxR = jnp.einsum("mkp,jp->mkj", z_MxBxP, st_RxP)
    return jnp.where(present_MxB[:, :, None], logits_MxBxR, MASKED_LOGIT)


def _log_sum_exp(st_BxP, z_MxBxP, present_MxB, rows):
    """log sum_k exp(logit_mjk) over the candidates -> (M, B)."""
    b = st_BxP.shape[0]
    block = lambda st_RxP: jax.nn.logsumexp(_logits_t(z_MxBxP, st_RxP, present_MxB), axis=1)
    if rows >= b:
        return block(st_BxP)
    # lax.map, not one program over the batch: each block's logits stay in cache.
    return _unblock(jax.lax.map(block, _blocks(st_BxP, rows)), b)


def _softmax_products(st_BxP, z_MxBxP, present_MxB, lse_MxB, gst_MxBxP, rows):
    """With p = softmax_k(logit_mjk): (sum_k p_mjk z_mk, sum_j p_mjk gst_mj), both (M, B, P)."""
    b = st_BxP.shape[0]
    # z transposed once, outside the blocks: sum_k p_mjk z_mk is then z_m^T @ p_m,
    # a matmul of operands in their natural layout.
    z_MxPxB = jnp.swapaxes(z_MxBxP, 1, 2)

    def block(acc_MxBxP, xs):
        st_RxP, lse_MxR, gst_MxRxP = xs
        p_MxBxR = jnp.exp(_logits_t(z_MxBxP, st_RxP, present_MxB) - lse_MxR[:, None, :])
        acc_MxBxP = acc_MxBxP + jnp.einsum("mkj,mjp->mkp", p_MxBxR, gst_MxRxP)
        return acc_MxBxP, jnp.einsum("mpk,mkj->mpj", z_MxPxB, p_MxBxR)

    # z * 0, not zeros: the carry keeps z's type under shard_map (z is clean).
    zero_MxBxP = z_MxBxP * 0
    if rows >= b:
        to_z, pz_MxPxB = block(zero_MxBxP, (st_BxP, lse_MxB, gst_MxBxP))
        return jnp.swapaxes(pz_MxPxB, 1, 2), to_z
    xs = (
        _blocks(st_BxP, rows),
        jnp.swapaxes(_blocks(lse_MxB.T, rows), 1, 2),  # (N, M, R)
        jnp.swapaxes(_blocks(jnp.swapaxes(gst_MxBxP, 0, 1), rows), 1, 2),  # (N, M, R, P)
    )
    to_z, pz_NxMxPxR = jax.lax.scan(block, zero_MxBxP, xs)
    return _unblock(jnp.swapaxes(pz_NxMxPxR, 2, 3), b), to_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def contrastive_loss(
    st_BxP: jax.Array,
    z_MxBxP: jax.Array,
    w: "jax.Array | FactoredWeights",
    present_MxB: jax.Array,
    rows: int,
) -> jax.Array:
    """loss_mj = logsumexp_k(logit_mjk) - sum_k w_jk c_mk logit_mjk / sum_k w_jk c_mk.

    That is `losses.weighted_contrastive_loss`'s l_ij (section 3.2 of
    docs/method.md), 0 where anchor j lacks modality m. Inputs must be clean
    (module docstring); `rows` from `row_block`. Returns loss_MxB.
    """
    return _forward(st_BxP, z_MxBxP, w, present_MxB, rows)[0]


def _forward(st_BxP, z_MxBxP, w, present_MxB, rows):
    p = z_MxBxP.shape[-1]
    lse_MxB = _log_sum_exp(st_BxP, z_MxBxP, present_MxB, rows)
    c_MxBx1 = present_MxB[..., None].astype(z_MxBxP.dtype)
    # One matmul for both: (w @ (c z))_j in the first P columns, (w @ c)_j in the last.
    wz_MxBxQ = _weights_times(w, jnp.concatenate([z_MxBxP, c_MxBx1], axis=-1))
    wz_MxBxP, den_MxB = wz_MxBxQ[..., :p], jnp.where(present_MxB, wz_MxBxQ[..., p], 1)
    num_MxB = jnp.einsum("jp,mjp->mj", st_BxP, wz_MxBxP)
    # >= 0 in exact arithmetic (a log-sum-exp is at least any weighted mean of
    # its terms); the clip removes float32 rounding below 0 (about 1e-7, with
    # one candidate), where the gradient is 0 anyway.
    loss_MxB = jnp.where(present_MxB, jnp.maximum(lse_MxB - num_MxB / den_MxB, 0), 0)
    return loss_MxB, (st_BxP, z_MxBxP, w, present_MxB, lse_MxB, wz_MxBxP, den_MxB)


def _backward(rows, residuals, g_MxB):
    st_BxP, z_MxBxP, w, present_MxB, lse_MxB, wz_MxBxP, den_MxB = residuals
    g_MxB = jnp.where(present_MxB, g_MxB, 0)
    gst_MxBxP = g_MxB[..., None] * st_BxP[None]
    pz_MxBxP, p_to_z_MxBxP = _softmax_products(
        st_BxP, z_MxBxP, present_MxB, lse_MxB, gst_MxBxP, rows
    )
    # d loss_mj / d st_j = sum_k p_mjk z_mk - (w @ (c z))_j / den_mj
    d_st_BxP = jnp.sum(g_MxB[..., None] * (pz_MxBxP - wz_MxBxP / den_MxB[..., None]), axis=0)
    # d loss_mj / d z_mk = p_mjk st_j - w_jk c_mk st_j / den_mj, summed over j
    w_to_z_MxBxP = _weights_times(_transpose(w), gst_MxBxP / den_MxB[..., None])
    d_z_MxBxP = p_to_z_MxBxP - jnp.where(present_MxB[..., None], w_to_z_MxBxP, 0)
    return d_st_BxP, d_z_MxBxP, None, None


def _transpose(w):
    return w if isinstance(w, FactoredWeights) else w.T


contrastive_loss.defvjp(_forward, _backward)
