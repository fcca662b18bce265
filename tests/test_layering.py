"""The package stacks one way: core (kdqat: quantization, distillation, training, GLUE data) <- runtime <-
export <- eval, with the command line and the sweep driver on top. Read from every module's imports."""

from __future__ import annotations

import ast

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
