"""op/ keeps one home for what used to be written several times: upfirdn2d's output-size formula
(one Python function, one C++ function, checked against each other in test_cuda_compile.py),
and one function that chooses ref | general | tiled; upfirdn2d.py reads no private global of
op._impl."""
import ast
import os
import re

OP = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                  'op')


def _code_lines(path, comment):
    """(line number, text) of the lines of ``path`` outside comments / docstrings."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if path.endswith('.py'):
        docs = set()
        for node in ast.walk(ast.parse(text)):
            body = getattr(node, 'body', None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                docs.update(range(body[0].lineno, body[0].end_lineno + 1))
        return [(i, line.split('#')[0]) for i, line in enumerate(text.splitlines(), 1)
                if i not in docs]
    return [(i, line.split(comment)[0]) for i, line in enumerate(text.splitlines(), 1)]


def _enclosing_function(path, lineno):
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.lineno <= lineno <= node.end_lineno:
            return node.name
    return None


def _files(*exts):
    for root, _, names in os.walk(OP):
        for name in sorted(names):
            if name.endswith(exts):
                yield os.path.join(root, name)


# "... ) // down + 1" (Python) and "... ) / down_y + 1" (C++): the output length of one axis.
PY_FORMULA = re.compile(r'\)\s*//\s*\w+\s*\+\s*1\b')
CPP_FORMULA = re.compile(r'\)\s*/\s*(p\.)?\w*down\w*\s*\+\s*1\b')


def test_the_output_size_formula_has_one_home_per_language():
    py = [(path, i) for path in _files('.py') for i, line in _code_lines(path, '#')
          if PY_FORMULA.search(line)]
    assert len(py) == 1, py
    assert py[0][0].endswith('upfirdn2d.py') and _enclosing_function(*py[0]) == 'out_size'
    cpp = [(os.path.basename(path), i, line.strip()) for path in _files('.cpp', '.cu', '.h')
           for i, line in _code_lines(path, '//') if CPP_FORMULA.search(line)]
    assert [c[0] for c in cpp] == ['ops.cpp', 'ops.cpp'], cpp  # out_h and out_w
    with open(os.path.join(OP, 'csrc', 'ops.cpp'), encoding='utf-8') as f:
        lines = f.read().splitlines()
    start = max(i for i, line in enumerate(lines[:cpp[0][1]])
                if re.match(r'^static \w+ \w+\(', line))
    assert 'upfirdn2d_params(' in lines[start]
    assert cpp[1][1] - cpp[0][1] == 1


def test_one_function_chooses_the_implementation():
    """ref | general | tiled is decided in upfirdn2d.choose only: no other function of op/ calls
    the loader's cuda_extension or the self-check's tile_for."""
    callers = {}
    for path in _files('.py'):
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Attribute) and sub.attr in ('cuda_extension', 'tile_for') \
                            and isinstance(sub.ctx, ast.Load):
                        callers.setdefault(sub.attr, set()).add(
                            (os.path.basename(path), node.name))
    assert callers['tile_for'] == {('upfirdn2d.py', 'choose')}
    assert callers['cuda_extension'] == {('upfirdn2d.py', 'choose'), ('fused_act.py', 'fused_bias_act')}


def test_upfirdn2d_reads_no_private_global_of_impl():
    with open(os.path.join(OP, 'upfirdn2d.py'), encoding='utf-8') as f:
        assert not re.search(r'_impl\._\w', f.read())
