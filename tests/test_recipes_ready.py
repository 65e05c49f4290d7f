"""The ready recipes in recipes/: each documented, valid, runnable on a user's TSV file in place
of its built-in data (examples/), and gpu-fp16 refusing to start where no CUDA provider is."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import cli

from edgeslim import artifacts, data, gate
from edgeslim.errors import InputError
from edgeslim.recipe import load

ROOT = Path(__file__).parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
EXAMPLES = ROOT / "examples"
# Each built-in name the task recipes use -> the example file of the same shape and columns.
SWAP = {
    "stsb:train": EXAMPLES / "pairs_train.tsv",
    "stsb:dev": EXAMPLES / "pairs_dev.tsv",
    "trec:train": EXAMPLES / "questions_train.tsv",
    "trec:test": EXAMPLES / "questions_dev.tsv",
    "conll2003:train": EXAMPLES / "ner_train.tsv",
    "conll2003:valid": EXAMPLES / "ner_dev.tsv",
    "sst2:train": EXAMPLES / "sentiment_train.tsv",
    "sst2:dev": EXAMPLES / "sentiment_dev.tsv",
}
TASK_RECIPES = ("stsb-embed", "conll-ner", "trec", "gpu-fp16", "sst2-edge")
# Fields that name data, and the column fields that go with them in the same config.
DATA_FIELDS = ("data", "eval", "fidelity_data", "calib", "unlabeled", "trim_vocab")


def _swap(value: Any, table: dict[str, Any]) -> Any:
    """`value` (parsed YAML) with every string that is a key of `table` replaced."""
    if isinstance(value, dict):
        return {k: _swap(v, table) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, table) for v in value]
    return str(table[value]) if isinstance(value, str) and value in table else value


def _rewrite(name: str, tmp_path: Path, table: dict[str, Any], **top: Any) -> tuple[Path, dict[str, Any]]:
    """Recipe `name` with its data (and its budgets file's) swapped by `table`, top-level keys
    replaced by `top`, written into tmp_path; (its path, its parsed body)."""
    body = _swap(yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text()), table)
    for step in body["steps"]:
        if step.get("budgets_file"):
            budgets = _swap(yaml.safe_load((ROOT / step["budgets_file"]).read_text()), table)
            (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(budgets))
            step["budgets_file"] = str(tmp_path / "budgets.yaml")
    body.update(top)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path, body


def test_every_recipe_is_documented_and_validates() -> None:
    assert {p.stem for p in RECIPES} >= set(TASK_RECIPES)
    for path in RECIPES:
        text = path.read_text()
        header = text.split("\nname:")[0]
        assert header.startswith("# ") and len(header.splitlines()) >= 2, path.name  # says what it does
        if path.stem in TASK_RECIPES:
            assert f"Run: edgeslim run recipes/{path.name}" in header and "Your data:" in header
        recipe = load(path)
        assert [s.type for s in recipe.steps] == [s["type"] for s in yaml.safe_load(text)["steps"]]
        for step in recipe.steps:
            if getattr(step, "budgets_file", None) is not None:
                assert step.budgets_file.parts[:2] == ("recipes", "budgets")  # type: ignore[attr-defined]
                gate.load(ROOT / step.budgets_file)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_unknown_keys_are_rejected(path: Path, tmp_path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    body["steps"][-1]["budgetz"] = 1
    bad = tmp_path / path.name
    bad.write_text(yaml.safe_dump(body))
    with pytest.raises(InputError, match="unknown key 'budgetz'"):
        load(bad)


def test_examples_are_consistent() -> None:
    """Every example row is complete; NER rows carry one tag per word; dev labels occur in training."""
    ner = {name: data.load(str(SWAP[name]), "tokens", None, "ner_tags") for name in SWAP if "conll" in name}
    for examples in ner.values():
        assert examples.labels and len(examples) >= 10
        for words, tags in zip(examples.texts, examples.labels, strict=True):
            assert len(words.split(" ")) == len(tags.split(" ")), words
    tags = [
        {t for row in ner[n].labels or [] for t in row.split(" ")}
        for n in ("conll2003:train", "conll2003:valid")
    ]
    assert tags[1] <= tags[0] and {"B-PER", "B-ORG", "B-LOC", "B-MISC", "O"} <= tags[0]
    questions = [
        data.load(str(SWAP[n]), "question", None, "coarse_label") for n in ("trec:train", "trec:test")
    ]
    classes = [set(q.labels or []) for q in questions]
    assert classes[0] == classes[1] == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    sentiment = [data.load_labelled(str(SWAP[n]), None, None, None, None) for n in ("sst2:train", "sst2:dev")]
    assert [set(s.labels or []) for s in sentiment] == [{"0", "1"}] * 2
    for name in ("stsb:train", "stsb:dev"):
        pairs = data.load(str(SWAP[name]), "sentence1", "sentence2", "score")
        assert pairs.pairs and all(0 <= s <= 5 for s in data.scores(pairs))
    assert (EXAMPLES / "README.md").is_file()


def _reads(recipe: Any) -> list[tuple[str, str, tuple[str | None, ...]]]:
    """(where, data spec, the (text, pair, label) columns it is read with) for every data field
    the recipe sets (defaults name shipped sets a user need not replace) and its budgets file's."""
    reads = []
    for number, step in enumerate(recipe.steps, 1):
        columns = tuple(getattr(step, f"{role}_column", None) for role in ("text", "pair", "label"))
        unlabelled, plain = (*columns[:2], None), (None, None, None)
        fields = {
            "data": columns if step.type in ("finetune", "eval") else unlabelled,  # distill: text only
            "eval": columns,
            "fidelity_data": unlabelled,
            "calib": unlabelled if getattr(step, "mode", None) == "static" else None,  # else unread
            "unlabeled": plain,
            "trim_vocab": plain,
        }
        for field, used in fields.items():
            spec = getattr(step, field, None)
            if isinstance(spec, str) and used is not None and field in step.model_fields_set:
                reads.append((f"step {number} ({step.type}) {field}", spec, used))
        if getattr(step, "budgets_file", None) is not None:
            loaded = gate.load(ROOT / step.budgets_file)
            for budget in (loaded.min_metric, loaded.max_drop):
                if budget is not None:
                    used = (budget.text_column, budget.pair_column, budget.label_column)
                    reads.append((f"step {number} (gate) budget", budget.data, used))
    return reads


@functools.cache
def _read(spec: str, columns: tuple[str | None, ...]) -> data.Examples:
    """A data set read once per test session (SST-2's 67,349 training rows are named thrice)."""
    return data.load(spec, *columns)


@pytest.mark.parametrize("name", TASK_RECIPES)
def test_user_files_replace_builtin_data(name: str, tmp_path: Path) -> None:
    """With only the built-in names swapped for example files, every data field of the recipe
    (and of its budgets file) reads with the columns the recipe names, pairs and labels
    included where the step needs them; the built-in sets read the same way (CoNLL-2003, not
    shipped, excepted)."""
    path, _ = _rewrite(name, tmp_path, SWAP)
    swapped, original = _reads(load(path)), _reads(load(ROOT / "recipes" / f"{name}.yaml"))
    assert [spec for _, spec, _ in swapped if spec in data.BUILTIN] in ([], ["wikitext2"])
    assert len(swapped) == len(original) and any(spec.startswith(str(EXAMPLES)) for _, spec, _ in swapped)
    for (where, spec, used), (_, named, _) in zip(swapped, original, strict=True):
        for source in (spec, named):
            if source.startswith("conll2003"):
                continue
            examples = _read(source, used)
            assert len(examples) > 0, where
            assert (examples.pairs or not used[1]) and (examples.labels or not used[2]), where
    for step in load(path).steps:
        if step.type == "finetune":  # labels checked against the task, dev labels seen in training
            from edgeslim.train.task import load_task_data

            train, dev, names = load_task_data(step, step.task)  # type: ignore[arg-type]
            assert len(train) > 10 and len(dev) > 5 and len(names) >= 2


def _no_shared_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """CoNLL-2003 is looked up nowhere: neither beside the checkout nor in $EDGESLIM_DATA_DIR."""
    monkeypatch.setattr(data, "beside_checkout", lambda: [Path("/nonexistent/shared/data")])
    monkeypatch.delenv("EDGESLIM_DATA_DIR", raising=False)


def _tiny_run(body: dict[str, Any]) -> dict[str, Any]:
    """Demo budgets cut to a tiny model's size: a few training steps, short inputs, few runs."""
    for step in body["steps"]:
        if step["type"] == "finetune":
            step.update(max_steps=8, eval_every=4, save_every=4, batch_size=8, max_length=32)
        if step["type"] == "bench":
            step.update(threads=[1], seq=[32], runs=5)
        if step["type"] == "quantize":
            step["fidelity_size"] = 8
    return body


def test_conll_recipe_runs_on_the_example_files(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conll-ner end to end on a tiny model with the NER example files in place of CoNLL-2003
    (nothing read from a data folder); the gate judges the entity F1 the eval step measured."""
    _no_shared_data(monkeypatch)
    monkeypatch.chdir(tmp_path)
    path, body = _rewrite("conll-ner", tmp_path, SWAP, model=str(tiny_bert), output=str(tmp_path / "out"))
    path.write_text(yaml.safe_dump(_tiny_run(body), sort_keys=False))
    budgets = yaml.safe_load((tmp_path / "budgets.yaml").read_text())
    budgets["min_metric"]["value"] = 0.0
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(budgets))
    result = cli(["run", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    manifest = artifacts.read_manifest(out)
    record = manifest["recipe"]
    assert [s["type"] for s in record["steps"]] == [s["type"] for s in body["steps"]]
    hashed = {k for s in record["steps"] for k in s["inputs"]}
    assert str(SWAP["conll2003:train"]) in hashed and not any(k.startswith("conll2003") for k in hashed)
    assert manifest["task"] == "token-classification"
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["n"] == len(data.load(str(SWAP["conll2003:valid"]), "tokens", None, "ner_tags"))
    f1 = evaluated["metrics"]["entity_f1"]["value"]
    verdicts = json.loads((out / "gate.json").read_text())
    row = next(r for r in verdicts["budgets"] if r["budget"] == "min_metric.entity_f1")
    assert verdicts["passed"] and float(row["actual"]) == pytest.approx(f1, abs=1e-4)
    budgets["min_metric"]["value"] = round(f1 + 0.01, 4)  # just out of reach: the gate must fail
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(budgets))
    again = cli(["run", str(path)])
    assert again.exit_code == 6, again.output
    count = len(body["steps"])
    assert all(
        f"[{i}/{count}] {body['steps'][i - 1]['type']}: reused" in again.output for i in range(1, count)
    )
    assert f"[{count}/{count}] gate: running" in again.output and "min_metric.entity_f1" in again.output


def test_conll_without_its_data_fails_with_one_line(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where CoNLL-2003 is not found, the first step stops at once: one line saying where it
    looked and what to set; exit 3; no output."""
    _no_shared_data(monkeypatch)
    monkeypatch.chdir(tmp_path)
    path, _ = _rewrite("conll-ner", tmp_path, {}, model=str(tiny_bert), output=str(tmp_path / "out"))
    result = cli(["run", str(path)])
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "conll2003:train" in errors[0] and "EDGESLIM_DATA_DIR" in errors[0]
    assert not (tmp_path / "out").exists()


def _providers(monkeypatch: pytest.MonkeyPatch, available: list[str]) -> None:
    """onnxruntime reports exactly `available` (no plugin EP devices either)."""
    import onnxruntime

    from edgeslim import providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(available))
    monkeypatch.setattr(providers, "_plugin_devices", lambda: [])


@pytest.mark.parametrize("args", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_gpu_recipe_without_cuda_fails_before_any_step(
    args: list[str], tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CUDA provider: exit 7 with onnxruntime's providers and what to install, on one line,
    before export runs; nothing written (no output, no cache)."""
    _providers(monkeypatch, ["CPUExecutionProvider"])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path, _ = _rewrite("gpu-fp16", tmp_path, {}, model=str(tiny_bert), output=str(work / "out"))
    result = cli(["run", str(path), *args])
    assert result.exit_code == 7, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: CUDAExecutionProvider is not available")
    assert "available: CPUExecutionProvider" in lines[0] and "onnxruntime-gpu" in lines[0]
    assert list(work.iterdir()) == []


def test_gpu_recipe_plans_where_cuda_is(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same recipe plans where onnxruntime offers CUDA, and its bench (and the budgets'
    latency on CUDA) are keyed on the provider."""
    _providers(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.chdir(tmp_path)
    path, _ = _rewrite("gpu-fp16", tmp_path, {}, model=str(tiny_bert), output=str(tmp_path / "out"))
    result = cli(["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "5. bench: to run" in result.output and not (tmp_path / "out").exists()
    from edgeslim import fingerprint

    recipe = load(path)
    keyed = [s.type for s in recipe.steps if "provider:cuda" in fingerprint.inputs(s)]
    assert keyed == ["bench", "gate"]


def test_cpu_recipes_need_no_provider_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipes on the CPU never ask onnxruntime for providers while planning."""
    from edgeslim import fingerprint, providers

    called: list[str] = []

    def spy(ep: str) -> dict[str, Any]:
        called.append(ep)
        return {}

    monkeypatch.setattr(providers, "facts", spy)
    monkeypatch.chdir(ROOT)  # the budgets files' paths are relative to the repository
    for name in ("trec", "stsb-embed"):
        for step in load(ROOT / "recipes" / f"{name}.yaml").steps:
            fingerprint.inputs(step)
    assert called == []
