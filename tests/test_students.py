"""Students shaped for a target: a narrower width copied from the teacher's most active slices,
learned projections for the hidden-state loss, and heads/FFN pruned while distilling (Taylor
importance from the distillation's own gradients), resumable across the prune point."""

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import cli

from edgeslim import models, pruning
from edgeslim.errors import InputError
from edgeslim.train import losses, students
from edgeslim.train.students import Width

FAST = ["--train-size", "64", "--eval-size", "32", "--batch-size", "16", "--max-length", "16"]
NARROW = ["--student-hidden", "16", "--student-heads", "2", "--student-ffn", "20"]


def _batch(model: Path, rows: int = 16) -> dict[str, torch.Tensor]:
    """Seeded in-vocabulary sentences of 3 to 12 words, padded."""
    from transformers import AutoTokenizer

    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(90)}" for _ in range(rng.randint(3, 12))) for _ in range(rows)]
    return dict(AutoTokenizer.from_pretrained(model)(texts, padding=True, return_tensors="pt"))


def _teacher(tiny_factory: Callable[..., Path]) -> tuple[Any, dict[str, torch.Tensor]]:
    path = tiny_factory("bert", "seq", 2)  # hidden 32, 4 heads of 8, FFN 37, 2 layers
    return models.load(path, "sequence-classification").eval(), _batch(path)


def test_target_width_is_checked() -> None:
    bert = {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 37}
    assert students.target_width(bert, None, None, None) is None
    assert students.target_width(bert, 32, 4, 37) is None  # the teacher's own width
    assert students.target_width(bert, 16, 2, None) == Width(16, 2, 37)
    assert students.target_width(bert, None, None, 20) == Width(32, 4, 20)
    bad = {
        (64, None, None): "wider than the teacher's 32",
        (30, None, None): "not divisible by 4 heads",
        (16, 1, None): "use at least 2 heads",  # a head of 16 dims: the teacher's are 8
        (None, 8, None): "wider than the teacher's 4",
    }
    for (hidden, heads, ffn), message in bad.items():
        with pytest.raises(InputError, match=message):
            students.target_width(bert, hidden, heads, ffn)
    with pytest.raises(InputError, match="--student-layers only"):
        students.target_width({**bert, "model_type": "distilbert"}, 16, 2, None)
    with pytest.raises(InputError, match="pruned heads"):
        students.target_width({**bert, "pruned_heads": {"0": [1]}}, 16, 2, None)


def test_activation_importance_is_what_the_teacher_computes(tiny_factory: Callable[..., Path]) -> None:
    teacher, batch = _teacher(tiny_factory)
    importance = students.activation_importance(teacher, [batch])
    with torch.no_grad():
        states = teacher(**batch, output_hidden_states=True).hidden_states  # (B, T, H) per layer + 1
    mask = batch["attention_mask"][..., None]
    mean_abs = [(s.abs() * mask).sum((0, 1)) / mask.sum() for s in states]
    assert torch.allclose(importance.embeddings, mean_abs[0], atol=1e-6)
    # each layer's score sums its two LayerNorm outputs: the second is the layer's output
    assert all(
        bool((h >= m - 1e-6).all()) for h, m in zip(importance.hidden_by_layer, mean_abs[1:], strict=True)
    )
    assert [s.shape for s in importance.heads] == [(4,), (4,)]
    assert [s.shape for s in importance.ffn] == [(37,), (37,)] and all(
        bool((s > 0).all()) for s in importance.ffn
    )


