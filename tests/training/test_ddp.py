"""Two-process DistributedDataParallel training on CPU (gloo), launched by torchrun."""
import glob
import json
import os
import subprocess
import textwrap

import torch

from training.checkpointing import load_training_checkpoint
from trainutil import PYTHON, REPO, python_env, tiny_dict, write_yaml

# Each rank trains, then dumps its own G / D / G_ema so the test can compare the replicas.
DRIVER = textwrap.dedent("""
    import os, sys
    import torch
    from training.config import load_config
    from training.run import run
    cfg = load_config(sys.argv[1])
    res = run(cfg)
    t, rank = res.trainer, int(os.environ["RANK"])
    torch.save({"g": t.G.state_dict(), "d": t.D.state_dict(), "g_ema": t.G_ema.state_dict(),
                "step": res.step, "run_dir": res.run_dir}, os.path.join(sys.argv[2], f"rank{rank}.pt"))
""")


def test_two_process_ddp_keeps_replicas_identical_and_writes_once(face_dirs, tmp_path):
    outdir = tmp_path / "runs"
    cfg = tiny_dict(face_dirs, outdir, train={"iters": 4, "batch": 2},
                    loss={"d_reg_every": 2, "g_reg_every": 2},   # R1 and path length under DDP
                    log={"sample_every": 2})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    (tmp_path / "driver.py").write_text(DRIVER)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "driver.py"), cfg_path, str(dumps)]
    proc = subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    r0 = torch.load(dumps / "rank0.pt", weights_only=True)
    r1 = torch.load(dumps / "rank1.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 4 and r0["run_dir"] == r1["run_dir"]
    for net in ("g", "d", "g_ema"):
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), (net, k)

    # Only rank 0 wrote: one run directory, each step logged once, one set of files.
    runs = glob.glob(str(outdir / "*"))
    assert [os.path.basename(p) for p in runs] == ["00000-tiny"]
    run_dir = runs[0]
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "stats.jsonl"))]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert sorted(os.listdir(run_dir)) == sorted(
        [".lock", "checkpoints", "config.yaml", "log.txt", "samples", "stats.jsonl", "summary.json"]
        + [n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents")])
    assert len([n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents")]) == 1
    log = open(os.path.join(run_dir, "log.txt")).read()
    assert log.count("starting run") == 1 and "world size 2" in log and "global batch 4" in log
    ckpt = load_training_checkpoint(os.path.join(run_dir, "checkpoints", "latest.pt"))
    assert ckpt["world_size"] == 2 and len(ckpt["pl_mean"]) == 2
    assert all(torch.equal(v, r0["g_ema"][k]) for k, v in ckpt["g_ema"].items())
