"""test.py leaves no results directory behind when it fails (early checks, or a failure in the
middle of the evaluation), and its count and seed errors name the flag the user typed."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# test.py whose evaluation fails half-way (after writing a file into the results directory).
LATE_FAILURE_DRIVER = textwrap.dedent("""
    import os, sys
    import metrics.testrun as testrun
    from datasets.errors import ProtocolError

    def evaluate(model, dataset, masks, exemplars, save_dir=None, **kwargs):
        out = os.environ["OUT"]
        open(os.path.join(out, "0_out.png"), "wb").close()
        if os.environ["KIND"] == "user":
            raise ProtocolError("a late user error.")
        raise RuntimeError("a late crash")

    testrun.evaluate = evaluate
    from evaluation.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("late")
    from models.generator import Generator
    torch.save(Generator(size=16, style_dim=32, n_mlp=2, channel_multiplier=0.0625,
                         channel_max=16).state_dict(), d / "g.pt")
    (d / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / "data" / f"{i}.png")
    return d


def _test_py(cwd, *args, script=None, env=None):
    e = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, script or os.path.join(REPO, "test.py"), "--ckpt", "g.pt",
                           "--data", "data", "--allow-random-pretrained", "--metrics", "psnr",
                           "--no-progress", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, line", [
    (["--n-images", "0"], "error: --n-images must be >= 1 (the number of test images to evaluate), "
                          "got 0; leave it out to evaluate every image."),
    (["--seed", "-1", "--out", "res"], "error: --seed must be >= 0, got -1."),
    (["--mask-seed", "-3"], "error: --mask-seed must be >= 0, got -3."),
])
def test_bad_counts_and_seeds_name_the_flag_and_leave_no_directory(setup, args, line):
    proc = _test_py(setup, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == line
    assert not (setup / "res").exists() and not (setup / "runs").exists()


@pytest.mark.parametrize("kind, status", [("user", 2), ("crash", 1)])
def test_a_failure_during_the_evaluation_removes_the_results_directory(setup, tmp_path, kind, status):
    driver = tmp_path / "driver.py"
    driver.write_text(LATE_FAILURE_DRIVER)
    out = setup / f"res-{kind}"
    proc = _test_py(setup, "--out", out.name, script=str(driver), env={"OUT": str(out), "KIND": kind})
    assert proc.returncode == status, proc.stderr[-2000:]
    assert not out.exists()
    # An --out that existed (empty) before stays, empty.
    out.mkdir()
    proc = _test_py(setup, "--out", out.name, script=str(driver), env={"OUT": str(out), "KIND": kind})
    assert proc.returncode == status and out.is_dir() and os.listdir(out) == []
    out.rmdir()


def test_scoring_that_fails_half_way_leaves_no_results_directory(tmp_path):
    # 1-px completions: the folders pair up, the SSIM of the first batch then fails.
    for name in ("gt", "pred"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (1, 1), (i * 40, 0, 0)).save(tmp_path / name / f"{i}.png")
    e = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "test.py"), "--pred", "pred", "--gt", "gt",
                           "--metrics", "ssim", "--out", "res", "--no-progress"], cwd=tmp_path, env=e,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "results directory: res" in proc.stderr, proc.stderr[-2000:]
    assert "error: SSIM needs images of at least 3x3 pixels, got 1x1; score larger images" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "res").exists()
