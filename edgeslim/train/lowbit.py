"""Low-bit training runs: QAT (int8 weights and activations) and ternary/binary weights, trained
by distillation from an fp32 teacher (the model itself by default) with the layers of
edgeslim/lowbit.py, or direct (ternary/binary only: the weights replaced, no training). The
qat and binarize steps' Configs live here because the runs below the steps take them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgeslim import artifacts, lowbit, models
from edgeslim.errors import InputError
from edgeslim.train.config import DistillConfig, TrainConfig, Weights, fingerprint


class LowBitWeights(Weights):
    """Distillation during low-bit training: logits (KL) and hidden states, as TernaryBERT and
    BinaryBERT do (the hidden-state term is on by default)."""

    hidden: float = Field(1.0, ge=0, description="Hidden-state MSE per layer (the model's own shape).")


LOWBIT_LOSSES = LowBitWeights()
CLASSIFIERS = ("sequence-classification",)  # what distillation takes as a teacher task


class LowBitConfig(TrainConfig):
    """What low-bit training shares: the teacher, which layers, the distillation losses."""

    teacher: Path | None = Field(
        None, description="fp32 teacher to distill from (default: the model itself)."
    )
    losses: LowBitWeights = Field(
        default_factory=LowBitWeights, description="Distillation loss terms and weights."
    )
    lr: float = Field(2e-5, gt=0, description="Peak learning rate (linear warmup and decay).")


class QatConfig(LowBitConfig):
    """Quantization-aware training: int8 weights (per output channel) and int8 inputs (per
    tensor, learned LSQ step) in every selected Linear."""

    type: Literal["qat"] = "qat"
    ranges: Literal["learned", "calibrated"] = Field(
        "learned",
        description="Input ranges: learned (LSQ step sizes, trained with the weights) or calibrated "
        "(max |x| of the first training batch, then fixed).",
    )
    reduce_range: bool | None = Field(
        None,
        description="7-bit weights (codes -63..63), which x86 CPUs without VNNI need to add int8 "
        "products without overflow; default: decided by the CPU this runs on.",
    )
    layers: Literal["every", "all", "ffn", "attention"] = Field(
        "every",
        description="Linear layers to quantize: every (encoder, pooler, classifier), all (the encoder's), "
        "ffn, attention.",
    )


class BinarizeConfig(LowBitConfig):
    """Ternary or binary weights in the selected Linear layers; embeddings and the classifier
    stay as they are."""

    type: Literal["binarize"] = "binarize"
    weights: Literal["ternary", "binary"] = Field("ternary", description="Weight values: ternary or binary.")
    layers: Literal["ffn", "attention", "all"] = Field("ffn", description="Linear layers to make low-bit.")
    direct: bool = Field(
        False, description="Replace the weights without training (no teacher, no data but --eval)."
    )


def _scheme(cfg: QatConfig | BinarizeConfig) -> tuple[str, bool]:
    """(weight scheme, quantized activations)."""
    return ("int8", True) if isinstance(cfg, QatConfig) else (cfg.weights, False)


def _weight_max(cfg: QatConfig | BinarizeConfig) -> int:
    """int8's weight code range: 7-bit where the CPU lacks VNNI (hardware.int8_defaults), unless set."""
    from edgeslim import hardware

    reduce = getattr(cfg, "reduce_range", None)
    if reduce is None:
        reduce = bool(hardware.int8_defaults(hardware.detect())["reduce_range"])
    return lowbit.REDUCED_MAX if reduce else lowbit.INT8_MAX


def _distill_config(src: Path, cfg: QatConfig | BinarizeConfig) -> DistillConfig:
    fields = set(TrainConfig.model_fields) - {"type"}
    return DistillConfig(student=src, losses=cfg.losses, **cfg.model_dump(include=fields))


def _check(path: Path) -> str:
    config = models.read_config(path)
    if lowbit.read_record(path) is not None:
        raise InputError(f"{path} is already low-bit: start from its fp32 model")
    from edgeslim.train.distill import teacher_task

    task = teacher_task(config)
    if task not in CLASSIFIERS:
        raise InputError(f"{path} is a {task} model: low-bit training supports sequence classifiers")
    return task


def evaluator(source: Path, cfg: QatConfig | BinarizeConfig, task: str) -> tuple[Any, str]:
    """(evaluate(model) -> scores, the eval data's name): the data is read and checked now,
    before any work."""
    from edgeslim.train import distill
    from edgeslim.train import task as tasks

    dcfg = _distill_config(source, cfg)
    _, dev, _, dev_labels = distill.load_data(source, dcfg, task)
    return tasks.dev_metric(source, dev, dev_labels, task, dcfg), dev.name


