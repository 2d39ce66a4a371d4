"""The seed stream keys of common/seeding.py: one purpose each (distinct names and values), and
no seed key written as a bare number anywhere else in the code."""
import ast
import os

import common.seeding as seeding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_CALLS = {"derive_seed", "derive_rng", "generator", "seed_globals", "default_rng"}


def test_every_key_has_one_purpose():
    keys = seeding.SEED_KEYS
    assert len(keys) >= 10
    names = [n for n in vars(seeding) if n.endswith("_KEY")]
    assert sorted(names) == sorted(keys), "every *_KEY constant is listed in SEED_KEYS"
    assert len(set(keys.values())) == len(keys), f"two purposes share a key: {keys}"
    # The per-step purposes of the training loop are a different position of the seed tuple,
    # but a stream key equal to one of them would read like one in a log or a record.
    step_purposes = {seeding.GLOBAL, seeding.MASK, seeding.EXEMPLAR, seeding.NOISE,
                     seeding.AUGMENT, seeding.DATA, seeding.SKETCH}
    assert not step_purposes & set(keys.values())
    # The values recorded in results files and the tests' hand-computed streams.
    assert (seeding.EVAL_NOISE_KEY, seeding.EVAL_MASK_KEY, seeding.EVAL_DEAL_KEY) == (
        0x5A, 0x4D, 0x4445)


def _numeric_seed_keys(path):
    """Integer literals written in hex (``0x..``) passed to a seeding call, assigned to a name
    that says it is a key or a stream, or added to a seed (``seed + 0x5A``)."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, filename=path)

    def hex_ints(node):
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and type(sub.value) is int:
                text = ast.get_source_segment(source, sub) or ""
                if text.lower().startswith("0x"):
                    yield sub.value

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in SEED_CALLS:
                found |= set(hex_ints(node))
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any(t.endswith(("_KEY", "_STREAM")) for t in targets):
                found |= set(hex_ints(node.value))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.BitXor)):
            names = [n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(node)
                     if isinstance(n, (ast.Name, ast.Attribute))]
            if any("seed" in n.lower() for n in names):
                found |= set(hex_ints(node))
    return found


def test_no_seed_key_outside_common_seeding():
    stray = []
    for top in ("common", "datasets", "evaluation", "inference", "losses", "metrics", "models",
                "op", "scripts", "training"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), ROOT).replace(os.sep, "/")
                if rel == "common/seeding.py":
                    continue
                keys = _numeric_seed_keys(os.path.join(ROOT, rel))
                if keys:
                    stray.append(f"{rel}: {sorted(hex(k) for k in keys)}")
    assert not stray, "seed keys belong in common/seeding.py:\n" + "\n".join(stray)


def test_the_scan_finds_keys(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("A_STREAM = 0x4D\nrng.derive_seed(seed, 0x1C, k)\nderive_rng(s, 3)\nMAGIC = 0xBEEF\n"
                 "masks(names, cfg.eval.seed + 0x5A)\nsize = width + 0x10\n")
    assert _numeric_seed_keys(str(p)) == {0x4D, 0x1C, 0x5A}
