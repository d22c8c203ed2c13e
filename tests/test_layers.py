"""The layer contract: each layer imports only the layers below it, and no module imports itself back.

The layers, lowest first, are the folders of `src/milvus_audit` (see docs/architecture.md).
Every import counts, including imports inside functions; only imports under
`if TYPE_CHECKING:` are exempt, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "milvus_audit"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "semconv", "exceptions"),
    ("config",),
    ("model",),
    ("runtime",),
    ("export",),
    ("integrity",),
    ("otel",),
    ("serverlog",),
    ("auditing",),
    ("shared",),
    ("detect",),
    ("respond",),
    ("siem",),
    ("review",),
    ("wiring",),
    ("instrumentation",),
    ("cli", "__main__", "__init__"),
)
LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit of `milvus_audit.x.y`: `x` (the package root itself is `__init__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The milvus_audit modules `module` imports at run time."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("milvus_audit"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("milvus_audit"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {module: imports_of(module, path, known) & known for module, path in found.items()}


def test_every_module_belongs_to_a_layer() -> None:
    assert {unit_of(module) for module in modules()} <= set(LAYER_OF)


def test_no_import_from_a_higher_layer() -> None:
    upward = [f"{module} imports {target}"
              for module, targets in graph().items() for target in sorted(targets)
              if LAYER_OF[unit_of(target)] > LAYER_OF[unit_of(module)]]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert cycles == []


@pytest.mark.parametrize("source", [
    "from milvus_audit.wiring import runtime_for\n",
    "def later():\n    import milvus_audit.respond.playbook\n",
])
def test_the_contract_catches_an_upward_import(tmp_path: Path, source: str) -> None:
    """The checker itself: a model module importing wiring, even lazily, is reported."""
    module = tmp_path / "probe.py"
    module.write_text(source)
    targets = imports_of("milvus_audit.model.probe", module, set(modules()))
    assert any(LAYER_OF[unit_of(t)] > LAYER_OF["model"] for t in targets)
