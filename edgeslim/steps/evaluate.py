"""eval: task metrics with bootstrap CIs on real data (and fidelity vs a reference artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from edgeslim import artifacts
from edgeslim.config import StepConfig
from edgeslim.defaults import BOOTSTRAP, QUICK_BOOTSTRAP
from edgeslim.flags import ArtifactArg, DryRun, Json
from edgeslim.options import field_option


class Config(StepConfig):
    """What to evaluate on; columns name the text, pair and label of user files."""

    type: Literal["eval"] = "eval"
    data: str = Field(description="Built-in dataset name (sst2:dev, stsb:dev, ...) or a file.")
    text_column: str | None = Field(None, description="Text column of a user file.")
    pair_column: str | None = Field(None, description="Second-text column of a user file.")
    label_column: str | None = Field(None, description="Label column of a user file.")
    limit: int | None = Field(None, gt=0, description="Evaluate the first N examples only.")
    batch_size: int = Field(32, gt=0, description="Sentences per batch.")
    bootstrap: int = Field(BOOTSTRAP, ge=QUICK_BOOTSTRAP, description="Bootstrap resamples for the 95% CIs.")
    reference: Path | None = Field(None, description="Artifact to measure fidelity against.")
    data_dir: Path | None = Field(None, description="Where built-in datasets live.")


def evaluate(src: Path, cfg: Config, reuse: bool = False) -> dict[str, Any]:
    """Load the data and evaluate artifact `src` (`reuse`: an eval step's stored result on the
    same model and data, when there is one)."""
    from edgeslim import evaluation

    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    return evaluation.evaluate_data(
        src, cfg.data, columns, cfg.data_dir, cfg.limit, cfg.batch_size, cfg.bootstrap, cfg.reference, reuse
    )


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Carry `src` into `out` with eval.json and the metrics recorded in the manifest."""
    result = evaluate(src, cfg)
    artifacts.copy_companions(src, out, skip_model=False)
    artifacts.write_json(out / "eval.json", result)
    manifest = artifacts.read_manifest(src)
    manifest["metrics"] = {**manifest.get("metrics", {}), cfg.data: result}
    step = {"type": "eval", "config": cfg.model_dump(mode="json"), "result": result}
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    return {k: f"{v['value']} (95% CI {v['ci95'][0]}-{v['ci95'][1]})" for k, v in result["metrics"].items()}


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    artifact: ArtifactArg,
    data: Annotated[str, _option("data", "--data")],
    text_column: Annotated[str | None, _option("text_column")] = None,
    pair_column: Annotated[str | None, _option("pair_column")] = None,
    label_column: Annotated[str | None, _option("label_column")] = None,
    reference: Annotated[Path | None, _option("reference")] = None,
    limit: Annotated[int | None, _option("limit")] = None,
    batch_size: Annotated[int | None, _option("batch_size")] = None,
    bootstrap: Annotated[int | None, _option("bootstrap")] = None,
    data_dir: Annotated[Path | None, _option("data_dir")] = None,
    json_out: Json = False,
    dry_run: DryRun = False,
) -> None:
    """Evaluate an artifact on real data: task metrics with 95% bootstrap CIs."""
    import json

    from edgeslim import ui
    from edgeslim.config import make_config
    from edgeslim.steps import as_recipe_step

    cfg = make_config(
        Config,
        data=data,
        text_column=text_column,
        pair_column=pair_column,
        label_column=label_column,
        reference=reference,
        limit=limit,
        batch_size=batch_size,
        bootstrap=bootstrap,
        data_dir=data_dir,
    )
    if dry_run:
        print(as_recipe_step(cfg), end="")
        return
    result = evaluate(artifact, cfg)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    title = f"{artifact} on {result['data']} ({result['n']} examples, {result['task']})"
    ui.summary(
        title,
        {
            k: f"{v['value']:.4f} (95% CI {v['ci95'][0]:.4f}-{v['ci95'][1]:.4f})"
            for k, v in result["metrics"].items()
        },
    )
    for output, figures in result.get("fidelity", {}).items():
        ui.summary(f"fidelity vs {reference} ({output})", figures)
