"""The package's folders say what runs where, and its imports keep to that.

The FAB carries the apps and the folders they use (zk0_executor.trust.APP_FILES, the same list
as pyproject's fab-include); ops/ and tools/ run on an operator's machine and never travel.
Imports are read from the source (every `import`, lazy ones inside functions too; only
`if TYPE_CHECKING:` blocks are left out, since they never run).
"""

from __future__ import annotations

import ast
import io
import tomllib
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from zk0.ops.fab import copy_app
from zk0_executor.trust import APP_FILES, FAB_SOURCES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "zk0"
OPERATOR_FOLDERS = ("ops", "tools")
# A folder may import only from the folders listed for it (and from itself).
MAY_IMPORT = {
    "util": set(),
    "wire": {"util"},
    "data": {"util", "wire"},
    "policy": {"util", "wire", "data"},
    "sim": {"util"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def zk0_imports(path: Path, modules: set[str]) -> set[str]:
    """The zk0 modules `path` imports at run time (a `from zk0.x import y` names zk0.x.y when that is a module)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "zk0"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "zk0":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules and name != "zk0"}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: zk0_imports(path, set(paths)) for name, path in paths.items()}


def folder(module: str) -> str:
    """The sub-package a module lives in ('' for the top: the apps and config)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def test_the_fab_ships_exactly_the_app_files_and_pyproject_names_them(tmp_path: Path):
    """(From the copy `flwr run` reads, which packs as the whole checkout does: test_fab.py.)"""
    fab_include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["fab-include"]
    assert fab_include == [FAB_SOURCES + pattern for pattern in APP_FILES]
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(copy_app(ROOT, tmp_path / "app")))) as fab:
        shipped = {name for name in fab.namelist() if name.startswith(FAB_SOURCES)}
    expected = {FAB_SOURCES + p.relative_to(PACKAGE).as_posix() for pattern in APP_FILES for p in PACKAGE.glob(pattern)}
    assert shipped == expected
    assert not [name for name in shipped if name.split("/")[2] in OPERATOR_FOLDERS]


def test_the_apps_import_only_what_the_fab_ships():
    """Everything the two apps reach, lazily or not, is in the FAB: no ops/ or tools/ module."""
    graph = import_graph()
    reached, todo = set(), ["zk0.server_app", "zk0.client_app"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert not sorted(m for m in reached if folder(m) in OPERATOR_FOLDERS)
    shipped = {module_name(p) for pattern in APP_FILES for p in PACKAGE.glob(pattern)}
    assert reached <= shipped, sorted(reached - shipped)


def test_lower_folders_import_only_the_folders_below_them():
    for module, imports in import_graph().items():
        allowed = MAY_IMPORT.get(folder(module))
        if allowed is None:
            continue
        wrong = sorted(m for m in imports if folder(m) != folder(module) and folder(m) not in allowed)
        assert not wrong, f"{module} imports {wrong}; {folder(module)}/ may import only {sorted(allowed)}"


def test_no_module_imports_itself_back():
    """No import cycles between zk0's modules, counting lazy imports."""
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for child in sorted(graph[module]):
            assert state.get(child) != 1, "import cycle: " + " -> ".join(path[path.index(child):] + [child])
            if child not in state:
                visit(child, path + [child])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
