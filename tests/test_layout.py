"""The architecture, as the imports show it: no import cycles between modules, and every
package says in its docstring what it holds. Read from the source (ast), so a wrong
import fails here before it works by accident somewhere else."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("lswh_core", "ingress", "workers", "lswh")
# Which package may import which is tests/test_layering.py; here: cycles and each package's map.


def modules() -> dict[str, Path]:
    found = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Our modules `path` imports at module level, outside `if TYPE_CHECKING:` (a function-level
    import is a deliberate late binding, not a layer)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    known = modules()
    # `from workers.actions import jsonl` runs workers/actions/__init__.py first, but a module's
    # own enclosing packages are not a layer above it: only the named module counts.
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def graph() -> dict[str, set[str]]:
    return {name: imports(path, name) for name, path in modules().items()}


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = defaultdict(int)  # 0 unseen, 1 on the path, 2 done
    cycles: list[str] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state[target] == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif state[target] == 0:
                walk(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            walk(node, [node])
    assert not cycles, "\n".join(cycles)


def test_every_package_says_what_it_holds() -> None:
    """Each package's docstring is its map: a newcomer reads it before the modules."""
    for name, path in modules().items():
        if path.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert len(doc.split()) >= 12, f"{name}: its __init__.py needs a docstring saying what it holds"


def test_the_checker_sees_imports() -> None:
    """The rules above pass on nothing if the graph is empty: it is not."""
    edges = graph()
    assert "lswh_core" in " ".join(edges["workers.jobs"])
    assert any(t.startswith("workers") for t in edges["lswh.cli"] | set().union(*edges.values()))
