"""The training configs: TrainConfig (the flags finetune and distill share), distill's Config
and its loss Weights; and what every training run does around the loop (its fingerprint,
`finish` to move the best weights into the output)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeslim import models
from edgeslim.augment import Augment
from edgeslim.config import StepConfig

TrainTask = Literal["sequence-classification", "regression", "token-classification"]


class TrainConfig(StepConfig):
    """Flags shared by finetune and distill."""

    takes_model: ClassVar[bool] = True
    produces_model: ClassVar[bool] = True
    resumable: ClassVar[bool] = True
    data: str = Field("sst2:train", description="Labelled training data (built-in name or file).")
    eval: str | None = Field(
        None,
        description="Labelled dev data for early stopping and the best checkpoint; default: the "
        "training set's own dev split (sst2:train -> sst2:dev), else a seeded held-out 10% of --data.",
    )
    text_column: str | None = Field(None, description="Text column of user files.")
    pair_column: str | None = Field(None, description="Second-text column of user files.")
    label_column: str | None = Field(None, description="Label column of user files.")
    data_dir: Path | None = Field(None, description="Where built-in datasets live.")
    train_size: int | None = Field(None, gt=0, description="Use the first N training examples.")
    eval_size: int | None = Field(None, gt=0, description="Use the first N dev examples.")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps (overrides epochs).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data.")
    batch_size: int = Field(32, gt=0, description="Examples per step (per process).")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (linear warmup and decay).")
    max_length: int = Field(128, gt=1, description="Truncate inputs to this many tokens.")
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    eval_every: int = Field(200, gt=0, description="Evaluate (and log) every N steps.")
    save_every: int = Field(200, gt=0, description="Checkpoint every N steps (for resume).")
    patience: int | None = Field(None, gt=0, description="Stop after N evaluations without improvement.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 only where the hardware has it.")


class Weights(BaseModel):
    """Loss terms and their weights (0 switches a term off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kl: float = Field(1.0, ge=0, description="KL(teacher||student) on T-softened logits, x T^2.")
    soft_ce: float = Field(0.0, ge=0, description="Cross-entropy against the teacher's soft labels.")
    nll: float = Field(0.0, ge=0, description="NLL of the teacher's hard labels (pseudo-labels).")
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="Keep pseudo-labels with teacher confidence >= this."
    )
    alpha: float = Field(0.0, ge=0, description="Task loss on gold labels (labelled rows only).")
    hidden: float = Field(
        0.0,
        ge=0,
        description="Hidden-state MSE per mapped layer; a narrower student's states go through a learned "
        "Linear(student -> teacher hidden) per layer, trained with it and not saved.",
    )
    attention: float = Field(
        0.0,
        ge=0,
        description="Attention-map KL per mapped layer; when the head counts differ (narrower or pruned "
        "student) the maps are averaged over heads first.",
    )
    cosine: float = Field(
        1.0, ge=0, description="Embedding teachers: 1 - cosine between pooled student and teacher embeddings."
    )
    mse: float = Field(0.0, ge=0, description="Embedding teachers: MSE between pooled embeddings.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature for kl and soft_ce.")


# The distill step's Config, defined here because the distillation run (train/distill.py),
# below the steps, takes it.
class DistillConfig(TrainConfig):
    """distill settings: the student, the unlabeled text, the loss weights."""

    type: Literal["distill"] = "distill"
    student_layers: int | None = Field(None, gt=0, description="Keep this many teacher layers.")
    init: str = Field("every-other", description="every-other, first-k, last-k, or a layer list like 0,2,4.")
    student_hidden: int | None = Field(
        None,
        gt=0,
        description="Student hidden size (<= the teacher's, divisible by the heads; default the teacher's): "
        "the teacher's most active channels are copied.",
    )
    student_heads: int | None = Field(
        None, gt=0, description="Attention heads per student layer (default the teacher's)."
    )
    student_ffn: int | None = Field(None, gt=0, description="Student FFN size (default the teacher's).")
    student: Path | None = Field(None, description="A student model directory instead (same tokenizer).")
    prune_heads: float = Field(
        0.0, ge=0, lt=1, description="Remove this fraction of each student layer's heads while distilling."
    )
    prune_ffn: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Remove this fraction of each student layer's FFN neurons while distilling.",
    )
    prune_at: float = Field(
        0.5, gt=0, le=1, description="Pruning is done by this fraction of the run (its last event)."
    )
    prune_events: int = Field(
        1, ge=1, description="Prune in N events up to prune_at, a cubic share by each (most early)."
    )
    unlabeled: str | None = Field(None, description="Unlabeled text for pseudo-labels (e.g. wikitext2).")
    unlabeled_size: int | None = Field(None, gt=0, description="Use the first N unlabeled texts.")
    augment: Augment | None = Field(
        None, description="Add seeded edits of in-domain sentences to the unlabeled text (teacher-scored)."
    )
    losses: Weights = Field(default_factory=Weights, description="Loss terms and weights.")


def fingerprint(src: str, cfg: StepConfig) -> str:
    """Identifies a run, so a checkpoint is resumed only by the same command."""
    return hashlib.sha256(
        json.dumps([str(src), cfg.model_dump(mode="json")], sort_keys=True).encode()
    ).hexdigest()


def finish(out: Path, source: Path, record: dict[str, Any]) -> None:
    """Move the best weights (out/best) up into `out`, add the tokenizer and a training record,
    drop the checkpoint."""
    for item in (out / "best").iterdir():
        shutil.move(str(item), out / item.name)
    models.save_tokenizer(source, out)
    for leftover in ("best", "checkpoint"):
        path = out / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (out / "edgeslim-train.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
