"""The house rules of the package's layout, checked from the source (no imports run).

- client and server never import each other (they share only protocol and engine);
- no import cycle between modules of ``fastquartdb`` at run time (an import made only
  for type checking, under ``if TYPE_CHECKING:``, is an annotation, not a dependency);
- a daemon connection does not know the daemon at all, not even for type checking: it
  depends on the small protocol the daemon implements;
- no module over ``MAX_LINES`` lines: split one by concern before it gets there.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fastquartdb"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def _imports(name: str, path: Path, known: set[str], *, typing_too: bool = False) -> set[str]:
    """The ``fastquartdb`` modules ``name`` imports (a package import counts as its __init__)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if typing_too else _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                # "from .x import y": y is a module of package x, or a name defined in x.
                module = f"{stem}.{alias.name}"
                found.add(module if module in known else stem)
    return {target for target in found if target in known and target != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_client_and_server_never_import_each_other() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        for a, b in (("client", "server"), ("server", "client"))
        if name.startswith(f"fastquartdb.{a}") and target.startswith(f"fastquartdb.{b}")
    ]
    assert wrong == []


def _cycle_through(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as the list of modules around it, or None."""
    edges = graph
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_a_connection_does_not_know_the_daemon() -> None:
    path = PACKAGE / "server" / "connection.py"
    known = set(_modules())
    assert "fastquartdb.server.daemon" not in _imports(
        "fastquartdb.server.connection", path, known, typing_too=True
    )


def test_no_import_cycle() -> None:
    assert _cycle_through(_graph()) is None


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"fastquartdb.a": {"fastquartdb.b"}, "fastquartdb.b": {"fastquartdb.a"}}
    assert _cycle_through(graph) == ["fastquartdb.a", "fastquartdb.b", "fastquartdb.a"]


def test_modules_stay_small() -> None:
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    over = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert over == {}, f"modules over {MAX_LINES} lines: split them by concern"
