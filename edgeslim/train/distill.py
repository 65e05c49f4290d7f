"""Distillation runs: a teacher's data (labels as its ids, unlabeled and augmented text), the
student and its checks, the loop, and the record; `recover` distills a transformed model
(prune, simplify) back toward its teacher."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgeslim import artifacts, augment, data, models
from edgeslim.errors import InputError
from edgeslim.train.config import DistillConfig, Weights, fingerprint, finish


def teacher_task(config: dict[str, Any]) -> str:
    """The teacher's head: sequence-classification, regression or feature-extraction (an
    embedding model); token-classification teachers are refused."""
    task = models.head_task(config)
    if task not in ("sequence-classification", "regression", "feature-extraction"):
        heads = " ".join(config.get("architectures") or []) or "none"
        raise InputError(
            f"the teacher's head is {heads}: distill takes a sequence-classification, regression "
            "or embedding (feature-extraction) teacher"
        )
    return task


def _unlabeled(cfg: DistillConfig, train: data.Examples, notes: dict[str, Any]) -> list[str]:
    """The --unlabeled texts (first --unlabeled-size of them), then augment's edits of the
    `train` sentences (or of its own source), recorded in `notes`; or none."""
    texts = []
    if cfg.unlabeled:
        unlabeled = data.load(cfg.unlabeled, None, None, None, cfg.data_dir)
        texts = unlabeled.head(cfg.unlabeled_size or len(unlabeled)).texts
    if cfg.augment is not None:
        source = train
        if cfg.augment.source is not None:
            source = data.load(cfg.augment.source, None, None, None, cfg.data_dir)
        source = source.head(cfg.augment.size or len(source))
        sentences = source.texts + (source.pairs or [])
        made = augment.augment(sentences, cfg.augment)
        notes["augment"] = augment.summary(sentences, made, cfg.augment)
        texts += [text for _, text in made]
    return texts


def _embedding_data(cfg: DistillConfig, notes: dict[str, Any]) -> tuple[data.Examples, data.Examples]:
    """Embedding distillation: every sentence of --data (both sides of pairs) plus the
    unlabeled text, unlabeled; the dev set must be scored sentence pairs (e.g. stsb:dev)."""
    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    if cfg.eval is None:  # the dev split of --data, or a held-out part of it
        source, dev, _ = data.train_and_dev(cfg.data, None, columns, cfg.data_dir, (None, cfg.eval_size))
    else:
        source = data.load(cfg.data, cfg.text_column, cfg.pair_column, None, cfg.data_dir)
        dev = data.load_labelled(cfg.eval, *columns, cfg.data_dir, cfg.eval_size)
    texts = (source.texts + (source.pairs or []))[: cfg.train_size or None]
    texts += _unlabeled(cfg, data.Examples(source.name, list(texts)), notes)
    if not dev.pairs:
        raise InputError(
            f"an embedding teacher is scored by the Spearman correlation of pair similarities: "
            f"--eval needs scored sentence pairs (e.g. stsb:dev), and {dev.name} has no pairs"
        )
    return data.Examples(source.name, texts), dev


def _labels(examples: data.Examples, teacher: Path, task: str) -> list[Any]:
    """Gold labels as the teacher's class ids (or floats for regression)."""
    from edgeslim import evaluation

    if task == "regression":
        return list(data.scores(examples))
    return [int(x) for x in evaluation.label_ids(examples, teacher)]


def load_data(
    teacher: Path, cfg: DistillConfig, task: str, notes: dict[str, Any] | None = None
) -> tuple[data.Examples, data.Examples, list[Any], list[Any]]:
    """(train, dev, train labels, dev labels) for distilling `teacher` (labels as its ids;
    -1 marks unlabeled rows, scored by the teacher terms only); what augment added goes to `notes`."""
    notes = {} if notes is None else notes
    if task == "feature-extraction":
        train, dev = _embedding_data(cfg, notes)
        return train, dev, [-1] * len(train), list(data.scores(dev))
    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    sizes = (cfg.train_size, cfg.eval_size)
    train, dev, _ = data.train_and_dev(cfg.data, cfg.eval, columns, cfg.data_dir, sizes)
    train_labels, dev_labels = _labels(train, teacher, task), _labels(dev, teacher, task)
    if cfg.unlabeled or cfg.augment:
        if train.pairs:
            raise InputError("--unlabeled text and augment work with single-sentence tasks only")
        extra = _unlabeled(cfg, train, notes)
        train = data.Examples(train.name, train.texts + extra)
        train_labels += [-1] * len(extra)
    return train, dev, train_labels, dev_labels


