"""The losses of experiments/torch_reference.py: robult_jax/objective.py in PyTorch.

The soft PU weights (multi-class, mode "soft", threshold 0: the default
config), the weighted contrastive loss as automatic differentiation sees it
(M x B x B log-softmax; robult_jax.contrastive's own backward pass is not
ported, see torch_reference.py), the supervised, unimodal and latent
reconstruction terms. `tests/test_benchmark.py` checks every term against
the JAX objective to 1e-5, given the same parameters.

Shape legend: B batch, M modalities, D latent width, P embedding width, C classes.
"""

import torch
import torch.nn.functional as F

MASKED_LOGIT = -1e9  # as robult_jax.contrastive: exp() underflows to 0, never inf - inf


def mean_over_present(x_BxMx_, mask_BxM):
    m = mask_BxM.reshape(mask_BxM.shape + (1,) * (x_BxMx_.ndim - 2)).to(x_BxMx_.dtype)
    return (x_BxMx_ * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_mean(x, where):
    return torch.where(where, x, 0.0).sum() / where.sum().clamp_min(1)


def positive_weights(labels_B, lab_B, probs_BxC, s_BxP, cent_CxP, cent_valid_C, sigma):
    """task_weights.multiclass_weights, mode "soft", threshold 0 (the default config)."""
    c = probs_BxC.shape[1]
    y_B = torch.where(lab_B, labels_B, 0)
    pred_B = probs_BxC.argmax(-1)
    p_BxC = torch.where(lab_B[:, None], F.one_hot(y_B, c).to(probs_BxC.dtype), probs_BxC)
    ref_BxB = (y_B[None, :] == pred_B[:, None]) & lab_B[None, :]
    rbf = lambda sq: torch.exp(-sq / (2.0 * sigma**2))
    rho_cent_B = rbf((s_BxP - cent_CxP[pred_B]).square().sum(-1))
    fallback_B = torch.where(cent_valid_C[pred_B], rho_cent_B, 0.0)
    sq_B = s_BxP.square().sum(-1)
    sq_dist_BxB = (sq_B[:, None] + sq_B[None, :] - 2 * s_BxP @ s_BxP.T).clamp_min(0)
    ref_f_BxB = ref_BxB.to(s_BxP.dtype)
    den_B = ref_f_BxB.sum(-1)
    num_B = (ref_f_BxB * rbf(sq_dist_BxB)).sum(-1)
    rho_batch_B = num_B / torch.where(den_B > 0, den_B, 1.0)
    rho_B = torch.where(lab_B, 1.0, torch.where(den_B > 0, rho_batch_B, fallback_B))
    w_BxB = (p_BxC @ p_BxC.T) * rho_B[:, None] * rho_B[None, :]
    return w_BxB.fill_diagonal_(1.0)


def weighted_contrastive_loss(s_BxP, z_BxMxP, w_BxB, mask_BxM, temperature):
    """losses.weighted_contrastive_loss: (loss_BxM, valid_BxM)."""
    z_BxMxP = torch.where(mask_BxM[..., None], z_BxMxP, 0.0)
    s_BxP = torch.where(mask_BxM.any(1)[:, None], s_BxP, 0.0)
    logits_MxBxB = torch.einsum("jp,kmp->mjk", s_BxP, z_BxMxP) / temperature
    cand_Mx1xB = mask_BxM.T[:, None, :]
    logits_MxBxB = torch.where(cand_Mx1xB, logits_MxBxB, MASKED_LOGIT)
    logsm_MxBxB = torch.where(cand_Mx1xB, logits_MxBxB.log_softmax(-1), 0.0)
    pair_MxBxB = cand_Mx1xB & mask_BxM.T[:, :, None]
    wm_MxBxB = torch.where(pair_MxBxB, w_BxB.detach()[None], 0.0)
    num_MxB = -(wm_MxBxB * logsm_MxBxB).sum(-1)
    den_MxB = wm_MxBxB.sum(-1)
    valid_MxB = mask_BxM.T
    loss_MxB = torch.where(valid_MxB, num_MxB / torch.where(valid_MxB, den_MxB, 1.0), 0.0)
    return loss_MxB.T, mask_BxM


def compute_losses(model, batch, centroids_CxP, centroid_valid_C, loss_cfg):
    """objective.compute_losses for multi-class data: (total, terms, s_BxP, lab_B)."""
    mask_BxM, labels_B, is_lab_B = batch["mask"], batch["labels"], batch["is_labeled"]
    out = model(batch["inputs"], mask_BxM)
    fused_B = out["fused_valid_B"]
    lab_B = is_lab_B & fused_B
    ce = lambda logits, y: F.cross_entropy(logits, y, reduction="none")
    terms = {"sup": masked_mean(ce(out["fused_logits_BxC"], labels_B), lab_B)}
    weights = {"sup": loss_cfg.w_sup, "lb": loss_cfg.w_lb, "ulb": loss_cfg.w_ulb}
    if loss_cfg.w_uni:
        uni_BxMxC = out["uni_logits_BxMxC"]
        m = uni_BxMxC.shape[1]
        uni_BxM = ce(uni_BxMxC.reshape(-1, uni_BxMxC.shape[-1]), labels_B.repeat_interleave(m))
        uni_B = mean_over_present(uni_BxM.reshape(-1, m), mask_BxM)
        terms["uni"] = masked_mean(uni_B, is_lab_B & mask_BxM.any(1))
        weights["uni"] = loss_cfg.w_sup * loss_cfg.w_uni
    s_BxP = out["s_BxP"]
    probs_BxC = out["fused_logits_BxC"].detach().softmax(-1)
    w_BxB = positive_weights(
        labels_B, lab_B, probs_BxC, s_BxP.detach(), centroids_CxP, centroid_valid_C > 0,
        loss_cfg.sigma,
    )  # fmt: skip
    pu_BxM, valid_BxM = weighted_contrastive_loss(
        s_BxP, out["z_BxMxP"], w_BxB, mask_BxM & fused_B[:, None], loss_cfg.temperature
    )
    terms["lb"] = masked_mean(pu_BxM, valid_BxM & lab_B[:, None])
    terms["ulb"] = masked_mean(pu_BxM, valid_BxM & ~lab_B[:, None])
    diff_BxMxD = torch.where(mask_BxM[..., None], out["h_hat_BxMxD"] - out["h_BxMxD"].detach(), 0)
    terms["rec"] = masked_mean(diff_BxMxD.square().mean(-1), mask_BxM)
    weights["rec"] = loss_cfg.w_rec
    total = sum(weights[k] * v for k, v in terms.items())
    accuracy = masked_mean((out["logits_BxC"].argmax(-1) == labels_B).float(), is_lab_B)
    return total, {**terms, "labeled_accuracy": accuracy}, s_BxP.detach(), lab_B
