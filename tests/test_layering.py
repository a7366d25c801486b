"""The product's layering: lswh_core at the bottom; ingress and workers each on lswh_core and never
on each other; lswh (the command line) on top of them all. An import that runs back up, at the top
of a module or inside a function, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.procs import ROOT

BELOW = {
    "lswh_core": set(),
    "ingress": {"lswh_core"},
    "workers": {"lswh_core"},
    "lswh": {"lswh_core", "ingress", "workers"},
}


def imported_packages(path: Path) -> set[str]:
    """The product packages a module imports, wherever in the module the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(BELOW)


def test_no_import_runs_back_up() -> None:
    upward = {str(path.relative_to(ROOT)): sorted(wrong)
              for package, allowed in BELOW.items()
              for path in sorted((ROOT / package).rglob("*.py"))
              if (wrong := imported_packages(path) - allowed - {package})}
    assert upward == {}, f"imports against the layering: {upward}"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from workers.bookkeeping.accounting import read\n    import ingress.app\n")
    assert imported_packages(module) == {"workers", "ingress"}