def _check(cfg: DistillConfig, config: dict[str, Any], task: str) -> None:
    """The student options, before the data and the teacher are loaded."""
    from edgeslim.train import students

    if (
        cfg.student is None
        and cfg.student_layers is None
        and cfg.init in ("every-other", "first-k", "last-k")
    ):
        raise InputError("choose the student: --student-layers K (with --init) or --student DIR")
    narrowed = (cfg.student_hidden, cfg.student_heads, cfg.student_ffn) != (None, None, None)
    if cfg.student is not None:  # a bad student fails here, not after the teacher and data load
        if narrowed:
            raise InputError(
                "--student-hidden/--student-heads/--student-ffn shape a student built from the "
                "teacher: drop them with --student DIR"
            )
        models.read_config(models.resolve(str(cfg.student)))
    width = students.target_width(config, cfg.student_hidden, cfg.student_heads, cfg.student_ffn)
    if width is not None and task == "feature-extraction":
        raise InputError(
            "an embedding teacher's student keeps the teacher's hidden size (their embeddings are "
            "compared directly): drop --student-hidden/--student-heads/--student-ffn"
        )
    if cfg.prune_heads or cfg.prune_ffn:
        if cfg.patience is not None:
            raise InputError(
                "--patience could stop before pruning is done: drop it with --prune-heads/--prune-ffn"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise InputError("pruning while distilling runs in one process: launch it without DDP")


def _pruner(student: Any, cfg: DistillConfig, hook_factory: Callable[[Any], Any] | None) -> Any:
    """The trainer hook: the caller's (prune/simplify recovery), or pruning while distilling."""
    from edgeslim import pruning

    if not (cfg.prune_heads or cfg.prune_ffn):
        return hook_factory(student) if hook_factory else None
    if hook_factory is not None:
        raise InputError("pruning while distilling does not combine with the calling step's own hook")
    return pruning.Pruner(student, cfg.prune_heads, cfg.prune_ffn, cfg.prune_at, cfg.prune_events)


def train_student(
    src: str,
    cfg: DistillConfig,
    out: Path,
    hook_factory: Callable[[Any], Any] | None = None,
    owner: str = "",
) -> dict[str, Any]:
    """Distill teacher `src` into a student written as a HF directory to `out`.

    `hook_factory(student)` makes a trainer hook (prune uses it to sparsify while distilling);
    `owner` identifies the calling step's run (prune/simplify recovery), so that its checkpoint
    resumes only that run."""
    import torch

    from edgeslim.train import loop, losses, students
    from edgeslim.train import task as tasks

    path = models.resolve(src)
    config = models.read_config(path)
    task = teacher_task(config)
    _check(cfg, config, task)
    notes: dict[str, Any] = {}
    train, dev, train_labels, dev_labels = load_data(path, cfg, task, notes)
    torch.manual_seed(cfg.seed)
    teacher = models.load(path, task).eval()
    batches = tasks.batch_maker(path, train, train_labels, task, cfg)
    student, mapping, kept = students.build(teacher, path, cfg, task, batches)
    wrapper = students.Student(student.train(), teacher.config.hidden_size, len(mapping), kept)
    pooling = models.default_pooling(path)
    loss_fn = losses.make_loss(teacher, cfg.losses, mapping, task, pooling)
    evaluate = (
        tasks.similarity_metric(path, dev, dev_labels, pooling, cfg)
        if task == "feature-extraction"
        else tasks.dev_metric(path, dev, dev_labels, task, cfg)
    )
    stats: dict[str, Any] = {"teacher_dev": evaluate(teacher), "layer_map": mapping, "eval_data": dev.name}
    stats["student_initial"] = students.shape(student)
    stats.update(notes, unlabeled_rows=train_labels.count(-1))
    if task == "sequence-classification":
        stats["pseudo_labels"] = pseudo_label_stats(
            teacher, tasks.batch_maker(path, dev, dev_labels, task, cfg)(0), cfg.losses.min_confidence
        )
    settings = tasks.loop_settings(cfg)
    hook = _pruner(student, cfg, hook_factory)
    run_id = fingerprint(src, cfg) + owner + (json.dumps(hook.describe(), sort_keys=True) if hook else "")
    result = loop.train(wrapper, loss_fn, batches, evaluate, tasks.METRIC[task], out, settings, run_id, hook)
    stats["student"] = students.shape(student)  # after any pruning: the shape written
    if hook is not None:
        kind = getattr(hook, "kind", None)  # lowbit.Hook names itself
        stats[kind or ("pruning" if cfg.prune_heads or cfg.prune_ffn else "sparsity")] = hook.report()
    if not artifacts.is_main_process():  # other ranks of a distributed run write nothing
        return {"rank": result["ranks"]}
    finish(
        out,
        path,
        {"type": "distill", "teacher": str(path), "config": cfg.model_dump(mode="json"), **stats, **result},
    )
    _pooling_width(out, stats["student"]["hidden"])
    return {
        "teacher_dev": stats["teacher_dev"],
        "student_best": result["best"],
        "layer_map": mapping,
        "student": stats["student"],
        **stats.get("pseudo_labels", {}),
        **({"augmented": stats["augment"]["added"]} if "augment" in stats else {}),
        **({"prune_events": stats["pruning"]["events"]} if "pruning" in stats else {}),
        **({"sparsity": stats["sparsity"]} if "sparsity" in stats else {}),
    }


def _pooling_width(out: Path, hidden: int) -> None:
    """The copied sentence-transformers pooling config names the student's width, not the teacher's."""
    pooling = out / "1_Pooling" / "config.json"
    if pooling.is_file():
        config = models.read_json(pooling)
        if config.get("word_embedding_dimension", hidden) != hidden:
            artifacts.write_json(pooling, {**config, "word_embedding_dimension": hidden})


def pseudo_label_stats(
    teacher: Any, batches: list[dict[str, Any]], min_confidence: float
) -> dict[str, float]:
    """On labelled batches: kept fraction at min_confidence and the teacher's accuracy on kept rows."""
    import torch

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


# Recovery (prune, simplify): a short distillation from the unchanged teacher, KL on the logits
# plus hidden states, at a higher rate than a full run's, checkpointed about RECOVERY_SAVES times
# (at most every RECOVERY_SAVE_EVERY steps).
RECOVERY_LR = 1e-4
RECOVERY_LOSSES = Weights(kl=1.0, hidden=1.0)
RECOVERY_SAVES = 4
RECOVERY_SAVE_EVERY = 100


class Recovery(Protocol):
    """The recovery settings of prune's and simplify's configs."""

    @property
    def recover_with(self) -> Path | None: ...
    @property
    def recover_steps(self) -> int: ...
    @property
    def data(self) -> str: ...
    @property
    def eval(self) -> str: ...
    @property
    def max_length(self) -> int: ...
    @property
    def seed(self) -> int: ...


def recover(
    student: Path,
    teacher: Path,
    cfg: Recovery,
    out: Path,
    hook_factory: Callable[[Any], Any] | None = None,
    owner: str = "",
) -> dict[str, Any]:
    """Distill `teacher` into the transformed `student` directory (KL + hidden states) and
    leave the result in `out` (used by prune and simplify); `student` is removed after.

    Resumable: the checkpoint lives in `out`/recovery (inside the step's kept `.NAME.partial`),
    written about four times per run; `owner` (the calling step's fingerprint) ties it to that
    step's model and settings."""
    import shutil

    work = out / "recovery"
    work.mkdir(exist_ok=True)  # a rerun after a kill finds its checkpoint here
    summary = train_student(str(teacher), _recovery_config(student, cfg), work, hook_factory, owner)
    for item in work.iterdir():
        shutil.move(str(item), out / item.name)
    work.rmdir()
    shutil.rmtree(student)
    # the student was a temporary folder of the calling step: record what it was, not where
    record = out / "edgeslim-train.json"
    if record.is_file():
        written = json.loads(record.read_text())
        written.get("config", {})["student"] = "the calling step's transformed model"
        artifacts.write_json(record, written)
    return summary


def _recovery_config(student: Path, cfg: Recovery) -> DistillConfig:
    """The distill settings of prune/simplify recovery (KL + hidden states) from their `cfg`."""
    return DistillConfig(
        student=student,
        data=cfg.data,
        eval=cfg.eval,
        max_steps=cfg.recover_steps,
        eval_every=cfg.recover_steps,
        save_every=max(1, min(RECOVERY_SAVE_EVERY, cfg.recover_steps // RECOVERY_SAVES)),
        max_length=cfg.max_length,
        seed=cfg.seed,
        lr=RECOVERY_LR,
        losses=RECOVERY_LOSSES,
    )


def check_recovery(cfg: Recovery) -> None:
    """Before prune/simplify change anything: the --recover-with teacher is a loadable model
    (config, head, tokenizer, weights) and --data/--eval load with labels it knows."""
    path = models.resolve(str(cfg.recover_with))
    config = models.read_config(path)
    task = teacher_task(config)
    models.check_tokenizer(path, config)
    models.weight_files(path, allow_pickle=False)
    load_data(path, _recovery_config(path, cfg), task)
