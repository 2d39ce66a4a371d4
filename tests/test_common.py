"""common/: one user-error base class that every entry point reports as one sentence (exit 2),
one seeding module, one CheckpointError (each defined exactly once in the repository)."""
import ast
import os

import numpy as np
import pytest

from common.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("common", "datasets", "evaluation", "losses", "metrics", "models", "op", "scripts",
               "training")


def _user_error_types():
    from datasets.errors import DatasetError, MaskError, ProtocolError
    from losses.perceptual import LPIPSWeightsError
    from metrics.evaluator import EvaluatorError
    from metrics.inception import InceptionWeightsError
    from models.checkpoint import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
    from models.exegan import InputError
    from models.irse import WeightsFileError
    from scripts.cli_common import CLIError
    from training.config import ConfigError
    from training.data import DataError
    from training.errors import NonFiniteLossError
    # (type, the built-in base it had before UserError existed: existing except clauses still match)
    return [(DatasetError, ValueError), (MaskError, ValueError), (ProtocolError, ValueError),
            (LPIPSWeightsError, RuntimeError), (EvaluatorError, ValueError),
            (InceptionWeightsError, ValueError), (CheckpointError, Exception),
            (CheckpointMismatchError, Exception), (UnsafeCheckpointError, Exception),
            (InputError, ValueError), (WeightsFileError, Exception), (CLIError, ValueError),
            (ConfigError, ValueError), (DataError, ValueError), (NonFiniteLossError, RuntimeError)]


@pytest.mark.parametrize("index", range(15))
def test_every_user_error_derives_from_user_error_and_keeps_its_builtin_base(index):
    cls, builtin = _user_error_types()[index]
    assert issubclass(cls, UserError) and issubclass(cls, builtin), cls


def _definitions(kind, name):
    found = []
    for d in SOURCE_DIRS + (".",):
        base = os.path.join(ROOT, d)
        files = ([os.path.join(base, f) for f in os.listdir(base) if f.endswith(".py")] if d == "."
                 else [os.path.join(r, f) for r, _, fs in os.walk(base) for f in fs if f.endswith(".py")])
        for path in files:
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read(), path)
            found += [os.path.relpath(path, ROOT) for n in ast.walk(tree)
                      if isinstance(n, kind) and n.name == name]
    return found


@pytest.mark.parametrize("kind,name,home", [
    (ast.FunctionDef, "derive_seed", "common/seeding.py"),
    (ast.ClassDef, "UserError", "common/errors.py"),
    (ast.ClassDef, "CheckpointError", "models/checkpoint.py"),
    (ast.ClassDef, "ProtocolError", "datasets/errors.py"),
])
def test_one_definition(kind, name, home):
    assert _definitions(kind, name) == [home]


def test_no_metrics_module_imports_training():
    for r, _, fs in os.walk(os.path.join(ROOT, "metrics")):
        for f in (f for f in fs if f.endswith(".py")):
            with open(os.path.join(r, f), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            assert not [m for m in mods if m.split(".")[0] == "training"], f


def test_derive_seed_known_value_and_streams():
    from common.seeding import derive_rng, derive_seed, generator
    # SeedSequence hashing: a fixed function of the key (a change would shift every stream).
    state = np.random.SeedSequence([7, 0x5A, 3]).generate_state(2, dtype=np.uint32)
    assert derive_seed(7, 0x5A, 3) == (int(state[0]) << 31 | int(state[1]) >> 1) & ((1 << 63) - 1)
    assert 0 <= derive_seed(1, 2) < 2 ** 63 and derive_seed(1, 2) != derive_seed(2, 1)
    assert generator(1, 2).initial_seed() == derive_seed(1, 2)
    assert derive_rng(5, 1).integers(1 << 30) == np.random.default_rng([5, 1]).integers(1 << 30)


@pytest.mark.parametrize("entry", ["train", "test", "scripts"])
def test_every_cli_prints_a_user_error_as_one_sentence_with_status_2(entry, capsys, monkeypatch):
    from datasets.errors import DatasetError
    sentence = "The folder x holds no images; check --data."

    def fail(*a, **k):
        raise DatasetError(sentence)

    if entry == "train":
        import training.cli as cli
        monkeypatch.setattr(cli, "resolve_config", fail)
        rc = cli.main(["--config", "unused.yaml"])
    elif entry == "test":
        import evaluation.cli as cli
        monkeypatch.setattr(cli, "resolve", fail)
        rc = cli.main(["--data", "x"])
    else:
        from scripts.cli_common import run
        rc = run(fail, [])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: {sentence}\n"
