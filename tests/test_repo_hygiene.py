"""The repository explains itself: no file points a reader at a document outside it, every
in-repo document it points at exists (docs/architecture.md is the map the others hang from), the
imports follow the layers that document draws, and the lint configuration catches what it is for.

The scan covers the repository's own Python and Markdown files (not the virtual environment, run
directories or the data folder). The forbidden phrases are spelled in pieces below so that this
file does not match itself.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Top-level folders that are not the project's own text (see .gitignore).
SKIP_TOP = {".git", ".venv", "runs", "data", ".op_cache", ".whl", ".gpu_check_site", ".pytest_cache"}
SKIP_ANY = {"__pycache__", "site-packages", "node_modules"}

# A design document, a working folder or a brief that only the project's authors have.
OUTSIDE = [
    re.compile(r"\b" + "DES" + r"IGN\b"),                   # the private design document
    re.compile(r"\.\./" + "shared" + r"\b"),                 # the folder beside the repository
    re.compile(r"/work/" + "shared"),
    re.compile("team" + r"\s+" + "brief", re.IGNORECASE),
    re.compile(r"\b" + "issue" + r"\s+\d+", re.IGNORECASE),  # the project's private tracker
]
DOC_PATH = re.compile(r"(?<![\w/.-])(docs/[\w./-]+\.md)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _repo_files(exts=(".py", ".md")):
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        dirnames[:] = [d for d in dirnames
                       if d not in SKIP_ANY and not (rel == "." and d in SKIP_TOP)]
        for name in filenames:
            if name.endswith(exts):
                yield os.path.join(dirpath, name)


def _lines(path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            yield n, line


def test_the_scan_sees_the_code_and_the_docs():
    files = {os.path.relpath(p, ROOT) for p in _repo_files()}
    for expected in ("train.py", "models/generator.py", "README.md", "docs/architecture.md",
                     os.path.join("tests", "test_repo_hygiene.py")):
        assert expected in files


def test_the_patterns_catch_what_they_are_for():
    # The checks below are only as good as these patterns: each must flag its example.
    examples = ["(" + "DES" + "IGN.md section 4)", "see " + "DES" + "IGN section 5",
                "../" + "shared/STYLE.md", "the " + "team " + "brief",
                "(" + "issue" + " 15 item 7)"]
    for text in examples:
        assert any(p.search(text) for p in OUTSIDE), text
    assert not any(p.search("designed by the authors; docs/architecture.md") for p in OUTSIDE)


def test_no_reference_leaves_the_repository():
    found = [f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}"
             for path in _repo_files() for n, line in _lines(path)
             if any(p.search(line) for p in OUTSIDE)]
    assert not found, ("these lines send the reader to a document outside the repository; point "
                       "them at docs/architecture.md or another in-repo doc instead:\n"
                       + "\n".join(found))


def test_every_cited_in_repo_doc_exists():
    missing = []
    for path in _repo_files():
        for n, line in _lines(path):
            for ref in DOC_PATH.findall(line):
                if not os.path.isfile(os.path.join(ROOT, ref)):
                    missing.append(f"{os.path.relpath(path, ROOT)}:{n}: {ref}")
    assert not missing, "cited docs that do not exist:\n" + "\n".join(missing)


def _anchors(md_path):
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to
    hyphens); headings inside code blocks do not count."""
    anchors, fenced = set(), False
    for _, line in _lines(md_path):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_anchor_rule_matches_github():
    # The slug rule the link check relies on, on headings of the kind the docs use.
    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as f:
        f.write("# Inference (`models.EXEGAN`)\n```\n# not a heading\n```\n## SVGL and the maps\n")
    try:
        assert _anchors(f.name) == {"inference-modelsexegan", "svgl-and-the-maps"}
    finally:
        os.unlink(f.name)


