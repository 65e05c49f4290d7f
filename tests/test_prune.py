import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import cli

from edgeslim import artifacts


def _prune(model: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return cli(["prune", str(model), "-o", str(out), *args])


def test_heads_and_ffn_shrink_export_and_fuse(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    result = _prune(model, tmp_path / "p", "--heads", "0.5", "--ffn", "0.5")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    assert record["parameters_after"] < record["parameters_before"]
    assert all(len(h) == 2 for h in record["removed_heads"].values()) and record["ffn_sizes"] == [18, 18]
    from transformers import AutoModelForSequenceClassification

    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p")  # reloads at the new shapes
    block = pruned.bert.encoder.layer[0]
    assert block.attention.self.query.weight.shape == (16, 32) and block.intermediate.dense.weight.shape == (
        18,
        32,
    )
    assert (
        cli(
            ["export", str(tmp_path / "p"), "--task", "sequence-classification", "-o", str(tmp_path / "e")]
        ).exit_code
        == 0
    )  # parity checked against the pruned PyTorch model
    fused = cli(["optimize", str(tmp_path / "e"), "-o", str(tmp_path / "f"), "--require-full-fusion"])
    assert fused.exit_code == 0, fused.output  # every layer's (pruned) attention still fuses
    assert artifacts.read_manifest(tmp_path / "f")["steps"][-1]["fusion"]["kinds"]["attention"]["found"] == 2


def test_taylor_importance_and_layers(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _prune(
        tiny_factory("bert", "seq", 2),
        tmp_path / "p",
        "--heads",
        "0.25",
        "--importance",
        "taylor",
        "--keep-layers",
        "1",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    assert record["kept_layers"] == [1] and list(record["removed_heads"].values()) == [
        record["removed_heads"]["0"]
    ]


def test_taylor_importance_is_gradient_times_weight(tiny_factory: Callable[..., Path]) -> None:
    """With batches, head and FFN scores are |grad x weight| sums (not the magnitude scores)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeslim import pruning

    source = tiny_factory("bert", "seq", 2)
    model = AutoModelForSequenceClassification.from_pretrained(source)
    batch = dict(
        AutoTokenizer.from_pretrained(source)(["w1 w2 w3", "w4 w5", "w6"], padding=True, return_tensors="pt")
    )
    batch["labels"] = torch.tensor([0, 1, 1])
    torch.manual_seed(0)  # dropout is on while the gradients accumulate
    heads = pruning.head_importance(model, [batch])
    torch.manual_seed(0)
    ffn = pruning.ffn_importance(model, [batch])
    torch.manual_seed(0)
    model.train()
    model(**batch).loss.backward()
    for i, block in enumerate(model.bert.encoder.layer):
        attn, size = block.attention, 8  # 32 hidden / 4 heads
        qkv = [attn.self.query.weight, attn.self.key.weight, attn.self.value.weight]
        out = attn.output.dense.weight.detach()
        manual = torch.zeros(4)
        for h in range(4):
            rows = slice(h * size, (h + 1) * size)
            manual[h] = sum(float((w[rows] * w.grad[rows]).detach().abs().sum()) for w in qkv)
            manual[h] += float((out[:, rows] * attn.output.dense.weight.grad[:, rows]).abs().sum())
        assert torch.allclose(heads[i], manual, rtol=1e-4)
        up, down = block.intermediate.dense.weight, block.output.dense.weight
        expected = (up * up.grad).abs().sum(1) + (down * down.grad).abs().sum(0)
        assert torch.allclose(ffn[i], expected.detach(), rtol=1e-4)


def test_prune_with_recovery(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    result = _prune(
        teacher, tmp_path / "p", "--ffn", "0.5", "--recover-with", str(teacher), "--recover-steps", "2"
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"config.json", "model.safetensors", "edgeslim-prune.json", "edgeslim-train.json"} <= names
    assert json.loads((tmp_path / "p" / "edgeslim-train.json").read_text())["steps"] == 2
    assert _prune(teacher, tmp_path / "plain", "--ffn", "0.5").exit_code == 0  # the same pruning, no recovery
    from safetensors.torch import load_file

    recovered, plain = (load_file(d / "model.safetensors") for d in (tmp_path / "p", tmp_path / "plain"))
    assert recovered.keys() == plain.keys()
    changed = [k for k in plain if not torch.equal(recovered[k], plain[k])]
    assert any("encoder.layer" in k for k in changed)  # recovery trained the pruned student


def test_prune_bad_input(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    for args, needle in (
        (["--heads", "1.0"], "heads"),
        (["--ffn", "0"], "ffn"),
        ([], "nothing to prune"),
        (["--heads", "0.9"], "remove all"),
    ):
        result = _prune(model, tmp_path / "p", *args)
        assert result.exit_code == 3 and needle in result.output, result.output
    result = _prune(tiny_factory("distilbert"), tmp_path / "p", "--heads", "0.5")
    assert result.exit_code == 3 and "supports bert" in result.output
    assert not (tmp_path / "p").exists()


def test_unstructured_magnitude(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _prune(tiny_factory("bert", "seq", 2), tmp_path / "p", "--unstructured", "0.8")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    assert all(0.79 <= v <= 0.81 for v in record["sparsity"].values())
    assert record["zipped_bytes"]["after"] < record["zipped_bytes"]["before"]
    assert "not a speed win" in record["note"]
    from safetensors.torch import load_file

    name = "bert.encoder.layer.0.intermediate.dense.weight"
    before = load_file(tiny_factory("bert", "seq", 2) / "model.safetensors")[name]
    after = load_file(tmp_path / "p" / "model.safetensors")[name]
    zeros = after == 0
    assert 0.79 <= float(zeros.float().mean()) <= 0.81  # the saved model holds the zeros
    assert float(before[zeros].abs().max()) <= float(before[~zeros].abs().min())  # the smallest went
    assert torch.equal(after[~zeros], before[~zeros])  # and the rest are untouched


def test_iterative_cycles_track_metric(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    result = _prune(
        teacher,
        tmp_path / "p",
        "--heads",
        "0.5",
        "--ffn",
        "0.5",
        "--cycles",
        "2",
        "--recover-with",
        str(teacher),
        "--recover-steps",
        "2",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    params = [c["parameters"] for c in record["cycles"]]
    assert len(params) == 2 and params[1] < params[0] and "accuracy" in record["cycles"][0]["dev"]
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert all(len(v) == 2 for v in config["pruned_heads"].values())  # 4 -> 3 -> 2 heads, original indices
    assert not list((tmp_path / "p").glob("cycle*"))


def test_pruning_keeps_the_models_head(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _prune(tiny_factory("bert", "tok", 5), tmp_path / "p", "--ffn", "0.5")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and len(config["id2label"]) == 5


def test_cubic_schedule_and_movement_scores() -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from edgeslim import sparsity

    levels = [sparsity.cubic(s, 100, 0.8, 0.1, 0.7) for s in range(101)]
    assert levels[10] == 0.0 and levels[70] == levels[100] == 0.8
    assert all(b >= a for a, b in zip(levels, levels[1:], strict=False))  # monotonic
    assert levels[20] - levels[10] > levels[70] - levels[60]  # cubic: fast first, slow last
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(config)
    hook = sparsity.Sparsifier(model, 0.5, "movement", "oneshot")
    name = "layer0.attention.self.query"
    weight = hook.weights[name]
    with torch.no_grad():  # movement keeps what training pushes away from zero, not what is large
        weight.fill_(1.0)
        weight[:8] = 5.0
    weight.grad = torch.ones_like(weight)  # the loss falls as the first rows shrink...
    weight.grad[8:] = -1.0  # ...and as the last rows grow
    hook.after_backward()
    hook.after_step(0, 10)
    assert (weight[:8] == 0).all() and (weight[8:] != 0).all()
    magnitude = sparsity.Sparsifier(model, 0.5, "magnitude", "oneshot")
    with torch.no_grad():
        magnitude.weights[name].copy_(torch.arange(256, dtype=torch.float).view(16, 16))
    magnitude.after_step(0, 10)
    assert (magnitude.weights[name].flatten()[:128] == 0).all()
    assert magnitude.report()["layer0"] >= 0.5
    restored = sparsity.Sparsifier(model, 0.5, "magnitude", "oneshot")  # what a resumed run loads
    restored.load_state_dict(magnitude.state_dict())
    assert restored.level == 0.5 and torch.equal(restored.masks[name], magnitude.masks[name])


def test_movement_pruning_on_a_cubic_schedule_while_distilling(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    common = ["--recover-with", str(teacher), "--recover-steps", "20", "--unstructured", "0.6"]
    result = _prune(teacher, tmp_path / "m", *common, "--method", "movement", "--schedule", "cubic")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m" / "edgeslim-prune.json").read_text())
    assert all(0.59 <= v <= 0.61 for v in record["sparsity"].values()), record["sparsity"]
    assert record["zipped_bytes"]["after"] < record["zipped_bytes"]["before"]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "m" / "model.safetensors")
    query = weights["bert.encoder.layer.0.attention.self.query.weight"]
    assert 0.59 <= float((query == 0).float().mean()) <= 0.61  # the saved model holds the zeros
    assert "accuracy" in record["recovery"]["student_best"]
    # magnitude scores kept through recovery (one-shot): the optimizer does not revive them
    result = _prune(teacher, tmp_path / "o", *common, "--schedule", "oneshot")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "edgeslim-prune.json").read_text())
    assert all(0.59 <= v <= 0.61 for v in record["sparsity"].values())


def test_unstructured_bad_combinations(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    for args, needle in (
        (["--unstructured", "0.5", "--method", "movement"], "while distilling"),
        (["--unstructured", "0.5", "--schedule", "cubic"], "while distilling"),
        (["--heads", "0.5", "--method", "movement"], "apply to --unstructured"),
        (["--heads", "0.5", "--target-params", "10"], "--cycles"),
    ):
        result = _prune(model, tmp_path / "p", *args)
        assert result.exit_code == 3 and needle in result.output, result.output
        assert not (tmp_path / "p").exists()


def test_cycles_stop_at_a_measured_latency_target(
    tiny_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cycles stop at the first whose measured latency fraction is under the target; the
    timings are injected (1.2x, then 0.5x the source's), so the verdict is not the host's."""
    from edgeslim import bench

    fractions = iter([1.2, 0.5, 0.4])

    def fake_grid(models: dict[str, Path], *args: object, **kwargs: object) -> dict[str, object]:
        assert set(models) == {"source", "candidate"} and all(p.is_file() for p in models.values())
        ratio = next(fractions)
        return {
            "cells": [
                {"model": "source", "median_ms": 10.0},
                {"model": "candidate", "median_ms": 10.0 * ratio},
            ]
        }

    monkeypatch.setattr(bench, "run_grid", fake_grid)
    teacher = tiny_factory("bert", "seq", 2)
    result = _prune(
        teacher,
        tmp_path / "p",
        "--ffn",
        "0.9",
        "--heads",
        "0.5",
        "--cycles",
        "3",
        "--target-latency",
        "0.99",
        "--latency-seq",
        "32",
        "--recover-with",
        str(teacher),
        "--recover-steps",
        "2",
    )
    assert result.exit_code == 0, result.output
    cycles = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())["cycles"]
    assert [c["latency_fraction"] for c in cycles] == [1.2, 0.5]  # stopped at the first under 0.99
    assert not (tmp_path / "p" / ".latency").exists()


def test_global_head_ranking_differs_per_layer_and_still_fuses(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    source = tiny_factory("bert", "seq", 2)
    model = AutoModelForSequenceClassification.from_pretrained(source)
    with torch.no_grad():  # layer 0's heads are all larger: a global ranking takes layer 1's first
        attention = model.bert.encoder.layer[0].attention
        for linear in (
            attention.self.query,
            attention.self.key,
            attention.self.value,
            attention.output.dense,
        ):
            linear.weight.mul_(10)
    skewed = tmp_path / "skewed"
    model.save_pretrained(skewed)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            (skewed / name).write_bytes((source / name).read_bytes())
    result = _prune(skewed, tmp_path / "p", "--heads", "0.5", "--heads-scope", "global")
    assert result.exit_code == 0, result.output
    removed = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())["removed_heads"]
    assert [len(removed["0"]), len(removed["1"])] == [1, 3]  # 4 of 8 heads, one left in layer 1
    onnx, fused = tmp_path / "e", tmp_path / "f"
    exported = cli(["export", str(tmp_path / "p"), "--task", "sequence-classification", "-o", str(onnx)])
    assert exported.exit_code == 0, exported.output  # parity with the pruned PyTorch model
    result = cli(["optimize", str(onnx), "-o", str(fused), "--require-full-fusion"])
    assert result.exit_code == 0, result.output
    report = artifacts.read_manifest(fused)["steps"][-1]["fusion"]["kinds"]["attention"]
    assert report == {"expected": 2, "found": 2, "status": "full"}  # 3 heads and 1 head, both fused
    from edgeslim import inspection

    graph = inspection.load_graph(fused / "model.onnx")
    heads = sorted(
        next(a.i for a in n.attribute if a.name == "num_heads")
        for n in graph.graph.node
        if n.op_type == "Attention"
    )
    assert heads == [1, 3]


def test_recipe_recovers_from_an_earlier_step(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    steps = (
        "steps:\n  - type: finetune\n    train_size: 64\n    eval_size: 32\n    max_steps: 2\n"
        "    eval_every: 2\n  - type: prune\n    ffn: 0.5\n    recover_with: '@{ref}'\n"
        "    recover_steps: 2\n    eval: sst2:dev\n"
    )
    path = tmp_path / "r.yaml"
    head = f"name: t\nmodel: {tiny_factory('bert')}\noutput: {tmp_path / 'o'}\n"
    path.write_text(head + steps.format(ref=2))  # a step cannot recover from itself
    result = cli(["run", str(path)])
    assert result.exit_code == 3 and "earlier step" in result.output
    path.write_text(head + steps.format(ref=1))
    result = cli(["run", str(path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "edgeslim-prune.json").read_text())
    assert record["ffn_sizes"] == [18, 18] and "01-finetune" in record["config"]["recover_with"]
    assert json.loads((tmp_path / "o" / "edgeslim-recipe.json").read_text())["name"] == "t"
    assert cli(["run", str(path)]).exit_code == 0  # its own earlier output is replaced