@pytest.mark.parametrize("width", [Width(16, 2, 20), Width(16, 4, 20)], ids=["whole-heads", "half-heads"])
def test_narrow_student_copies_the_teachers_most_active_slices(
    tiny_factory: Callable[..., Path], width: Width
) -> None:
    teacher, batch = _teacher(tiny_factory)
    importance = students.activation_importance(teacher, [batch])
    reduced = students.reduce_layers(teacher, [1])
    plan = students.width_plan(reduced, width, importance, [1])
    student = students.narrow(reduced, width, plan).eval()
    shape = students.shape(student)
    assert shape | {"parameters": 0} == {
        "layers": 1,
        "hidden": 16,
        "heads": [width.heads],
        "ffn": [20],
        "parameters": 0,
    }
    hid = plan["hidden"]
    assert torch.equal(hid, importance.hidden([1]).topk(16).indices.sort().values)
    assert torch.equal(plan["ffn"][0], importance.ffn[1].topk(20).indices.sort().values)
    head_size = 16 // width.heads  # the teacher's heads are 8 wide
    assert set((plan["qk"][0] // 8).tolist()) == set(plan["heads"][0].tolist())
    if head_size == 8:  # whole heads: every row of each kept head
        assert torch.equal(plan["qk"][0], plan["v"][0])
    s, t = student.state_dict(), reduced.state_dict()
    layer = "bert.encoder.layer.0."
    expected = {  # name -> the teacher slice it must equal
        "bert.embeddings.word_embeddings.weight": t["bert.embeddings.word_embeddings.weight"][:, hid],
        "bert.embeddings.LayerNorm.weight": t["bert.embeddings.LayerNorm.weight"][hid],
        layer + "attention.self.query.weight": t[layer + "attention.self.query.weight"][plan["qk"][0]][:, hid]
        * (head_size / 8) ** 0.5,
        layer + "attention.self.key.weight": t[layer + "attention.self.key.weight"][plan["qk"][0]][:, hid],
        layer + "attention.self.value.bias": t[layer + "attention.self.value.bias"][plan["v"][0]],
        layer + "attention.output.dense.weight": t[layer + "attention.output.dense.weight"][hid][
            :, plan["v"][0]
        ],
        layer + "intermediate.dense.weight": t[layer + "intermediate.dense.weight"][plan["ffn"][0]][:, hid],
        layer + "output.dense.weight": t[layer + "output.dense.weight"][hid][:, plan["ffn"][0]],
        layer + "output.LayerNorm.bias": t[layer + "output.LayerNorm.bias"][hid],
        "bert.pooler.dense.weight": t["bert.pooler.dense.weight"][hid][:, hid],
        "classifier.weight": t["classifier.weight"][:, hid],
    }
    for name, value in expected.items():
        assert torch.allclose(s[name], value), name
    torch.manual_seed(1)
    random_init = type(student)(student.config).eval()
    with torch.no_grad():
        out_t = teacher(**batch, output_hidden_states=True)
        out_s, out_r = (m(**batch, output_hidden_states=True) for m in (student, random_init))
    mask = batch["attention_mask"][..., None]

    def state_error(out: Any) -> float:  # the last hidden state vs the teacher's on the kept channels
        return float((((out.hidden_states[-1] - out_t.hidden_states[-1][..., hid]) ** 2) * mask).sum())

    assert state_error(out_s) < 0.2 * state_error(out_r)
    logits_error = [float(((o.logits - out_t.logits) ** 2).sum()) for o in (out_s, out_r)]
    assert logits_error[0] < logits_error[1]


def test_projection_starts_as_the_kept_channels_and_learns(tiny_factory: Callable[..., Path]) -> None:
    from edgeslim.train.config import Weights

    teacher, batch = _teacher(tiny_factory)
    width = Width(16, 2, 20)
    reduced = students.reduce_layers(teacher, [1])
    plan = students.width_plan(reduced, width, students.activation_importance(teacher, [batch]), [1])
    wrapper = students.Student(students.narrow(reduced, width, plan), 32, 1, plan["hidden"])
    proj = wrapper.proj[0]
    assert isinstance(proj, torch.nn.Linear) and proj.weight.shape == (32, 16)
    embedding = torch.zeros(32, 16)
    embedding[plan["hidden"], torch.arange(16)] = 1.0
    assert torch.equal(proj.weight, embedding) and not proj.bias.any()
    loss_fn = losses.make_loss(teacher, Weights(kl=0.0, hidden=1.0), [1], "sequence-classification")
    total, _ = loss_fn(wrapper, {**batch, "labels": torch.zeros(16, dtype=torch.long)})
    total.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert all(not n.startswith("proj") for n in wrapper.student.state_dict())


def test_distill_a_narrow_student_saves_no_projection_and_exports(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    from safetensors import safe_open

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_factory("bert", "seq", 2), teacher)
    (teacher / "1_Pooling").mkdir()  # as a classifier fine-tuned from a sentence-transformers model has
    (teacher / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 32}')
    out = tmp_path / "s"
    loop = ["--max-steps", "4", "--eval-every", "4", "--save-every", "4"]
    args = ["distill", "--teacher", str(teacher), "--student-layers", "1", *NARROW, "--hidden", "1"]
    result = cli([*args, "--attention", "1", *FAST, *loop, "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    shape = {
        k: config[k] for k in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")
    }
    assert shape == {
        "hidden_size": 16,
        "num_attention_heads": 2,
        "intermediate_size": 20,
        "num_hidden_layers": 1,
    }
    teacher_config = json.loads((teacher / "config.json").read_text())
    same = ("vocab_size", "max_position_embeddings", "architectures", "id2label", "pad_token_id")
    assert {k: config.get(k) for k in same} == {k: teacher_config.get(k) for k in same}
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert names and not [n for n in names if "proj" in n]  # the projections were trained, not saved
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["student"] == {"layers": 1, "hidden": 16, "heads": [2], "ffn": [20], "parameters": 4742}
    assert json.loads((out / "1_Pooling" / "config.json").read_text()) == {"word_embedding_dimension": 16}
    exported = cli(["export", str(out), "--task", "sequence-classification", "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output


def test_narrow_student_bad_input(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    teacher = str(tiny_factory("bert", "seq", 2))
    result = cli(
        ["distill", "--teacher", teacher, "--student-layers", "1", "--student-hidden", "30", "-o", out]
    )
    assert result.exit_code == 3 and "not divisible" in result.output
    result = cli(["distill", "--teacher", teacher, "--student", teacher, *NARROW, "-o", out])
    assert result.exit_code == 3 and "--student DIR" in result.output
    result = cli(
        ["distill", "--teacher", str(tiny_factory("bert")), "--student-layers", "1", *NARROW, "-o", out]
    )
    assert result.exit_code == 3 and "embedding teacher" in result.output
    result = cli(["distill", "--teacher", teacher, "--student-layers", "1", "--prune-heads", "0.5"])
    assert result.exit_code == 2  # no -o: typer's usage error, before anything
    args = ["distill", "--teacher", teacher, "--student-layers", "1", "--prune-heads", "0.9", *FAST]
    result = cli([*args, "--max-steps", "2", "-o", out])
    assert result.exit_code == 3 and "would remove all 4 heads" in result.output
    assert not Path(out).exists()


def test_pruner_accumulates_taylor_importance_of_every_step_then_prunes_the_least(
    tiny_factory: Callable[..., Path],
) -> None:
    model, batch = _teacher(tiny_factory)
    model.train()
    labels = torch.tensor([0, 1] * 8)
    pruner = pruning.Pruner(model, heads=0.5, ffn=0.5, at=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    heads, ffn = torch.zeros(2, 4), torch.zeros(2, 37)
    for _ in range(3):  # three training steps; the hand-computed sum of |grad x w| over them
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        for i, block in enumerate(model.bert.encoder.layer):
            attn = block.attention
            for h in range(4):
                rows = slice(8 * h, 8 * h + 8)
                for w in (attn.self.query.weight, attn.self.key.weight, attn.self.value.weight):
                    heads[i, h] += float((w.grad[rows] * w[rows]).abs().sum().detach())
                out = attn.output.dense.weight
                heads[i, h] += float((out.grad[:, rows] * out[:, rows]).abs().sum().detach())
            up, down = block.intermediate.dense.weight, block.output.dense.weight
            ffn[i] += ((up.grad * up).abs().sum(1) + (down.grad * down).abs().sum(0)).detach()
        pruner.after_backward()
        optimizer.step()
    assert torch.allclose(torch.stack(pruner.head_scores), heads, rtol=1e-4)
    assert torch.allclose(torch.stack(pruner.ffn_scores), ffn, rtol=1e-4)
    old_up = [b.intermediate.dense.weight.detach().clone() for b in model.bert.encoder.layer]
    assert pruner.after_step(3, 4) is False  # the one event is at step 4 (at=1.0)
    assert pruner.after_step(4, 4) is True and pruner.after_step(4, 4) is False
    for i, block in enumerate(model.bert.encoder.layer):
        lowest = sorted(heads[i].argsort()[:2].tolist())
        assert sorted(block.attention.pruned_heads) == lowest
        kept = ffn[i].argsort(descending=True)[:19].sort().values  # 37 - round(18.5) = 19 neurons stay
        assert torch.equal(block.intermediate.dense.weight, old_up[i][kept])
        assert pruner.head_scores[i].numel() == 2 and pruner.ffn_scores[i].numel() == 19
    event = pruner.report()["events"][0]
    assert event["step"] == 4 and event["heads"] == [2, 2] and event["ffn"] == [19, 19]
    assert {int(k): v for k, v in event["removed_heads"].items()} == {
        i: sorted(heads[i].argsort()[:2].tolist()) for i in range(2)
    }


def test_prune_schedule_is_cubic_up_to_prune_at(tiny_factory: Callable[..., Path]) -> None:
    model, _ = _teacher(tiny_factory)
    schedule = pruning.Pruner(model, 0.5, 0.5, at=0.6, events=3).schedule(100)
    assert [step for step, _ in schedule] == [20, 40, 60]
    assert [round(share, 4) for _, share in schedule] == [0.7037, 0.963, 1.0]


def _run(teacher: Path, work: Path, **extra: Any) -> dict[str, Any]:
    """distill into `work` in this process: a 1-layer narrow student, heads and FFN halved at step 4."""
    from edgeslim.steps import distill

    cfg = distill.Config(
        student_layers=1,
        student_hidden=16,
        student_heads=2,
        student_ffn=20,
        prune_heads=0.5,
        prune_ffn=0.5,
        prune_at=0.5,
        losses=distill.Weights(hidden=1.0),
        train_size=64,
        eval_size=32,
        batch_size=16,
        max_length=16,
        max_steps=8,
        eval_every=4,
        save_every=2,
        **extra,
    )
    work.mkdir(exist_ok=True)  # a second run into the same folder resumes from its checkpoint
    return distill.run(str(teacher), cfg, work)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tiny_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of the prune-while-distilling run, not interrupted."""
    work = tmp_path_factory.mktemp("whole") / "s"
    result = _run(tiny_factory("bert", "seq", 2), work)
    assert result["student"] == {"layers": 1, "hidden": 16, "heads": [1], "ffn": [10], "parameters": 3876}
    assert [e["step"] for e in result["prune_events"]] == [4]
    return work


@pytest.mark.parametrize("kill_at", [6, 2], ids=["after-prune", "before-prune"])
def test_resume_across_the_prune_point_gives_the_uninterrupted_result(
    tiny_factory: Callable[..., Path],
    uninterrupted: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kill_at: int,
) -> None:
    from safetensors.torch import load_file

    teacher = tiny_factory("bert", "seq", 2)

    def kill(pid: int, signal: int) -> None:  # the fault hook's SIGKILL, as an exception
        raise Killed

    monkeypatch.setenv("EDGESLIM_FAULT_KILL_AT_STEP", str(kill_at))
    monkeypatch.setattr(os, "kill", kill)
    work = tmp_path / "again"
    with pytest.raises(Killed):
        _run(teacher, work)
    up_name = "student.bert.encoder.layer.0.intermediate.dense.weight"
    at_kill = load_file(work / "checkpoint" / "model.safetensors")[up_name]
    assert at_kill.shape == ((10, 16) if kill_at > 4 else (20, 16))  # the checkpoint holds the pruned shape
    monkeypatch.delenv("EDGESLIM_FAULT_KILL_AT_STEP")
    _run(teacher, work)  # the same run again: resumes from the checkpoint
    a, b = (json.loads((d / "edgeslim-train.json").read_text()) for d in (uninterrupted, work))
    assert b["student"] == a["student"] and b["pruning"] == a["pruning"]
    assert b["losses"][kill_at:] == pytest.approx(a["losses"][kill_at:], abs=1e-6)
    assert a["best"]["step"] >= 4  # the output is the pruned model: the best before pruning is forgotten
    final = [load_file(d / "model.safetensors") for d in (uninterrupted, work)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.allclose(final[0][k], final[1][k], atol=1e-6) for k in final[0])
    if kill_at > 4:  # the pruned layers went on training (the optimizer was rebuilt for them)
        assert not torch.allclose(final[1][up_name.removeprefix("student.")], at_kill)
    removed = a["pruning"]["events"][0]["removed_heads"]
    assert json.loads((work / "config.json").read_text())["pruned_heads"] == removed
