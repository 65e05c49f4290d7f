"""Distillation losses: the terms, and make_loss, which combines them for the loop.
Shapes: logits (B, C); hidden (B, T, H); attention (B, heads, T, T); mask (B, T) with 1 on
real tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeslim.models import pool
from edgeslim.train.config import Weights
from edgeslim.train.loop import LossFn

if TYPE_CHECKING:
    import torch

    from edgeslim.train.students import Student


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


def make_loss(teacher: Any, weights: Weights, mapping: list[int], task: str, pooling: str = "mean") -> LossFn:
    """loss_fn(student_wrapper, batch) -> (total, parts) for the trainer.

    Rows with label -1 are unlabeled (pseudo-labelled by the teacher only). Embedding teachers
    (task feature-extraction) are matched on pooled embeddings (cosine and/or MSE).
    """
    import torch

    need_states = weights.hidden > 0 or weights.attention > 0
    regression = task == "regression"

    def loss_fn(model: Student, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch.pop("labels", None)
        with torch.no_grad():
            t = teacher(**batch, output_hidden_states=need_states, output_attentions=weights.attention > 0)
        s = model.student(**batch, output_hidden_states=need_states, output_attentions=weights.attention > 0)
        parts: dict[str, torch.Tensor] = {}
        mask = batch["attention_mask"]
        if task == "feature-extraction":
            s_emb, t_emb = (pool(o.last_hidden_state, mask, pooling) for o in (s, t))
            if weights.cosine:
                parts["cosine"] = weights.cosine * cosine_loss(s_emb, t_emb)
            if weights.mse:
                parts["mse"] = weights.mse * torch.nn.functional.mse_loss(s_emb, t_emb)
        elif regression:
            parts["mse"] = torch.nn.functional.mse_loss(s.logits, t.logits)
        else:
            if weights.kl:
                parts["kl"] = weights.kl * soft_kl(s.logits, t.logits, weights.temperature)
            if weights.soft_ce:
                parts["soft_ce"] = weights.soft_ce * soft_cross_entropy(
                    s.logits, t.logits, weights.temperature
                )
            if weights.nll:
                nll, _ = hard_nll(s.logits, t.logits, weights.min_confidence)
                parts["nll"] = weights.nll * nll
        if weights.alpha and labels is not None and task != "feature-extraction":
            gold = labels >= 0 if not regression else torch.ones_like(labels, dtype=torch.bool)
            if gold.any():
                fn = torch.nn.functional.mse_loss if regression else torch.nn.functional.cross_entropy
                target = labels[gold] if not regression else labels
                parts["task"] = weights.alpha * fn(
                    s.logits[gold].squeeze(-1) if regression else s.logits[gold], target
                )
        for i, j in enumerate(mapping):
            if weights.hidden:  # hidden_states[0] are the embeddings
                parts[f"hidden{i}"] = weights.hidden * hidden_mse(
                    model.proj[i](s.hidden_states[i + 1]), t.hidden_states[j + 1], mask
                )
            if weights.attention:
                parts[f"attn{i}"] = weights.attention * attention_kl(s.attentions[i], t.attentions[j], mask)
        total = sum(parts.values(), torch.zeros(()))
        summary = {k: round(float(v.detach()), 4) for k, v in parts.items() if not k[-1].isdigit()}
        return total, summary

    return loss_fn
