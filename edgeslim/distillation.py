"""Teacher -> student: the combined distillation loss and what it needs (layer mapping,
hidden-size projections, pseudo-label statistics)."""

from __future__ import annotations

from typing import Any

import torch

from edgeslim import losses


class Student(torch.nn.Module):
    """The student plus learned projections to the teacher's width, one Linear(student hidden ->
    teacher hidden) per mapped layer for the hidden-state loss: trained with the student, kept in
    checkpoints (resume), never in the saved student (the trainer saves `.student` only).

    `kept` (Hs,): the teacher channels a narrowed student's channels were copied from; the
    projections then start as that embedding (channel c -> teacher channel kept[c]), so the loss
    starts from the copied alignment instead of a random map."""

    def __init__(
        self, student: Any, teacher_hidden: int, mapped: int, kept: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.student = student
        width = student.config.hidden_size if hasattr(student.config, "hidden_size") else student.config.dim
        self.proj = torch.nn.ModuleList(
            [
                torch.nn.Identity() if width == teacher_hidden else _projection(width, teacher_hidden, kept)
                for _ in range(mapped)
            ]
        )

    def forward(self, **batch: Any) -> Any:
        return self.student(**batch)


def _projection(width: int, teacher_hidden: int, kept: torch.Tensor | None) -> torch.nn.Linear:
    """Linear(width -> teacher_hidden): random, or the embedding of the kept channels."""
    proj = torch.nn.Linear(width, teacher_hidden)
    if kept is not None:
        with torch.no_grad():
            proj.weight.zero_()
            proj.weight[kept, torch.arange(width)] = 1.0
            proj.bias.zero_()
    return proj


def uniform_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer each student layer imitates, spread evenly and ending at the top."""
    step = teacher_layers / student_layers
    return [min(teacher_layers - 1, round((i + 1) * step) - 1) for i in range(student_layers)]


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence embedding from token states: masked mean, or the first ([CLS]) token."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def make_loss(teacher: Any, weights: Any, mapping: list[int], task: str, pooling: str = "mean") -> Any:
    """loss_fn(student_wrapper, batch) -> (total, parts) for the trainer.

    Rows with label -1 are unlabeled (pseudo-labelled by the teacher only). Embedding teachers
    (task feature-extraction) are matched on pooled embeddings (cosine and/or MSE).
    """
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
                parts["cosine"] = weights.cosine * losses.cosine_loss(s_emb, t_emb)
            if weights.mse:
                parts["mse"] = weights.mse * torch.nn.functional.mse_loss(s_emb, t_emb)
        elif regression:
            parts["mse"] = torch.nn.functional.mse_loss(s.logits, t.logits)
        else:
            if weights.kl:
                parts["kl"] = weights.kl * losses.soft_kl(s.logits, t.logits, weights.temperature)
            if weights.soft_ce:
                parts["soft_ce"] = weights.soft_ce * losses.soft_cross_entropy(
                    s.logits, t.logits, weights.temperature
                )
            if weights.nll:
                nll, _ = losses.hard_nll(s.logits, t.logits, weights.min_confidence)
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
                parts[f"hidden{i}"] = weights.hidden * losses.hidden_mse(
                    model.proj[i](s.hidden_states[i + 1]), t.hidden_states[j + 1], mask
                )
            if weights.attention:
                parts[f"attn{i}"] = weights.attention * losses.attention_kl(
                    s.attentions[i], t.attentions[j], mask
                )
        total = sum(parts.values(), torch.zeros(()))
        summary = {k: round(float(v.detach()), 4) for k, v in parts.items() if not k[-1].isdigit()}
        return total, summary

    return loss_fn


def pseudo_label_stats(
    teacher: Any, batches: list[dict[str, Any]], min_confidence: float
) -> dict[str, float]:
    """On labelled batches: kept fraction at min_confidence and the teacher's accuracy on kept rows."""
    kept, correct, total = 0, 0, 0
    with torch.no_grad():
        for batch in batches:
            labels = batch["labels"]
            probs = torch.softmax(teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits, -1)
            confidence, predicted = probs.max(-1)
            keep = confidence >= min_confidence
            kept += int(keep.sum())
            correct += int((predicted[keep] == labels[keep]).sum())
            total += len(labels)
    return {
        "kept_fraction": round(kept / max(total, 1), 4),
        "pseudo_label_accuracy": round(correct / max(kept, 1), 4),
    }
