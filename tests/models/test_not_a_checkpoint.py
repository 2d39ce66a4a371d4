"""A file that is not what torch.save wrote (a README or an HTML page saved under the checkpoint's
name): every loader says "not a PyTorch checkpoint" in one sentence that quotes nothing from the
file, and the entry points exit with status 2."""
import os
import subprocess
import sys

import pytest

from common.errors import UserError
from models.checkpoint import CheckpointError, load_discriminator, load_generator, safe_load

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# First letters decide what the unpickler makes of text: 'a' APPEND (IndexError), 'c' GLOBAL
# (a global named after the text: "cat.\n" -> 'at.'), '}' EMPTY_DICT, '(' MARK, 'h' BINGET ...
TEXTS = {
    "readme": "# EXE-GAN checkpoint\n\nDownload the file from the release page.\n",
    "append": "a checkpoint goes here\n",
    "global": "cat.\nREADME\n",
    "dict": "}{ not json\n",
    "mark": "(see the README)\n",
    "get": "hello\n",
    "html": "<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
    "empty": "",
}


@pytest.fixture(params=sorted(TEXTS))
def text_pt(request, tmp_path):
    path = tmp_path / "EXE_GAN_model_256.pt"
    path.write_text(TEXTS[request.param])
    return str(path), TEXTS[request.param]


def _assert_one_sentence(msg, path, text):
    assert "not a PyTorch checkpoint" in msg and path in msg
    assert "\n" not in msg and msg.endswith(".")
    # Nothing of the file is quoted as if it were a pickled name or key.
    assert "pickled global" not in msg and "'at.'" not in msg
    for word in ("README", "Download", "DOCTYPE", "hello"):
        if word in text:
            assert word not in msg


def test_every_checkpoint_loader_calls_a_text_file_not_a_pytorch_checkpoint(text_pt):
    path, text = text_pt
    for load in (safe_load, load_generator, load_discriminator):
        with pytest.raises(CheckpointError) as e:
            load(path)
        _assert_one_sentence(str(e.value), path, text)


def test_the_pretrained_loaders_say_the_same(text_pt):
    from losses.perceptual import load_lpips
    from metrics.inception import load_inception
    from models.identity import load_identity_net
    from models.psp import load_style_encoder

    path, text = text_pt
    calls = (lambda: load_style_encoder(path), lambda: load_inception(path),
             lambda: load_identity_net(path), lambda: load_lpips(path))
    for call in calls:
        with pytest.raises(UserError) as e:
            call()
        _assert_one_sentence(str(e.value), path, text)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_entry_point_exits_2_with_one_line(tmp_path):
    import numpy as np
    from PIL import Image

    path = tmp_path / "latest.pt"
    path.write_text(TEXTS["global"])
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(data / "0.png")
    hole = np.zeros((16, 16), np.uint8)
    hole[4:12, 4:12] = 255
    Image.fromarray(hole).save(tmp_path / "mask.png")
    for argv in (["train.py", "--resume", str(path)],
                 ["test.py", "--ckpt", str(path), "--data", str(data), "--allow-random-pretrained",
                  "--metrics", "psnr"],
                 ["scripts/inpaint.py", "--image", str(data / "0.png"), "--mask",
                  str(tmp_path / "mask.png"), "--exemplar", str(data / "0.png"), "--ckpt", str(path),
                  "--psp", str(path), "--out", str(tmp_path / "out")],
                 ["scripts/editor.py", "--ckpt", str(path), "--psp", str(path), "--port", "7961"]):
        proc = _run(*argv)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        _assert_one_sentence(lines[0], str(path), TEXTS["global"])
