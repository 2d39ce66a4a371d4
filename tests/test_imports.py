"""Imports (docs/architecture.md, "Layers"): a module's imports stand at its top, except where one
keeps an optional or heavy dependency out of a plain run (lmdb, lpips, onnx, the face detector, a
CUDA build, ...) or breaks an import cycle; each of those says why in a comment on its line or the
line before. No module imports another package's private (``_underscored``) module or name.

The checks read the source with ``ast`` (nothing is imported). The first covers every Python
file outside tests/ except those in ``LOCAL_IMPORTS_PENDING``, each listed with the reason it is
not checked yet, so a new file is checked from the start.
"""
from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from typing import Dict, List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIPPED_DIRS = {"tests", ".venv", "runs", ".git", "data", "checkpoints", "__pycache__", "node_modules"}

# Every Python file outside tests/ is checked except these folders / files (relative to the
# repository root), each with the reason; remove an entry once its files pass.
LOCAL_IMPORTS_PENDING: Dict[str, str] = {
}

# Packages whose private modules and names are used only inside them. Folders of entry points
# (scripts/, the top level) are not packages: nothing private crosses into them.
ENTRY_POINT_DIRS = ("", "scripts")

# Cross-package imports of private names still to be made public, as (importing file, imported
# dotted name) -> reason; remove an entry once it is gone.
PRIVATE_IMPORTS_PENDING: Dict[Tuple[str, str], str] = {
}


def _python_files() -> List[str]:
    out = []
    for d, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(d, ROOT)
        if rel != "." and rel.split(os.sep)[0] in SKIPPED_DIRS:
            dirs[:] = []
            continue
        dirs[:] = [x for x in dirs if x not in SKIPPED_DIRS and not x.startswith(".")]
        out += [os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/") for f in files if f.endswith(".py")]
    return sorted(out)


def _covered(path: str, entries) -> bool:
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in entries)


def _reason_lines(source: str) -> Dict[int, bool]:
    """{line: whether a comment on it gives a reason} (a bare ``# noqa: X`` gives none)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = re.sub(r"^#\s*(noqa(:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*)?)?", "", tok.string)
            out[tok.start[0]] = bool(re.search(r"\w", text))
    return out


def local_imports_without_reason(path: str) -> List[Tuple[int, str]]:
    """(line, statement) of every import inside a function of ``path`` with no reason comment on
    its lines or the line before."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        source = f.read()
    reasons = _reason_lines(source)
    bad = []

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                lines = range(child.lineno - 1, (child.end_lineno or child.lineno) + 1)
                if not any(reasons.get(n) for n in lines):
                    bad.append((child.lineno, ast.unparse(child)))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                          ast.Lambda)))

    walk(ast.parse(source), False)
    return bad


def _module_of(path: str) -> str:
    parts = path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_parts(dotted: str) -> List[int]:
    return [i for i, p in enumerate(dotted.split(".")) if p.startswith("_") and not p.startswith("__")]


def private_imports(path: str) -> List[Tuple[int, str]]:
    """(line, dotted name) of every private module or name ``path`` imports from outside the
    package that owns it."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    module = _module_of(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    in_entry_point = os.path.dirname(path) in ENTRY_POINT_DIRS
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    bad = []
    for line, dotted in names:
        private = _private_parts(dotted)
        if not private:
            continue
        parts = dotted.split(".")[:private[0]]  # what the first private part is in
        if parts and not os.path.isdir(os.path.join(ROOT, *parts)):
            parts = parts[:-1]  # a private name of a module: the module's package owns it
        owner = ".".join(parts)
        inside = bool(owner) and (package == owner or package.startswith(owner + "."))
        if in_entry_point or not inside:
            bad.append((line, dotted))
    return bad


FILES = _python_files()


@pytest.mark.parametrize("path", [p for p in FILES if not _covered(p, LOCAL_IMPORTS_PENDING)])
def test_function_local_imports_say_why(path):
    bad = local_imports_without_reason(path)
    assert not bad, (f"{path}: move these imports to the top of the module, or say on the line (or "
                     f"the one before) which optional / heavy dependency or cycle keeps them local: "
                     + "; ".join(f"line {n}: {s}" for n, s in bad))


def test_no_private_import_across_packages():
    found = {(p, dotted): line for p in FILES for line, dotted in private_imports(p)}
    bad = [f"{p}:{line} imports {dotted}" for (p, dotted), line in sorted(found.items())
           if (p, dotted) not in PRIVATE_IMPORTS_PENDING]
    assert not bad, "private names imported across packages (make them public): " + "; ".join(bad)


def test_the_checks_catch_what_they_should(tmp_path, monkeypatch):
    """The scanners on a small fake tree: a silent local import, one with a reason, a bare noqa,
    a private module inside and outside its package, a relative private import, a script."""
    files = {
        "pkg/__init__.py": "from ._impl import thing\n",
        "pkg/a.py": ("def f():\n    import json\n"
                     "    import lmdb  # optional: only for packs\n"
                     "    # heavy: the CUDA build\n    import ninja\n"
                     "    import yaml  # noqa: F401\n"),
        "pkg/_impl.py": "thing = 1\n",
        "pkg/sub/b.py": "from .. import _impl\nfrom pkg._impl import thing\n",
        "other/c.py": "from pkg import _impl\nimport pkg._impl\nfrom pkg.a import _private_name\n",
        "pkg/sub/d.py": "from pkg.a import _private_name\nfrom ..a import _other\n",
        "scripts/s.py": "from scripts import _glue\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
    assert [s for _, s in local_imports_without_reason("pkg/a.py")] == ["import json", "import yaml"]
    assert private_imports("pkg/__init__.py") == [] and private_imports("pkg/sub/b.py") == []
    assert private_imports("pkg/sub/d.py") == []  # a private name used inside its own package
    assert [d for _, d in private_imports("other/c.py")] == ["pkg._impl", "pkg._impl",
                                                             "pkg.a._private_name"]
    assert [d for _, d in private_imports("scripts/s.py")] == ["scripts._glue"]
