"""The package stacks one way: core (kdqat: quantization, distillation, training, GLUE data) <- runtime <-
export <- eval, with the command line and the sweep driver on top. Read from every module's imports."""

from __future__ import annotations

import ast

import pytest

from conftest import REPO

FOLDERS = {"kdqat.runtime": REPO / "runtime", "kdqat.export": REPO / "export", "kdqat.eval": REPO / "eval"}
TOP = {"kdqat.cli", "kdqat.sweep"}  # may import every stage
RANK = {"core": 0, "kdqat.runtime": 1, "kdqat.export": 2, "kdqat.eval": 3}


def stage(module: str) -> str | None:
    if not module.startswith("kdqat"):
        return None
    return next((s for s in FOLDERS if module == s or module.startswith(s + ".")), "core")


def modules():
    for path in (REPO / "kdqat").rglob("*.py"):
        yield "kdqat." + ".".join(path.relative_to(REPO / "kdqat").with_suffix("").parts), path
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            yield package + "." + ".".join(path.relative_to(folder).with_suffix("").parts), path


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_every_import_points_down_the_stack():
    wrong = []
    for module, path in modules():
        name = module.removesuffix(".__init__")
        if name in TOP:
            continue
        here = stage(name)
        for target in imported(path):
            there = stage(target)
            if there is not None and RANK[there] > RANK[here]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_top_level_eval_export_or_runtime_imports_remain():
    stray = [f"{m}: {t}" for m, p in modules() for t in imported(p) if t.split(".")[0] in ("eval", "export", "runtime")]
    assert stray == []


def _module_files() -> dict[str, object]:
    """Every product module by its importable name (kdqat.runtime.X for runtime/X.py, and so on)."""
    return {module.removesuffix(".__init__"): path for module, path in modules()}


def _imports_of(path, module: str, files: dict) -> set[str]:
    """The product modules `path` imports anywhere in it (inside functions too), a package's __init__ left out:
    importing a module of a package runs its __init__ first, which is not an edge of the module's own."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module and files[name].name != "__init__.py":
                found.add(name)
    return found


def import_cycles(edges: dict[str, set[str]]) -> list[str]:
    """Each cycle a depth-first walk of `edges` (module -> modules it imports) closes, as "a -> b -> a"."""
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [module, target] if target in trail else [module, target]))
            elif target not in state:
                visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    return cycles


def test_no_import_cycles_among_files():
    """No file imports, directly or through others, a file that imports it back (function-level imports count:
    such a cycle is one refactoring away from an import-time failure)."""
    files = _module_files()
    assert import_cycles({m: _imports_of(p, m, files) for m, p in files.items()}) == []


def test_the_cycle_check_finds_a_cycle_made_of_function_level_imports(tmp_path):
    """The check above can fail: three files that import each other in a ring, inside functions, are found."""
    files = {f"kdqat.{n}": tmp_path / f"{n}.py" for n in "abc"}
    files["kdqat.a"].write_text("def f():\n    from kdqat.b import g\n")
    files["kdqat.b"].write_text("def g():\n    import kdqat.c\n")
    files["kdqat.c"].write_text("from . import a\n")
    edges = {m: _imports_of(p, m, files) for m, p in files.items()}
    assert edges == {"kdqat.a": {"kdqat.b"}, "kdqat.b": {"kdqat.c"}, "kdqat.c": {"kdqat.a"}}
    assert import_cycles(edges) == ["kdqat.a -> kdqat.b -> kdqat.c -> kdqat.a"]


def test_every_package_folder_is_installed():
    """A sub-package pyproject.toml does not list would be missing from a wheel (an editable install hides that)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module.removesuffix(".__init__") for module, path in modules() if path.name == "__init__.py"}
    assert found == listed