def fidelity(source: Path, quantized: Any, evaluated: tuple[Any, str], task: str) -> dict[str, Any]:
    """The eval data's metric for the fp32 source and the low-bit model (fake-quantized), and the drop."""
    from edgeslim.train import task as tasks

    evaluate, name = evaluated
    metric = tasks.METRIC[task]
    before = evaluate(models.load(source, task).eval())[metric]
    after = evaluate(quantized.eval())[metric]
    return {
        "metric": metric,
        "eval_data": name,
        "fp32": before,
        "lowbit": after,
        "drop": round(before - after, 6),
    }


def run(src: str, cfg: QatConfig | BinarizeConfig, out: Path) -> dict[str, Any]:
    """Make the low-bit model of `src` (a fp32 HF directory) in `out`: trained by distillation,
    or (binarize --direct) with its weights replaced; writes edgeslim-lowbit.json beside it."""
    from edgeslim.train import distill

    path = models.resolve(src)
    task = _check(path)
    scheme, activations = _scheme(cfg)
    layers = "every" if cfg.layers == "every" else cfg.layers
    direct = bool(getattr(cfg, "direct", False))
    if direct and cfg.teacher is not None:
        raise InputError("binarize --direct trains nothing, so it has no teacher: drop --teacher")
    method = {"type": cfg.type, "task": task, "scheme": scheme, "layers": cfg.layers, "trained": not direct}
    evaluated = evaluator(path, cfg, task)  # bad eval data fails here, before any work
    if direct:
        model = models.load(path, task)
        plan = lowbit.plan_for(model, scheme, layers, activations)
        lowbit.bake(model, plan)
        models.save_untied(model, out)
        models.save_tokenizer(path, out)
        summary: dict[str, Any] = {}
    else:
        teacher = models.resolve(str(cfg.teacher)) if cfg.teacher else path
        plans: list[dict[str, Any]] = []

        def hook(student: Any) -> lowbit.Hook:
            ranges = getattr(cfg, "ranges", "learned")
            plans.append(lowbit.plan_for(student, scheme, layers, activations, ranges, _weight_max(cfg)))
            return lowbit.Hook(student, plans[-1])

        summary = distill.train_student(
            str(teacher), _distill_config(path, cfg), out, hook, fingerprint(src, cfg)
        )
        if not artifacts.is_main_process():
            return summary
        plan = plans[-1]
        method["teacher"] = str(teacher)
    lowbit.save_record(out, plan, method)
    checked = fidelity(path, lowbit.load(out, task), evaluated, task)
    if direct:
        finish_direct(out, path, cfg, method, checked)
    else:  # the distillation's training record, named for this step
        record_path = out / "edgeslim-train.json"
        trained = models.read_json(record_path)
        artifacts.write_json(
            record_path, {**trained, "type": cfg.type, "lowbit_config": cfg.model_dump(mode="json")}
        )
    summary.update(
        layers=len(plan),
        scheme=scheme,
        **{f"{checked['metric']} fp32": checked["fp32"], f"{checked['metric']} low-bit": checked["lowbit"]},
    )
    record = lowbit.read_record(out) or {}
    lowbit.save_record(out, plan, {**record.get("method", method), "fidelity": checked})
    return summary


def finish_direct(
    out: Path, source: Path, cfg: BinarizeConfig | QatConfig, method: dict[str, Any], checked: dict[str, Any]
) -> None:
    """The training record a direct run writes (what train_student's `finish` writes for trained ones)."""
    artifacts.write_json(
        out / "edgeslim-train.json",
        {
            "type": cfg.type,
            "source": str(source),
            "config": cfg.model_dump(mode="json"),
            "method": method,
            "fidelity": checked,
        },
    )


def config_from(cls: type[QatConfig] | type[BinarizeConfig], values: dict[str, Any]) -> Any:
    """A command's Config from its flat option values (None: the Config's default); the loss
    flags (--kl, --hidden, ...) become `losses`, over LOWBIT_LOSSES."""
    from edgeslim.config import make_config

    weights = {k: v for k, v in values.items() if k in LowBitWeights.model_fields and v is not None}
    fields = {k: v for k, v in values.items() if k in cls.model_fields and k != "losses"}
    return make_config(cls, **fields, losses={**LOWBIT_LOSSES.model_dump(), **weights} if weights else None)
