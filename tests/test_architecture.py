"""The package's import graph: no import ring may grow, and the task registry stays below the tasks.

Every `import` and `from ... import` counts, at module level or inside a function (a function-level
import is how the old 13-module ring between the tasks, their registry and the trainers formed);
only imports under `if TYPE_CHECKING:` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = "ewaste_vision"
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"

# Rings that exist today and are each inside one small package; none may grow, and no new one may
# appear. (The models package re-exports its registry, which the backbone modules register into;
# export/__init__ re-exports its runtime, which reads export metadata lazily.)
KNOWN_RINGS: list[set[str]] = [
    {"models", "models.backbones", "models.efficientnet_lite", "models.registry"},
    {"export", "export.runtime"},
    # build_classifier makes an IcamClassifier (a subclass of ImageClassifier) through a lazy import.
    {"models.classifier", "models.icam"},
]


def module_files() -> dict[str, Path]:
    """Dotted module name (without the package prefix, the package itself as '') -> file."""
    modules: dict[str, Path] = {}
    for path in (SOURCE_ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SOURCE_ROOT / PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = [PACKAGE, *module.split(".")] if module else [PACKAGE]
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # `from a import b` imports a, and a.b too when b is a module.
            names = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                short = name[len(PACKAGE) + 1 :]
                if short in known and short != module:
                    found.add(short)
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks (annotations only,
    never imported at run time, so they cannot close an import ring)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph() -> nx.DiGraph:
    """Directed graph: module -> each package module it imports."""
    files = module_files()
    graph = nx.DiGraph()
    for module, path in files.items():
        graph.add_node(module)
        for target in imported_modules(module, path, set(files)):
            graph.add_edge(module, target)
    return graph


def test_graph_sees_function_level_imports() -> None:
    # The walker must count imports inside functions, or it would miss the rings that matter.
    graph = import_graph()
    assert graph.has_edge("tasks.classify", "training.trainer")  # inside ClassifyTask.train_run
    assert graph.has_edge("tasks.classify", "tasks.registry")


def test_no_import_ring_grows() -> None:
    rings = [ring for ring in nx.strongly_connected_components(import_graph()) if len(ring) > 1]
    for ring in rings:
        assert any(ring <= known for known in KNOWN_RINGS), f"new or grown import ring: {sorted(ring)}"


def test_registry_imports_no_task() -> None:
    graph = import_graph()
    tasks = {module for module in graph if module.startswith("tasks.")} - {"tasks.registry"}
    assert tasks, "no task modules found"
    reached = nx.descendants(graph, "tasks.registry")
    assert not reached & tasks, f"tasks.registry reaches task modules: {sorted(reached & tasks)}"
    assert "tasks" not in reached, "tasks.registry imports the tasks package"


def test_every_task_module_is_listed_and_registers() -> None:
    from ewaste_vision.tasks import available_tasks, get_task
    from ewaste_vision.tasks.registry import TASK_MODULES

    listed = {name.rsplit(".", 1)[-1] for name in TASK_MODULES}
    helpers = {"registry", "losses"}
    on_disk = {path.stem for path in (SOURCE_ROOT / PACKAGE / "tasks").glob("*.py")} - helpers - {"__init__"}
    assert on_disk == listed, "a task module is missing from TASK_MODULES, or a listed one is gone"
    for name in available_tasks():
        assert get_task(name).name == name
