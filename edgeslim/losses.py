"""Distillation losses. Shapes: logits (B, C); hidden (B, T, H); attention (B, heads, T, T);
mask (B, T) with 1 on real tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton)."""
    import torch.nn.functional as F

    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student / t, -1),
            F.log_softmax(teacher / t, -1),
            log_target=True,
            reduction="batchmean",
        )
        * t
        * t
    )


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's softened distribution (scaled by T^2)."""
    import torch.nn.functional as F

    t = temperature
    target = F.softmax(teacher / t, -1)
    return -(target * F.log_softmax(student / t, -1)).sum(-1).mean() * t * t


def hard_nll(
    student: torch.Tensor, teacher: torch.Tensor, min_confidence: float = 0.0
) -> tuple[torch.Tensor, float]:
    """NLL of the teacher's argmax labels, over rows whose teacher confidence >= min_confidence.

    Returns (loss, kept fraction); the loss is 0 when no row is kept.
    """
    import torch.nn.functional as F

    confidence, labels = F.softmax(teacher, -1).max(-1)
    keep = confidence >= min_confidence
    kept = float(keep.float().mean())
    if not keep.any():
        return student.sum() * 0.0, kept
    return F.cross_entropy(student[keep], labels[keep]), kept


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between (projected) student and teacher hidden states over real tokens."""
    m = mask.unsqueeze(-1).to(student.dtype)  # (B, T, 1)
    return (((student - teacher) ** 2) * m).sum() / (m.sum() * student.shape[-1]).clamp(min=1.0)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of attention rows (heads averaged when counts differ), real queries."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    eps = 1e-8
    kl = (teacher * ((teacher + eps).log() - (student + eps).log())).sum(-1)  # (B, heads, T)
    m = mask.unsqueeze(1).to(kl.dtype)  # (B, 1, T)
    return (kl * m).sum() / (m.sum() * kl.shape[1]).clamp(min=1.0)


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over rows (embedding models)."""
    import torch.nn.functional as F

    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