@pytest.mark.parametrize("doc", ["README.md", "docs"])
def test_relative_markdown_links_resolve(doc):
    paths = ([os.path.join(ROOT, doc)] if doc.endswith(".md") else
             [os.path.join(ROOT, doc, f) for f in sorted(os.listdir(os.path.join(ROOT, doc)))
              if f.endswith(".md")])
    broken = []
    for path in paths:
        for n, line in _lines(path):
            for target in MD_LINK.findall(line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue  # a URL or an anchor in the same file
                file_part, _, anchor = target.partition("#")
                linked = os.path.join(os.path.dirname(path), file_part)
                if not os.path.exists(linked):
                    broken.append(f"{os.path.relpath(path, ROOT)}:{n}: {target}")
                elif anchor and linked.endswith(".md") and anchor not in _anchors(linked):
                    broken.append(f"{os.path.relpath(path, ROOT)}:{n}: {target} (no such heading)")
    assert not broken, "relative links that do not resolve:\n" + "\n".join(broken)


def _ruff():
    exe = os.path.join(os.path.dirname(sys.executable), "ruff")
    exe = exe if os.path.exists(exe) else shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (make venv installs it from requirements.txt)")
    return lambda *args, **kw: subprocess.run([exe, *args], capture_output=True, text=True,
                                              cwd=ROOT, **kw)


def test_lint_config_catches_the_bugs_it_is_for(tmp_path):
    # `make lint` with pyproject.toml's rules flags an undefined name, an unused import, an
    # unused local and a mutable default; a clean file passes.
    ruff = _ruff()
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f(x=[]):\n    y = 1\n    return undefined_name\n")
    good = tmp_path / "good.py"
    good.write_text("import os\n\n\ndef f(x=None):\n    return os.sep, x\n")
    cfg = os.path.join(ROOT, "pyproject.toml")
    out = ruff("check", "--config", cfg, "--no-cache", "--output-format", "concise", str(bad))
    assert out.returncode == 1
    for code in ("F401", "F841", "F821", "B006"):
        assert code in out.stdout, (code, out.stdout)
    assert ruff("check", "--config", cfg, "--no-cache", str(good)).returncode == 0


def test_the_installed_ruff_is_the_pinned_one():
    ruff = _ruff()
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        pins = [line.split("==", 1)[1].strip() for line in f if line.startswith("ruff==")]
    assert len(pins) == 1, "requirements.txt pins ruff exactly once (ruff==X.Y.Z)"
    assert ruff("--version").stdout.split()[-1] == pins[0]


# The layers of docs/architecture.md, bottom (0) to top: a package imports only packages below it.
# scripts/ is the top layer (entry points): it may import every package, no package imports it.
LAYERS = {"op": 0, "common": 0, "models": 1, "losses": 1, "datasets": 1, "metrics": 2, "inference": 2,
          "training": 3, "evaluation": 4, "scripts": 5}


def _module_name(path):
    """'training/run.py' -> 'training.run'; a package's __init__.py -> the package."""
    rel = os.path.splitext(os.path.relpath(path, ROOT))[0].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _absolute(node, module, is_package):
    """The module an ImportFrom names, absolute (relative imports resolved against ``module``)."""
    if node.level == 0:
        return node.module
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path, module_level_only=False):
    """(line, imported module) for every import of the file, relative ones resolved; ``from X
    import y`` yields X.y where y is a module of the repository, else X. With
    ``module_level_only`` the imports inside functions are left out (they run on call)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    module = _module_name(path)
    is_package = os.path.basename(path) == "__init__.py"

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            if not target:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = os.path.isfile(os.path.join(ROOT, *sub.split(".")) + ".py") or os.path.isfile(
                    os.path.join(ROOT, *sub.split("."), "__init__.py"))
                yield node.lineno, sub if is_module else target


def _package_files(package):
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, package)):
        dirnames[:] = [d for d in dirnames if d not in SKIP_ANY]
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def test_imports_point_down_the_layers():
    """Every import (function-level and relative ones included) of a layer's package names a
    package below it; the entry points train.py / test.py and scripts/ sit on top."""
    wrong = []
    for package, level in LAYERS.items():
        for path in _package_files(package):
            for lineno, target in _imports(path):
                top = target.split(".")[0]
                if top != package and top in LAYERS and LAYERS[top] >= level:
                    wrong.append(f"{os.path.relpath(path, ROOT)}:{lineno} imports {top}")
    assert not wrong, ("imports that run up or across the layers of docs/architecture.md:\n"
                       + "\n".join(wrong))


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph(package, module_level_only=True):
    """{module: modules of the same package it imports} (relative imports and ``from . import x``
    included; with ``module_level_only`` the imports inside functions are left out)."""
    graph = {}
    for path in _package_files(package):
        module = _module_name(path)
        graph[module] = sorted({t for _, t in _imports(path, module_level_only)
                                if t.split(".")[0] == package and t != module})
    return graph


# Cycles closed only by a function-local import, each with its reason (the import runs on call,
# when both modules are loaded). Module-level cycles have no exceptions.
LAZY_CYCLES = {
    "op": [["op._selfcheck", "op.upfirdn2d"]],  # the self-check compares the kernels with the
                                                 # reference op it imports when it runs
}


@pytest.mark.parametrize("package", sorted(LAYERS))
@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "all-imports"])
def test_no_import_cycle_inside_a_package(package, module_level_only):
    """No module of a package imports (directly or through others) a module that imports it back:
    each package reads bottom-up. Checked twice: with the imports at module level only (no
    exceptions), and with function-local imports counted as well (exceptions: LAZY_CYCLES)."""
    cycles = _cycles(import_graph(package, module_level_only))
    if not module_level_only:
        cycles = [cyc for cyc in cycles if cyc not in LAZY_CYCLES.get(package, [])]
    assert not cycles, f"import cycles in {package}/: " + "; ".join(" <-> ".join(cyc) for cyc in cycles)


def test_the_cycle_check_sees_relative_imports(tmp_path, monkeypatch):
    """A two-module cycle written with relative imports and ``from . import x`` is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("from . import a\n\ndef f():\n    from . import c\n")
    (pkg / "c.py").write_text("from pkg import b\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    graph = import_graph("pkg")
    assert graph["pkg.a"] == ["pkg.b"] and graph["pkg.b"] == ["pkg.a"] and graph["pkg.c"] == ["pkg.b"]
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]
    # Counted with the function-local one, b -> c -> b closes through the same component.
    assert _cycles(import_graph("pkg", module_level_only=False)) == [["pkg.a", "pkg.b", "pkg.c"]]
