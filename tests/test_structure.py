"""How the package is built: no import cycles, and only the backends know their engines and formats."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgepipe"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    return {
        id(i) for g in guarded for stmt in g.body for i in ast.walk(stmt) if isinstance(i, (ast.Import, ast.ImportFrom))
    }


def _imports(path: Path, name: str, modules: dict[str, Path], typing: bool = True) -> set[str]:
    """Every edgepipe module ``path`` imports, at module level or inside functions (and, with ``typing``, under
    ``if TYPE_CHECKING:``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set() if typing else _typing_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from edgepipe.backends import litert" imports the module edgepipe.backends.litert
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph(typing: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules, typing) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_among_edgepipe_modules():
    graph = import_graph()
    assert len(graph) > 50 and graph["edgepipe.cli"]  # the graph really was built
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


#: the layers, lowest first. A module imports only from its own layer and the layers below it (imports under
#: ``if TYPE_CHECKING:`` name types for annotations and are not held to the order). A module belongs to the
#: layer of the longest entry its name starts with.
LAYERS: list[tuple[str, ...]] = [
    # what every layer may use: errors, registries, files, option fields, versions, records, small helpers
    (
        "edgepipe.errors",
        "edgepipe.defaults",
        "edgepipe.registry",
        "edgepipe.fileio",
        "edgepipe.options",
        "edgepipe.versions",
        "edgepipe.quiet",
        "edgepipe.threads",
        "edgepipe.progress",
        "edgepipe.significance",
        "edgepipe.evaluation",
        "edgepipe.calibration",
        "edgepipe.gpu",
        "edgepipe.profiles",
        "edgepipe.results",
        "edgepipe.export_index",
        "edgepipe.child",
    ),
    # networks and engines: the architecture registry, pixel transforms, the backends and the INT8 recipes their
    # exporters run (the Keras backend loads architectures, the exporters call the INT8 budget: one layer)
    ("edgepipe.architectures", "edgepipe.pixels", "edgepipe.backends", "edgepipe.quantization"),
    # what the stages use: data, training machinery, measurement, verification, the machine, reports
    (
        "edgepipe.data",
        "edgepipe.training",
        "edgepipe.harness",
        "edgepipe.verification",
        "edgepipe.device",
        "edgepipe.remote",
        "edgepipe.report",
    ),
    # the run configuration: validates names against the registries below and holds the backends' sections
    ("edgepipe.config",),
    ("edgepipe.pipeline",),  # the stages, their run directory and the runner
    ("edgepipe.standalone",),  # export and bench of files on their own, with the stages' machinery
    ("edgepipe.choose",),  # what each architecture costs on a device, and the search within budgets
    ("edgepipe.api",),
    ("edgepipe.cli", "edgepipe.__main__", "edgepipe"),  # the command line, and the package's lazy API
]


def layer_of(module: str) -> int:
    """The index in LAYERS of ``module`` (KeyError for a module in no layer)."""
    best = max(
        (
            (len(prefix), i)
            for i, layer in enumerate(LAYERS)
            for prefix in layer
            if module == prefix or module.startswith(prefix + ".")
        ),
        default=None,
    )
    if best is None:
        raise KeyError(module)
    return best[1]


def imports_against_the_layers(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} imports {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_the_layer_check_finds_an_import_against_the_order():
    assert imports_against_the_layers({"edgepipe.config": {"edgepipe.pipeline.runner"}}) == [
        "edgepipe.config imports edgepipe.pipeline.runner"
    ]
    assert (
        imports_against_the_layers({"edgepipe.pipeline.runner": {"edgepipe.config", "edgepipe.pipeline.stage"}}) == []
    )


def test_every_module_is_in_a_layer():
    unplaced = []
    for module in _modules():
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, "add these to LAYERS: " + ", ".join(unplaced)


def test_imports_point_down_the_layers():
    found = imports_against_the_layers(import_graph(typing=False))
    assert not found, "imports against the layers (see LAYERS): " + "; ".join(found)


def _engine_and_format_names() -> set[str]:
    from edgepipe.backends import containers, engines, formats

    names = set(formats().names()) | set(engines().names()) | set(containers().names())
    return names | {s for _, c in containers() for s in c.suffixes}


def _name_tests(path: Path, names: set[str]) -> list[str]:
    """Comparisons of a value with an engine/format/container name or suffix: ``x == "litert"``,
    ``x in ("onnx", ...)``, ``x.endswith(".tflite")``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        constants: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                constants += [operand] + (
                    list(operand.elts) if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else []
                )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
        ):
            constants += list(node.args)
        for c in constants:
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.lower() in names:
                found.append(f"{path.name}:{node.lineno} tests {c.value!r}")
    return found


def test_the_name_test_finder_finds_name_tests(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("if fmt == 'tflite-int8' or path.endswith('.onnx') or engine in ('litert', 'x'):\n    pass\n")
    assert len(_name_tests(sample, _engine_and_format_names())) == 3


@pytest.mark.parametrize("area", ["pipeline", "report", "cli.py", "api.py", "harness", "verification.py"])
def test_stages_reports_and_cli_test_no_format_or_engine_names(area):
    names = _engine_and_format_names()
    files = [PACKAGE / area] if area.endswith(".py") else sorted((PACKAGE / area).rglob("*.py"))
    found = [hit for path in files for hit in _name_tests(path, names)]
    assert not found, "only the backends may test their names: " + "; ".join(found)


@pytest.mark.parametrize("module", ["edgepipe.data", "edgepipe.config", "edgepipe.backends"])
def test_importing_a_lower_layer_loads_no_backend(module):
    """Backends are loaded when a registry is first asked, never as a side effect of an import."""
    import subprocess
    import sys

    code = (
        f"import sys, {module}\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('edgepipe.backends.') and m.count('.') == 2\n"
        "                and m.split('.')[2] in ('keras', 'litert', 'onnxruntime', 'openvino', 'tensorrt'))\n"
        "assert not loaded, loaded\n"
        "from edgepipe.backends import formats\n"
        "assert len(formats()) > 5 and 'edgepipe.backends.litert' in sys.modules  # loaded when first asked\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(PACKAGE.parent)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
