"""The hostile-input catalogue: one row per hostile input (how it is built, the command, the
exit code, a fragment of the message), each checked for a one-line error, no traceback, and
nothing written beside the output. Inputs are built under tmp/in; the output is tmp/o."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import cli, leftovers


@dataclass(frozen=True)
class Env:
    model: Path  # a tiny BERT sequence classifier (HF directory)
    art: Path  # its exported artifact
    emb: Path  # an exported tiny embedding model (feature-extraction)


@pytest.fixture(scope="module")
def env(tiny_factory: Callable[..., Path], cls_artifact: Path, bert_fp32: Path) -> Env:
    return Env(tiny_factory("bert", "seq", 2), cls_artifact, bert_fp32)


Build = Callable[[Path, Env], None]


def write(name: str, content: str | bytes) -> Build:
    """Build one input file `name` with `content`."""

    def build(inp: Path, env: Env) -> None:
        path = inp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return build


def both(*builds: Build) -> Build:
    def build(inp: Path, env: Env) -> None:
        for step in builds:
            step(inp, env)

    return build


def model_copy(edit: Callable[[Path], None]) -> Build:
    """Copy the tiny model to in/m and apply `edit` to that directory."""

    def build(inp: Path, env: Env) -> None:
        shutil.copytree(env.model, inp / "m")
        edit(inp / "m")

    return build


def artifact_copy(edit: Callable[[Path], None]) -> Build:
    """Copy the exported artifact to in/art and apply `edit` to it."""

    def build(inp: Path, env: Env) -> None:
        shutil.copytree(env.art, inp / "art")
        edit(inp / "art")

    return build


def config_edit(**changes: object) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, **changes}))

    return edit


def replace_file(name: str, content: bytes) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        (directory / name).write_bytes(content)

    return edit


def truncate(name: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])

    return edit


def safetensors_bytes(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def bigger_tokenizer(directory: Path) -> None:
    """20 tokens past the 95-row embedding table, as with another model's tokenizer."""
    tok = json.loads((directory / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    for i in range(20):
        vocab[f"extra{i}"] = len(vocab)
    (directory / "tokenizer.json").write_text(json.dumps(tok))


def recipe(body: str) -> Build:
    """in/r.yaml: a recipe on the tiny model with `body` (placeholders: {model}, {out})."""

    def build(inp: Path, env: Env) -> None:
        text = body.format(model=env.model, out=inp.parent / "o")
        (inp / "r.yaml").write_text(text)

    return build


def external_data(location: str, outside: bool = True) -> Callable[[Path], None]:
    """Store the graph's weights as external data at `location` (relative to the model)."""

    def edit(directory: Path) -> None:
        import onnx

        model = onnx.load(str(directory / "model.onnx"))
        onnx.save(model, str(directory / "model.onnx"), save_as_external_data=True, location="w.bin")
        data = (directory / "w.bin").read_bytes()
        (directory / "w.bin").unlink()
        if location != "missing":
            (directory / location).write_bytes(data)
        if location == "missing" or location.startswith(".."):
            model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
            for tensor in model.graph.initializer:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = location if location != "missing" else "model.onnx_data"
            onnx.save(model, str(directory / "model.onnx"))

    return edit


def symlink_out(directory: Path) -> None:
    """A folder inside the artifact that is a link to a folder outside it."""
    outside = directory.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the artifact's")
    (directory / "extra").symlink_to(outside)


def budgets(text: str) -> Build:
    return write("b.yaml", text)


GATE = ["gate", "{in}/art", "--budgets", "{in}/b.yaml"]


RECIPE = "name: t\nmodel: {model}\noutput: {out}\n"
EXPORT = "steps:\n  - type: export\n"
NO_BUILD: Build = lambda inp, env: None  # noqa: E731
NO_EDIT: Callable[[Path], None] = lambda directory: None  # noqa: E731
TSV_OK = "sentence\tlabel\nw1 w2\t0\nw3 w4\t1\n"
HUGE = "sentence\tlabel\n" + "w1 " * 400_000 + "\t0\n"
QUOTED = 'sentence,label\n"w1, w2",0\n"w3\nw4 ""w5""",1\nw6,0\n'
EVAL = ["eval", "{art}", "--data"]
QUANT = ["quantize", "{art}", "-o", "{out}"]
EXPORT_M = ["export", "{in}/m", "--task", "sequence-classification", "-o", "{out}"]
FINETUNE = ["finetune", "{model}", "-o", "{out}", "--max-steps", "1"]
SAFETENSORS = "model.safetensors"
STEPS_ON_M = [  # steps that read in/m's config.json themselves
    ("prune", ["prune", "{in}/m", "-o", "{out}", "--heads", "0.5"]),
    ("simplify", ["simplify", "{in}/m", "-o", "{out}", "--activation", "relu"]),
    ("distill-teacher", ["distill", "--teacher", "{in}/m", "--student-layers", "1", "-o", "{out}"]),
    ("distill-student", ["distill", "--teacher", "{model}", "--student", "{in}/m", "-o", "{out}"]),
]
CONFIG_BAD = [("list", b"[1, 2]", "JSON list"), ("not-utf8", b'{"a": "\xff"}', "not UTF-8")]

# (id, build, args, exit code, message fragment)
ROWS: list[tuple[str, Build, list[str], int, str]] = [
    # --- data files -------------------------------------------------------------------------
    (
        "data-non-utf8",
        write("d.tsv", b"sentence\tlabel\ncaf\xe9\t0\n"),
        [*EVAL, "{in}/d.tsv"],
        3,
        "not UTF-8",
    ),
    (
        "calib-non-utf8",
        write("d.txt", b"\xff\xfe bad\n"),
        [*QUANT, "--mode", "static", "--calib", "{in}/d.txt"],
        3,
        "not UTF-8",
    ),
    ("fidelity-empty", write("d.tsv", ""), [*QUANT, "--fidelity-data", "{in}/d.tsv"], 3, "no examples"),
    ("data-header-only", write("d.csv", "sentence,label\n"), [*EVAL, "{in}/d.csv"], 3, "no examples"),
    (
        "data-blank-lines-only",
        write("d.jsonl", "\n\n  \n"),
        [*QUANT, "--fidelity-data", "{in}/d.jsonl"],
        3,
        "no examples",
    ),
    (
        "csv-byte-order-mark",
        write("d.csv", "\ufeffsentence,label\nw1 w2,0\nw3,1\n"),
        [*EVAL, "{in}/d.csv"],
        0,
        "(2",
    ),
    ("csv-quoted-commas-newlines", write("d.csv", QUOTED), [*EVAL, "{in}/d.csv"], 0, "(3 examples"),
    (
        "jsonl-missing-text-key",
        write("d.jsonl", '{"text": "w1", "label": 0}\n{"label": 1}\n'),
        [*EVAL, "{in}/d.jsonl"],
        3,
        "row 2 has no 'text'",
    ),
    (
        "jsonl-null-label",
        write("d.jsonl", '{"text": "w1", "label": 0}\n{"text": "w2", "label": null}\n'),
        [*EVAL, "{in}/d.jsonl"],
        3,
        "row 2 has no 'label'",
    ),
    ("jsonl-row-is-list", write("d.jsonl", '["w1", 0]\n'), [*EVAL, "{in}/d.jsonl"], 3, "JSON list"),
    ("jsonl-invalid", write("d.jsonl", '{"text": "w1",\n'), [*EVAL, "{in}/d.jsonl"], 3, "invalid JSON"),
    ("tsv-huge-line", write("d.tsv", HUGE), [*QUANT, "--fidelity-data", "{in}/d.tsv"], 3, "limit 1,000,000"),
    ("txt-huge-line", write("d.txt", "w1 " * 400_000), [*QUANT, "--fidelity-data", "{in}/d.txt"], 3, "limit"),
    ("csv-short-row", write("d.csv", "sentence,label\nw1,0\nw2\n"), [*EVAL, "{in}/d.csv"], 3, "fewer fields"),
    ("data-unsupported-type", write("d.xlsx", "x"), [*EVAL, "{in}/d.xlsx"], 3, "unsupported file type"),
    ("data-missing", NO_BUILD, [*EVAL, "{in}/nope.tsv"], 3, "not found"),
    ("data-is-a-directory", NO_BUILD, [*EVAL, "{in}"], 3, "not found"),
    ("data-no-label-column", write("d.tsv", "sentence\nw1\n"), [*EVAL, "{in}/d.tsv"], 3, "no label column"),
    (
        "eval-unseen-label",
        write("d.tsv", "sentence\tlabel\nw1\t0\nw2\tpositive\n"),
        [*EVAL, "{in}/d.tsv"],
        3,
        "not known to the model",
    ),
    (
        "train-dev-unseen-label",
        both(write("t.tsv", TSV_OK * 3), write("e.tsv", "sentence\tlabel\nw1\t7\n")),
        [*FINETUNE, "--data", "{in}/t.tsv", "--eval", "{in}/e.tsv"],
        3,
        "do not occur in the training data",
    ),
    (
        "regression-non-numeric-score",
        write("t.tsv", "sentence\tlabel\nw1\t0.5\nw2\thigh\nw3\t0.1\n"),
        [*FINETUNE, "--task", "regression", "--data", "{in}/t.tsv", "--eval", "{in}/t.tsv"],
        3,
        "score 'high' is non-numeric",
    ),
    (
        "regression-nan-score",
        write("t.tsv", "sentence\tlabel\nw1\t0.5\nw2\tnan\n"),
        [*FINETUNE, "--task", "regression", "--data", "{in}/t.tsv", "--eval", "{in}/t.tsv"],
        3,
        "not a finite number",
    ),
    (
        "similarity-non-numeric-score",
        write("p.tsv", "sentence1\tsentence2\tscore\nw1\tw2\t0.5\nw3\tw4\tn/a\n"),
        ["eval", "{emb}", "--data", "{in}/p.tsv", "--pair-column", "sentence2", "--label-column", "score"],
        3,
        "row 2: score 'n/a' is non-numeric",
    ),
    (
        "train-non-utf8",
        write("t.tsv", b"sentence\tlabel\n\xc3\x28\t0\n"),
        [*FINETUNE, "--data", "{in}/t.tsv"],
        3,
        "UTF-8",
    ),
    # --- model directories (config.json, safetensors, tokenizer) -----------------------------
    ("config-json-list", model_copy(replace_file("config.json", b"[1, 2]")), EXPORT_M, 3, "JSON list"),
    ("config-not-utf8", model_copy(replace_file("config.json", b'{"a": "\xff"}')), EXPORT_M, 3, "not UTF-8"),
    (
        "config-invalid-json",
        model_copy(replace_file("config.json", b'{"model_type": ')),
        EXPORT_M,
        3,
        "not valid JSON",
    ),
    (
        "config-hidden-size-string",
        model_copy(config_edit(hidden_size="32")),
        EXPORT_M,
        3,
        "hidden_size is '32'",
    ),
    (
        "config-heads-do-not-divide",
        model_copy(config_edit(num_attention_heads=5)),
        EXPORT_M,
        3,
        "not divisible",
    ),
    ("config-negative-vocab", model_copy(config_edit(vocab_size=-1)), EXPORT_M, 3, "vocab_size"),
    ("config-float-layers", model_copy(config_edit(num_hidden_layers=2.5)), EXPORT_M, 3, "num_hidden_layers"),
    ("config-model-type-list", model_copy(config_edit(model_type=["bert"])), EXPORT_M, 3, "not supported"),
    ("config-pad-past-vocab", model_copy(config_edit(pad_token_id=500)), EXPORT_M, 3, "pad_token_id"),
    ("safetensors-truncated", model_copy(truncate(SAFETENSORS)), EXPORT_M, 3, "truncated"),
    ("safetensors-empty", model_copy(replace_file(SAFETENSORS, b"")), EXPORT_M, 3, "truncated"),
    (
        "safetensors-header-list",
        model_copy(replace_file(SAFETENSORS, safetensors_bytes([1, 2]))),
        EXPORT_M,
        3,
        "header is a JSON list",
    ),
    (
        "safetensors-header-garbage",
        model_copy(replace_file(SAFETENSORS, struct.pack("<Q", 4) + b"\xff\xfe{[")),
        EXPORT_M,
        3,
        "bad header",
    ),
    (
        "safetensors-offsets-vs-shape",
        model_copy(
            replace_file(
                SAFETENSORS,
                safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"0" * 8),
            )
        ),
        EXPORT_M,
        3,
        "do not match its shape",
    ),
    (
        "tokenizer-larger-than-embeddings",
        model_copy(bigger_tokenizer),
        EXPORT_M,
        3,
        "embedding table has 95 rows",
    ),
    ("tokenizer-json-list", model_copy(replace_file("tokenizer.json", b"[]")), EXPORT_M, 3, "JSON list"),
    (
        "tokenizer-not-a-tokenizer",
        model_copy(replace_file("tokenizer.json", b'{"a": 1}')),
        EXPORT_M,
        3,
        "usable tokenizer",
    ),
    (
        "artifact-tokenizer-larger-than-embeddings",
        both(artifact_copy(bigger_tokenizer), write("d.tsv", TSV_OK)),
        ["eval", "{in}/art", "--data", "{in}/d.tsv"],
        3,
        "embedding table",
    ),
    ("model-missing", NO_BUILD, ["export", "{in}/nope", "-o", "{out}"], 3, "not found"),
    # config.json read by the training steps (prune, simplify, distill teacher and student)
    *[
        (f"{name}-config-{kind}", model_copy(replace_file("config.json", content)), args, 3, fragment)
        for name, args in STEPS_ON_M
        for kind, content, fragment in CONFIG_BAD
    ],
    # --- recipes ----------------------------------------------------------------------------
    (
        "recipe-duplicate-key",
        recipe(RECIPE + "output: {out}2\n" + EXPORT),
        ["run", "{in}/r.yaml"],
        3,
        "appears twice",
    ),
    (
        "recipe-duplicate-step-key",
        recipe(RECIPE + "steps:\n  - {{type: export, opset: 17, opset: 18}}\n"),
        ["run", "{in}/r.yaml"],
        3,
        "'opset' appears twice",
    ),
    (
        "recipe-python-tag",
        recipe("name: !!python/object/apply:os.system [echo hi]\nmodel: {model}\noutput: {out}\n" + EXPORT),
        ["run", "{in}/r.yaml"],
        3,
        "not allowed",
    ),
    (
        "recipe-custom-tag",
        recipe(RECIPE.replace("name: t", "name: !include x") + EXPORT),
        ["run", "{in}/r.yaml"],
        3,
        "'!include'",
    ),
    ("recipe-non-utf8", write("r.yaml", b"name: caf\xe9\n"), ["run", "{in}/r.yaml"], 3, "not UTF-8"),
    ("recipe-not-yaml", write("r.yaml", "name: [unclosed\n"), ["run", "{in}/r.yaml"], 3, "not valid YAML"),
    ("recipe-a-list", write("r.yaml", "- type: export\n"), ["run", "{in}/r.yaml"], 3, "must be a mapping"),
    (
        "recipe-unknown-key",
        recipe(RECIPE.replace("output", "ouput") + EXPORT),
        ["run", "{in}/r.yaml"],
        3,
        "'output'",
    ),
    (
        "recipe-unknown-step-key",
        recipe(RECIPE + "steps:\n  - type: export\n    opst: 17\n"),
        ["run", "{in}/r.yaml"],
        3,
        "did you mean 'opset'",
    ),
    (
        "recipe-unknown-step-type",
        recipe(RECIPE + "steps:\n  - type: export\n  - type: quantise\n"),
        ["run", "{in}/r.yaml"],
        3,
        "did you mean 'quantize'",
    ),
    ("recipe-no-steps", recipe(RECIPE + "steps: []\n"), ["run", "{in}/r.yaml"], 3, "steps"),
    (
        "recipe-reference-not-a-number",
        recipe(RECIPE + "steps:\n  - type: finetune\n  - type: prune\n    recover_with: '@x'\n"),
        ["run", "{in}/r.yaml"],
        3,
        "not a step reference",
    ),
    (
        "recipe-reference-to-later-step",
        recipe(RECIPE + "steps:\n  - type: finetune\n  - type: prune\n    recover_with: '@2'\n"),
        ["run", "{in}/r.yaml"],
        3,
        "earlier step",
    ),
    (
        "recipe-reference-past-the-end",
        recipe(RECIPE + "steps:\n  - type: finetune\n  - type: prune\n    recover_with: '@9'\n"),
        ["run", "{in}/r.yaml"],
        3,
        "recover_with @9",
    ),
    # --- quantize options -------------------------------------------------------------------
    ("exclude-op-typo", NO_BUILD, [*QUANT, "--exclude-op", "Matmul"], 3, "did you mean 'MatMul'"),
    ("exclude-unknown-node", NO_BUILD, [*QUANT, "--exclude", "no_such_node"], 3, "no node 'no_such_node'"),
    (
        "exclude-op-weight-only-typo",
        NO_BUILD,
        [*QUANT, "--mode", "weight-only", "--exclude-op", "Gemn"],
        3,
        "'Gemm'",
    ),
    ("max-drop-without-eval", NO_BUILD, [*QUANT, "--max-drop", "0.01"], 3, "--eval"),
    (
        "max-drop-one-row",
        write("e.tsv", "sentence\tlabel\nw1\t0\n"),
        [*QUANT, "--max-drop", "0.01", "--eval", "{in}/e.tsv"],
        3,
        "at least 2",
    ),
    # --- artifacts and providers (already handled) --------------------------------------------
    (
        "onnx-corrupt",
        artifact_copy(replace_file("model.onnx", b"\x08\x07garbage" * 10)),
        ["optimize", "{in}/art", "-o", "{out}"],
        3,
        "",
    ),
    (
        "artifact-config-json-list",
        both(artifact_copy(replace_file("config.json", b"[]")), write("d.tsv", TSV_OK)),
        ["eval", "{in}/art", "--data", "{in}/d.tsv"],
        3,
        "JSON list",
    ),
    (
        "artifact-config-heads-string",
        artifact_copy(config_edit(num_attention_heads="4")),
        ["optimize", "{in}/art", "-o", "{out}"],
        3,
        "num_attention_heads is '4'",
    ),
    (
        "reference-npz-corrupt",
        artifact_copy(replace_file("reference.npz", b"PK\x03\x04 not a zip")),
        ["optimize", "{in}/art", "-o", "{out}"],
        3,
        "not a valid reference file",
    ),
    ("not-an-artifact", NO_BUILD, ["optimize", "{in}", "-o", "{out}"], 3, "edgeslim.json"),
    ("absent-provider", NO_BUILD, ["bench", "{art}", "--ep", "cuda"], 7, ""),
    # --- verify, gate, bench, inspect: artifacts that lie about themselves --------------------
    (
        "external-data-outside",
        artifact_copy(external_data("../outside.bin")),
        ["verify", "{in}/art"],
        3,
        "outside",
    ),
    (
        "gate-size-only-missing-data",
        both(artifact_copy(external_data("missing")), budgets("max_size_mb: 100\n")),
        GATE,
        3,
        "model.onnx_data",
    ),
    (
        "inspect-missing-data",
        artifact_copy(external_data("missing")),
        ["inspect", "{in}/art"],
        3,
        "model.onnx_data",
    ),
    ("symlink-out-verify", artifact_copy(symlink_out), ["verify", "{in}/art"], 3, "outside"),
    (
        "symlink-out-copied",
        artifact_copy(symlink_out),
        ["optimize", "{in}/art", "-o", "{out}"],
        3,
        "symbolic link",
    ),
    ("onnx-truncated-verify", artifact_copy(truncate("model.onnx")), ["verify", "{in}/art"], 3, ""),
    (
        "manifest-a-list",
        artifact_copy(replace_file("edgeslim.json", b"[]")),
        ["inspect", "{in}/art"],
        3,
        "JSON list",
    ),
    ("budgets-empty", both(artifact_copy(NO_EDIT), budgets("")), GATE, 3, "no budget"),
    ("budgets-comments-only", both(artifact_copy(NO_EDIT), budgets("# todo\n")), GATE, 3, "no budget"),
    (
        "budgets-wrong-units",
        both(artifact_copy(NO_EDIT), budgets("max_size_mb: 12 MB\n")),
        GATE,
        3,
        "max_size_mb",
    ),
    (
        "budgets-bytes-as-mb",
        both(artifact_copy(NO_EDIT), budgets("max_size_mb: 25000000\n")),
        GATE,
        3,
        "max_size_mb",
    ),
    ("bench-threads-0", NO_BUILD, ["bench", "{art}", "--threads", "0"], 3, "threads"),
    ("bench-batch-0", NO_BUILD, ["bench", "{art}", "--batch", "0"], 3, "batch"),
    ("bench-seq-0", NO_BUILD, ["bench", "{art}", "--seq", "0"], 3, "seq"),
    (
        "ep-library-unknown-name",
        NO_BUILD,
        ["bench", "{art}", "--ep-library", "nosuchep=/tmp/lib.so"],
        3,
        "nosuchep",
    ),
    (
        "force-on-a-foreign-folder",
        write("keep.txt", "mine"),
        ["optimize", "{art}", "-o", "{in}", "--force"],
        4,
        "not written by edgeslim",
    ),
]


@pytest.mark.parametrize(("build", "args", "code", "fragment"), [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_hostile_input(
    env: Env, tmp_path: Path, build: Build, args: list[str], code: int, fragment: str
) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    build(inp, env)
    out = tmp_path / "o"
    places = {
        "in": str(inp),
        "out": str(out),
        "art": str(env.art),
        "model": str(env.model),
        "emb": str(env.emb),
    }
    result = cli([a.format(**places) for a in args])
    text = result.output
    assert result.exit_code == code, text
    assert fragment in text, text
    assert "Traceback" not in text and "internal error" not in text, text
    if code:
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and text.rstrip().endswith(errors[0]), text  # one line, last
    assert not out.exists(), "output written for a hostile input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"], list(tmp_path.iterdir())
    assert leftovers(tmp_path) == [] and leftovers(env.art.parent) == []


def test_catalogue_size() -> None:
    assert len(ROWS) >= 40 and len({r[0] for r in ROWS}) == len(ROWS)


PAIRS = "sentence1\tsentence2\tlabel\n" + "".join(f"w{i} w{i + 1}\tw{i + 2}\t{i % 2}\n" for i in range(30))


def test_finetune_user_file_without_eval_holds_out(env: Env, tmp_path: Path) -> None:
    """Issue item 6: the default dev set used to be SST-2 read with the user's columns."""
    (tmp_path / "pairs.tsv").write_text(PAIRS)
    out = tmp_path / "o"
    args = ["--data", str(tmp_path / "pairs.tsv"), "--text-column", "sentence1", "--pair-column", "sentence2"]
    result = cli(
        ["finetune", str(env.model), "-o", str(out), *args, "--label-column", "label", "--max-steps", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "held-out 10%" in result.output, result.output
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["eval_data"] == "pairs.tsv (held-out 10%, seed 0, 3 rows)"
    assert record["config"]["eval"] is None


def test_distill_user_file_without_eval_holds_out(env: Env, tmp_path: Path) -> None:
    (tmp_path / "d.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"w{i} w{i + 3}\t{i % 2}\n" for i in range(20))
    )
    out = tmp_path / "o"
    result = cli(
        ["distill", "--teacher", str(env.model), "--student-layers", "1", "-o", str(out)]
        + ["--data", str(tmp_path / "d.tsv"), "--max-steps", "1"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["eval_data"] == "d.tsv (held-out 10%, seed 0, 2 rows)"


def test_hold_out_is_seeded_disjoint_and_never_empty() -> None:
    from edgeslim import data

    examples = data.Examples("f", [f"t{i}" for i in range(25)], labels=[str(i) for i in range(25)])
    train, dev = data.hold_out(examples)
    assert len(dev) == 2 and len(train) == 23  # 10% of 25, rounded
    assert set(train.texts).isdisjoint(dev.texts) and set(train.texts) | set(dev.texts) == set(examples.texts)
    assert [t.removeprefix("t") for t in dev.texts] == dev.labels  # rows kept whole
    assert data.hold_out(examples)[1].texts == dev.texts  # seeded
    assert data.hold_out(examples, seed=1)[1].texts != dev.texts
    small_train, small_dev = data.hold_out(data.Examples("f", ["a", "b", "c"], labels=["0", "1", "0"]))
    assert len(small_dev) == 1 and len(small_train) == 2
    with pytest.raises(data.InputError, match="too few"):
        data.hold_out(data.Examples("f", ["a"], labels=["0"]))


@pytest.mark.parametrize(
    ("spec", "dev"), [("sst2:train", "sst2:dev"), ("stsb:train", "stsb:dev"), ("trec:train", "trec:test")]
)
def test_builtin_training_set_uses_its_dev_split(spec: str, dev: str) -> None:
    from edgeslim import data

    train, chosen, how = data.train_and_dev(spec, None, (None, None, None), None, (50, 20))
    assert how == dev and chosen.name == dev and len(chosen) == 20 and len(train) == 50
    assert data.DEV_SPLITS["conll2003:train"] == "conll2003:valid"


def test_max_drop_split_is_disjoint_and_seeded() -> None:
    from edgeslim import quant_search

    select, held = quant_search.split_rows(11)
    assert len(select) == 6 and len(held) == 5
    assert set(select).isdisjoint(held) and set(select) | set(held) == set(range(11))
    assert quant_search.split_rows(11) == (select, held)
    assert quant_search.split_rows(11, seed=3) != (select, held)


def test_max_drop_is_reported_on_the_held_out_half(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search judges the selection half; the drop and the verdict come from the other half."""
    import numpy as np

    from edgeslim import evaluation, quant_search

    def accuracy(model: Path, batches: list, labels: np.ndarray) -> float:
        fp32 = model.parent.name == "src"
        held = len(labels) == 3  # the held-out half below
        return 1.0 if fp32 else (0.9 if held else 0.99)

    monkeypatch.setattr(evaluation, "accuracy", accuracy)
    split = quant_search.EvalSplit([{}], np.zeros(4), [{}], np.zeros(3))
    cfg = type("Cfg", (), {"max_drop": 0.02, "eval": "e.tsv", "max_fp32_nodes": None, "mode": "dynamic"})()
    (tmp_path / "src").mkdir()
    search = quant_search.meet_drop(tmp_path / "src", tmp_path / "q", cfg, lambda *a: None, tmp_path, split)
    assert search["selection"]["drop"] == pytest.approx(0.01) and search["rounds"] == [
        {"kept_fp32": 0, "accuracy": 0.99}
    ]
    assert search["drop"] == pytest.approx(0.1) and search["held_out"]["drop"] == search["drop"]
    assert not search["met"] and search["split"] == {"seed": 0, "selection": 4, "held_out": 3}


@pytest.mark.parametrize(
    ("mode", "flag"), [("dynamic", "--fidelity-data"), ("static", "--calib"), ("dynamic", "--eval")]
)
def test_quantize_reads_data_before_any_work(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, flag: str
) -> None:
    """A bad data file fails in seconds, before preprocessing or quantizing starts."""
    from edgeslim import quantization

    def too_early(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantization started before the data was validated")

    for name in ("preprocess", "dynamic", "static", "calibrate"):
        monkeypatch.setattr(quantization, name, too_early)
    (tmp_path / "bad.jsonl").write_text('{"text": "w1", "label": 0}\n{"label": 1}\n')
    extra = ["--max-drop", "0.1"] if flag == "--eval" else []
    out = tmp_path / "o"
    result = cli(
        ["quantize", str(env.art), "-o", str(out), "--mode", mode, flag, str(tmp_path / "bad.jsonl"), *extra]
    )
    assert result.exit_code == 3 and "row 2 has no 'text'" in result.output, result.output
    assert not out.exists() and leftovers(tmp_path) == []


def too_early(what: str) -> Callable[..., None]:
    def stub(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{what} started before the inputs were validated")

    return stub


BAD_JSONL = '{"text": "w1", "label": 0}\n{"label": 1}\n'
NO_TEXT = "row 2 has no 'text'"


def no_config_list(inp: Path, env: Env) -> Path:
    """A teacher whose config.json is a JSON list."""
    shutil.copytree(env.model, inp / "t")
    (inp / "t" / "config.json").write_bytes(b"[1, 2]")
    return inp / "t"


@pytest.mark.parametrize("step", ["prune", "simplify"])
@pytest.mark.parametrize(
    ("bad", "fragment"),
    [("--data", NO_TEXT), ("--eval", NO_TEXT), ("teacher", "JSON list")],
    ids=["bad-data", "bad-eval", "bad-teacher"],
)
def test_recovery_inputs_checked_before_any_work(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, bad: str, fragment: str
) -> None:
    """prune/simplify --recover-with: a bad teacher or recovery data fails before the model is
    loaded and changed (it used to surface inside recovery, after pruning and saving)."""
    from edgeslim import models
    from edgeslim.train import distill

    monkeypatch.setattr(models, "load", too_early("loading the model"))
    monkeypatch.setattr(distill, "recover", too_early("recovery"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.jsonl").write_text(BAD_JSONL)
    (tmp_path / "in" / "ok.tsv").write_text(TSV_OK * 2)
    teacher = no_config_list(tmp_path / "in", env) if bad == "teacher" else env.model
    data = {"--data": str(tmp_path / "in" / "ok.tsv"), "--eval": str(tmp_path / "in" / "ok.tsv")}
    if bad != "teacher":
        data[bad] = str(tmp_path / "in" / "bad.jsonl")
    change = ["--heads", "0.5"] if step == "prune" else ["--activation", "relu"]
    out = tmp_path / "o"
    args = [step, str(env.model), "-o", str(out), *change, "--recover-with", str(teacher)]
    result = cli([*args, *(x for item in data.items() for x in item)])
    assert result.exit_code == 3 and fragment in result.output, result.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_simplify_reads_trim_corpus_before_any_work(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--trim-vocab's corpus was read only after the change and its recovery had finished."""
    from edgeslim import models
    from edgeslim.train import distill

    monkeypatch.setattr(models, "load", too_early("loading the model"))
    monkeypatch.setattr(distill, "recover", too_early("recovery"))
    (tmp_path / "corpus.txt").write_bytes(b"w1 w2\ncaf\xe9\n")
    out = tmp_path / "o"
    result = cli(
        ["simplify", str(env.model), "-o", str(out), "--activation", "relu", "--recover-with", str(env.model)]
        + ["--trim-vocab", str(tmp_path / "corpus.txt")]
    )
    assert result.exit_code == 3 and "not UTF-8" in result.output, result.output
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("budget", "fragment"),
    [
        ("min_metric: {{data: '{bad}', metric: accuracy, value: 0.5}}", NO_TEXT),
        ("min_metric: {{data: '{ok}', metric: bleu, value: 0.5}}", "metric 'bleu'"),
        ("max_drop: {{reference: {art}, data: '{bad}', metric: accuracy, value: 0.1}}", NO_TEXT),
    ],
    ids=["min-metric-bad-data", "unknown-metric", "max-drop-bad-data"],
)
def test_gate_reads_metric_data_before_measuring(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str, fragment: str
) -> None:
    """min_metric/max_drop data and the metric name are checked before any latency is timed."""
    from edgeslim import bench

    monkeypatch.setattr(bench, "run_grid", too_early("a latency measurement"))
    (tmp_path / "bad.jsonl").write_text(BAD_JSONL)
    (tmp_path / "ok.tsv").write_text(TSV_OK)
    places = {"bad": tmp_path / "bad.jsonl", "ok": tmp_path / "ok.tsv", "art": env.art}
    (tmp_path / "b.yaml").write_text(
        "latency:\n  - {max_p50_ms: 1000, runs: 10}\n" + budget.format(**places) + "\n"
    )
    result = cli(["gate", str(env.art), "--budgets", str(tmp_path / "b.yaml")])
    assert result.exit_code == 3 and fragment in result.output, result.output
