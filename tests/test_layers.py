"""The package's layering, read statically from the source (every `import` and `from ... import`,
also those inside functions and under TYPE_CHECKING):

    runner    cli, __main__, pipeline, recipe (a recipe is the tagged union of the step configs)
    steps     edgeslim/steps/: one module per step type
    library   everything else (train/, compression, validation, data, models, ...)

No module imports a higher layer, and no import cycle exists among edgeslim's modules.
The step registry's importlib.import_module is the one import this cannot see (steps only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import edgeslim

PACKAGE = Path(edgeslim.__file__).parent
RUNNER = {"edgeslim.cli", "edgeslim.__main__", "edgeslim.pipeline", "edgeslim.recipe"}
LAYERS = ("library", "steps", "runner")


def _name(path: Path, root: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of `known` that one import statement loads (a package's __init__ counts)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        # `from a import b` loads a, and a.b when b is a submodule
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    else:
        return set()
    found = set()
    for name in names:
        while name and name not in known:  # `import a.b.c` of a non-module c: its package
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(root: Path = PACKAGE, package: str = "edgeslim") -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its source)."""
    files = {_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        edges = set().union(*(_targets(n, module, is_package, known) for n in ast.walk(tree)))
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def layer(module: str) -> int:
    """0 library, 1 steps, 2 runner."""
    if module in RUNNER:
        return 2
    return 1 if module == "edgeslim.steps" or module.startswith("edgeslim.steps.") else 0


def test_the_graph_sees_every_kind_of_import() -> None:
    """So that an empty result below means something: top-level, from-package, function-level
    and relative imports all give edges."""
    graph = import_graph()
    assert "edgeslim.steps" in graph["edgeslim.cli"]  # from edgeslim import steps (top level)
    assert "edgeslim.pipeline" in graph["edgeslim.cli"]  # inside `run`
    assert "edgeslim.errors" in graph["edgeslim.artifacts"]  # from edgeslim.errors import ...
    assert "edgeslim.train.loop" in graph["edgeslim.train.task"]
    assert {"edgeslim.steps.finetune", "edgeslim.train", "edgeslim.train.config"} <= set(graph)
    assert sum(len(edges) for edges in graph.values()) > 150


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (root / "sub" / "b.py").write_text("from .. import c\n")
    (root / "c.py").write_text("import os\nfrom . import a\n")
    graph = import_graph(root, "pkg")
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg", "pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (root / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(root, "pkg")) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} ({LAYERS[layer(module)]}) imports {target} ({LAYERS[layer(target)]})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_layer_rule_would_catch_a_library_module_importing_a_step() -> None:
    graph = {"edgeslim.gate": {"edgeslim.steps.evaluate"}, "edgeslim.steps.gate": {"edgeslim.gate"}}
    upward = [(m, t) for m, targets in graph.items() for t in targets if layer(t) > layer(m)]
    assert upward == [("edgeslim.gate", "edgeslim.steps.evaluate")]


# Calls that write results to stdout. Only the runner layer, ui.py, the registry's run_single /
# present, and the `command` functions of step modules (the CLI) may make them.
PRINTERS = {
    "print",
    "typer.echo",
    "typer.secho",
    "rich.print",
    "sys.stdout.write",
    "ui.summary",
    "ui.markdown",
    "ui.text",
    "ui.out.print",
}
MAY_PRINT = {"edgeslim.ui", "edgeslim.steps"} | RUNNER


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def printing_calls(root: Path = PACKAGE, package: str = "edgeslim") -> list[str]:
    """`module:line call` for each stdout write outside the places allowed to print."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _name(path, root, package)
        if module in MAY_PRINT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_step = module.startswith(f"{package}.steps.")
        commands = [
            n for n in ast.walk(tree) if is_step and isinstance(n, ast.FunctionDef) and n.name == "command"
        ]
        inside = {id(n) for c in commands for n in ast.walk(c)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func) in PRINTERS and id(node) not in inside:
                found.append(f"{module}:{node.lineno} {_dotted(node.func)}")
    return found


def test_steps_and_the_library_print_nothing() -> None:
    """Steps return their results (run -> summary; steps.present and the recipe runner print
    them); library modules report progress on stderr through ui.note only."""
    calls = printing_calls()
    assert not calls, "\n".join(calls)


def test_the_print_rule_would_catch_a_step_printing_its_table(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "steps").mkdir(parents=True)
    (root / "steps" / "gate.py").write_text(
        "def run(rows):\n    print(rows)\n    ui.summary('t', {})\n\ndef command(rows):\n    print(rows)\n"
    )
    (root / "report.py").write_text(
        "def write(x):\n    ui.out.print(x)\n\ndef command():\n    sys.stdout.write('x')\n"
    )
    assert printing_calls(root, "pkg") == [
        "pkg.report:2 ui.out.print",
        "pkg.report:5 sys.stdout.write",
        "pkg.steps.gate:2 print",
        "pkg.steps.gate:3 ui.summary",
    ]
