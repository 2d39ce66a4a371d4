"""Config files that are not UTF-8, and YAML alias bombs: one sentence, bounded memory and time."""
import subprocess
import time

import pytest

from training import cli
from training.config import ConfigError, load_config
from trainutil import PYTHON, REPO, python_env

# 427 bytes that expand to 9 ** 9 list items (hundreds of millions): the "billion laughs".
BOMB = """name: bomb
mask:
  kind: free_form
  options:
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_an_alias_bomb_is_refused_at_once_in_one_sentence(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    # A process with a deadline: expanding the aliases takes minutes and gigabytes.
    t0 = time.perf_counter()
    proc = subprocess.run([PYTHON, "train.py", "--config", str(path), "--dry-run"], cwd=REPO,
                          env=python_env(), capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - t0 < 60
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: Config file {path} uses a YAML alias at line 6, column 12; aliases "
                           f"are not allowed in configs (they can expand without bound), write the "
                           f"values out.\n")


def test_an_alias_in_a_set_value_is_refused_too():
    with pytest.raises(ConfigError, match=r"Override 'mask.options=.*' uses a YAML alias"):
        load_config(None, ["mask.options={a: &x [1, 2], b: *x}"])


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_config_that_is_not_utf8_is_one_sentence(tmp_path, capsys, encoding):
    path = tmp_path / "cfg.yaml"
    path.write_bytes("name: café\ntrain:\n  iters: 10\n".encode(encoding))
    assert cli.main(["--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Config file {path} is not UTF-8 text (byte 0x")
    assert err.endswith("); save it as UTF-8.\n") and err.count("\n") == 1


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  iters: [1, 2\n")
    assert cli.main(["--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Config file {path} is not valid YAML (") and err.count("\n") == 1


def test_utf8_with_a_byte_order_mark_still_loads(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_bytes("\ufeffname: café\n".encode("utf-8"))
    assert load_config(str(path)).name == "café"
