"""The shape of observer/gui, checked by reading its source: who may know the window.

Tabs, inspect windows and helpers take a small protocol of what they use from the window,
so each file shows its whole world; only app.py (which starts the window) and window.py
itself name ``MainWindow``. The modules import each other without a cycle, counting
imports made only for type checking, so each can be read (and tested) bottom-up.
"""

from __future__ import annotations

import ast

from tests.helpers import ROOT

GUI = ROOT / "observer" / "gui"
MAY_KNOW_THE_WINDOW = {"app.py", "window.py"}


def modules() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text(), str(path)) for path in GUI.glob("*.py")}


def gui_imports(tree: ast.Module) -> set[str]:
    """observer.gui modules (by file name) imported anywhere in ``tree``, including under
    ``if TYPE_CHECKING:`` and inside functions."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("observer.gui."):
                found.add(node.module.split(".")[2] + ".py")
            elif node.module == "observer.gui":
                found.update(f"{alias.name}.py" for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("observer.gui."):
                    found.add(alias.name.split(".")[2] + ".py")
    return found


def names_the_window(tree: ast.Module) -> list[str]:
    """Every place ``tree`` names MainWindow: a name, an attribute, or a string annotation."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "MainWindow":
            hits.append(f"line {node.lineno}: name")
        elif isinstance(node, ast.Attribute) and node.attr == "MainWindow":
            hits.append(f"line {node.lineno}: attribute")
        elif isinstance(node, ast.alias) and node.name.split(".")[-1] == "MainWindow":
            hits.append(f"line {node.lineno}: import")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "MainWindow" in node.value
            and not node.value.lstrip().startswith(("\n", " "))
            and len(node.value) < 80  # a string annotation, not a docstring
        ):
            hits.append(f"line {node.lineno}: string {node.value!r}")
    return hits


def test_only_app_and_window_know_the_window_class():
    found = {}
    for name, tree in modules().items():
        if name in MAY_KNOW_THE_WINDOW:
            continue
        imports_window = "window.py" in gui_imports(tree)
        hits = names_the_window(tree) + (["imports observer.gui.window"] if imports_window else [])
        if hits:
            found[name] = hits
    assert not found, f"modules that know the window (give them a protocol instead): {found}"


def test_the_check_sees_a_type_checking_import():
    """The rule would catch the old pattern: a TYPE_CHECKING import and an annotation."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from observer.gui.window import MainWindow\n"
        "def f(window: 'MainWindow') -> None: ...\n"
    )
    assert "window.py" in gui_imports(tree)
    assert len(names_the_window(tree)) == 2


def test_gui_modules_import_each_other_without_a_cycle():
    graph = {name: gui_imports(tree) - {name} for name, tree in modules().items()}
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in path, "import cycle: " + " -> ".join([*path, name])
        path.append(name)
        for other in sorted(graph.get(name, ())):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert "window.py" in graph["app.py"]  # the check reads real imports
