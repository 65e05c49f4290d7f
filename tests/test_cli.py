import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

from edgeslim.errors import EXIT_CODES


def test_help_imports_nothing_heavy() -> None:
    """`edgeslim --help` lists every step without importing one (nor pydantic); a step's own
    --help imports that step only; neither imports torch, transformers or onnxruntime."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgeslim.cli import app\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'onnx', 'optimum', 'pydantic', 'edgeslim.config')\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'quantize' in r.output and 'Quantize an artifact' in r.output, r.output\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.startswith('edgeslim.steps.')))\n"
        "r = CliRunner().invoke(app, ['export', '--help'])\n"
        "assert r.exit_code == 0 and '--opset' in r.output, r.output\n"
        "print(sorted(m for m in sys.modules if m in heavy[:5] or m.startswith('edgeslim.steps.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "['edgeslim.steps.export']"]


def test_the_group_help_reads_each_steps_docstring_from_its_source() -> None:
    import inspect

    from edgeslim import steps

    for name, module in steps.modules().items():
        assert steps.command_help(name) == inspect.cleandoc(module.command.__doc__ or ""), name
        assert steps.command_help(name), name


def test_transformers_is_imported_without_scikit_learn() -> None:
    """transformers' generation utilities would import sklearn (~1.5 s); models.import_transformers
    hides it while transformers loads and puts it back for whoever needs it later (seqeval)."""
    pytest.importorskip("sklearn")
    code = (
        "import sys\n"
        "from edgeslim import models\n"
        "transformers = models.import_transformers()\n"
        "from transformers import BertModel\n"
        "from transformers.utils import is_sklearn_available\n"
        "print('sklearn' in sys.modules, is_sklearn_available())\n"
        "import sklearn.metrics\n"
        "print('sklearn' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True"]


def test_doctor_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor reports the (injected) CPU facts and the warnings they call for."""
    from edgeslim import doctor

    for cpu, expect in (
        ({"machine": "x86_64", "flags": ["avx2", "fma"]}, {"VNNI", "bf16"}),
        ({"machine": "x86_64", "flags": ["avx2", "avx512_vnni", "avx512_bf16"]}, set()),
    ):
        monkeypatch.setattr(doctor, "cpu_info", lambda cpu=cpu: cpu)
        result = cli(["doctor", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert "CPUExecutionProvider" in report["execution_providers"]
        assert report["versions"]["onnxruntime"] and report["cpu"] == cpu
        named = {word for word in ("VNNI", "bf16") if any(word in w for w in report["warnings"])}
        assert named == expect


def test_doctor_warns_on_known_bad_combinations() -> None:
    from edgeslim.doctor import warnings_for

    found = warnings_for(
        {
            "onnxruntime": "1.32.0",
            "onnxruntime-gpu": "1.32.0",
            "optimum-onnx": "0.1.0",
            "transformers": "4.58.1",
        },
        {"machine": "x86_64", "flags": ["avx2"]},
        ["CPUExecutionProvider"],
    )
    text = " ".join(found)
    assert "onnxruntime-gpu" in text and "transformers" in text and "VNNI" in text and "onnx-ir" in text


def test_readme_exit_code_table_matches_code() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d) \| (.+?) \|$", readme, flags=re.M))
    assert {int(k) for k in rows} == set(EXIT_CODES)


def test_unknown_command_is_usage_error() -> None:
    assert cli(["frobnicate"]).exit_code == 2


def test_a_mistyped_command_is_suggested_from_every_command() -> None:
    """Step commands are built only when used, so the suggestion must come from the full list."""
    result = cli(["expor"])
    assert result.exit_code == 2 and "Did you mean 'export'" in result.output
    assert "Did you mean 'summary'" in cli(["summry"]).output


def test_no_arguments_prints_the_help() -> None:
    result = cli([])
    assert result.exit_code == 2 and "Usage: " in result.output and "Commands:" in result.output
    assert "quantize" in result.output
