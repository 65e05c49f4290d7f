"""simplify: simpler activation, cross-layer weight sharing, vocabulary trimming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from pydantic import Field

from edgeslim import models
from edgeslim.config import StepConfig
from edgeslim.errors import InputError
from edgeslim.flags import DryRun, Force, Output
from edgeslim.options import field_option


class Config(StepConfig):
    """Which simplifications to apply; recovery by distillation from a teacher."""

    takes_model: ClassVar[bool] = True
    produces_model: ClassVar[bool] = True
    type: Literal["simplify"] = "simplify"
    activation: Literal["relu", "gelu_new", "gelu"] | None = Field(None, description="New FFN activation.")
    share_layers: int | None = Field(None, ge=2, description="Groups of K consecutive layers share weights.")
    trim_vocab: str | None = Field(None, description="Keep only tokens that occur in this corpus.")
    trim_vocab_size: int | None = Field(None, gt=0, description="Use the first N texts of the corpus.")
    trim_keep_chars: Literal["none", "ascii", "all"] = Field(
        "ascii",
        description="Also keep single-character pieces and their ## forms (printable ASCII, all, "
        "none), so words outside the corpus split into pieces instead of becoming [UNK].",
    )
    recover_with: Path | None = Field(None, description="Teacher to distill from after the change.")
    recover_steps: int = Field(300, gt=0, description="Recovery distillation steps.")
    data: str = Field("sst2:train", description="Labelled data for recovery.")
    eval: str = Field("sst2:dev", description="Dev data for recovery.")
    max_length: int = Field(128, gt=1, description="Max tokens for recovery.")
    seed: int = Field(0, description="Seed.")

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        """Recovery is training: its `.NAME.partial` (checkpoint) survives a kill, to resume."""
        return self.recover_with is not None and bool(self.activation or self.share_layers)


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Simplify model `src` into the HF directory `out`."""
    import torch

    from edgeslim import data, pruning, simplify
    from edgeslim.train import distill
    from edgeslim.train.config import fingerprint

    if not (cfg.activation or cfg.share_layers or cfg.trim_vocab):
        raise InputError("nothing to simplify: give --activation, --share-layers and/or --trim-vocab")
    path = models.resolve(src)
    from edgeslim import lowbit

    lowbit.refuse(path, "simplify")
    # the corpus, the teacher and the recovery data are checked before anything changes
    texts = data.load(cfg.trim_vocab).head(cfg.trim_vocab_size or 10**9).texts if cfg.trim_vocab else []
    eval_texts = data.load(cfg.eval).texts if cfg.trim_vocab else []  # [UNK] share after trimming
    teacher = cfg.recover_with if cfg.activation or cfg.share_layers else None  # trimming alone: none
    if teacher is not None:
        distill.check_recovery(cfg)
    torch.manual_seed(cfg.seed)
    model = models.load(path, models.head_task(models.read_config(path)))
    record: dict[str, Any] = {
        "type": "simplify",
        "source": str(path),
        "config": cfg.model_dump(mode="json"),
        "parameters_before": pruning.count(model),
    }
    if cfg.activation:
        simplify.set_activation_(model, cfg.activation)
    if cfg.share_layers:
        record["shared_groups"] = simplify.share_layers_(model, cfg.share_layers)
    current = path
    if teacher is not None:
        changed = out / "changed"
        model.save_pretrained(changed)
        models.save_tokenizer(path, changed)
        owner = fingerprint(src, cfg)  # the checkpoint resumes only this simplification
        record["recovery"] = distill.recover(changed, teacher, cfg, out, owner=owner)
        current = out
        model = models.load(out, models.head_task(models.read_config(out)))
    if cfg.trim_vocab:
        before = simplify.unknown_fraction(current / "tokenizer.json", eval_texts)
        record["vocabulary"] = simplify.trim_vocabulary_(model, current, texts, out, cfg.trim_keep_chars)
        record["vocabulary"]["eval_unknown_fraction"] = {
            "data": cfg.eval,
            "before": before,
            "after": simplify.unknown_fraction(out / "tokenizer.json", eval_texts),
        }
    model.save_pretrained(out)
    if current != out:  # trimming wrote tokenizer.json and vocab.txt already; keep those
        for name in models.TOKENIZER_FILES:
            if (current / name).exists() and not (out / name).exists():
                (out / name).write_bytes((current / name).read_bytes())
    record["parameters_after"] = pruning.count(model)
    (out / "edgeslim-simplify.json").write_text(json.dumps(record, indent=2) + "\n")
    return {
        "parameters": f"{record['parameters_before']:,} -> {record['parameters_after']:,}",
        **({"vocabulary": record["vocabulary"]} if cfg.trim_vocab else {}),
    }


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    model: Annotated[str, typer.Argument(help="Model directory.")],
    output: Output,
    activation: Annotated[str | None, _option("activation")] = None,
    share_layers: Annotated[int | None, _option("share_layers")] = None,
    trim_vocab: Annotated[str | None, _option("trim_vocab")] = None,
    trim_vocab_size: Annotated[int | None, _option("trim_vocab_size")] = None,
    trim_keep_chars: Annotated[str | None, _option("trim_keep_chars")] = None,
    recover_with: Annotated[Path | None, _option("recover_with")] = None,
    recover_steps: Annotated[int | None, _option("recover_steps")] = None,
    data: Annotated[str | None, _option("data")] = None,
    eval: Annotated[str | None, _option("eval", "--eval")] = None,
    max_length: Annotated[int | None, _option("max_length")] = None,
    seed: Annotated[int | None, _option("seed")] = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Simplify activations, share weights across layers, trim the vocabulary."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        activation=activation,
        share_layers=share_layers,
        trim_vocab=trim_vocab,
        trim_vocab_size=trim_vocab_size,
        trim_keep_chars=trim_keep_chars,
        recover_with=recover_with,
        recover_steps=recover_steps,
        data=data,
        eval=eval,
        max_length=max_length,
        seed=seed,
    )
    run_single(model, cfg, output, force, dry_run)
