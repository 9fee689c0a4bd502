"""Package hygiene: every module imports, the dependency direction holds, serving stays torch-free."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("models", "router", "streams")
# streams → router → models, never back.
FORBIDDEN = {"models": {"router", "streams"}, "router": {"streams"}, "streams": set()}


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{pkg}.")]
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_dependency_direction(pkg: str) -> None:
    offenders = []
    for path in sorted((REPO / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            offenders += [
                f"{path.relative_to(REPO)} imports {t}"
                for t in targets
                if t.split(".")[0] in FORBIDDEN[pkg]
            ]
    assert not offenders


def test_serving_packages_do_not_import_torch() -> None:
    code = (
        "import sys, models, router, streams, streams.main; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert out.returncode == 0, out.stderr


def test_tests_mirror_the_packages() -> None:
    """tests/{unit,integration}/<package>/ hold each package's tests; only tests of the whole
    (layout, docs, compose file, the assembled command line) sit at the top of tests/unit."""
    for kind in ("unit", "integration"):
        root = REPO / "tests" / kind
        folders = {p.name for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"}
        assert folders == set(PACKAGES), f"tests/{kind}: {sorted(folders)}"
    top = sorted(p.name for p in (REPO / "tests" / "integration").glob("test_*.py"))
    assert top == [], f"integration tests outside a package folder: {top}"
    top = sorted(p.name for p in (REPO / "tests" / "unit").glob("test_*.py"))
    assert top == ["test_cli.py", "test_compose.py", "test_docs.py", "test_layout.py"], top


def _module_level_imports() -> dict[str, set[str]]:
    """Each crossroute module → the crossroute modules it imports when it is imported (statements at
    the top of the module; imports inside functions and ``if TYPE_CHECKING:`` blocks are not)."""
    modules = set(_modules())
    graph: dict[str, set[str]] = {}
    for name in modules:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        deps: set[str] = set()
        for node in ast.parse(Path(module.__file__).read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_import_cycles() -> None:
    graph = _module_level_imports()
    state: dict[str, str] = {}  # "open" while on the current path, "done" once explored
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, cycles[:3]
