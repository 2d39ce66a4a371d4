"""The newcomer docs say what the code does: weight files and their sources, exit statuses and the
stop message of train.py, the sketch fine-tune being part of the training loop."""
import glob
import os
import re

from training import cli
from training.config import load_config
from training.signals import STOP_MESSAGE
from trainutil import REPO


def _read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def _weight_rows(text):
    """{file name: table row} of the README's "Weight files" table."""
    section = text.split("### Weight files", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)`", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_readme_names_the_source_and_size_of_every_weight_file_the_configs_read():
    rows = _weight_rows(_read("README.md"))
    named = {"EXE_GAN_model_256.pt", "psp_ffhq_encode.pt", "Arcface.pth"}
    for path in glob.glob(os.path.join(REPO, "configs", "*.yaml")):
        c = load_config(path)
        if not c.pretrained.allow_random:
            named |= {os.path.basename(p) for p in (c.pretrained.style_encoder, c.pretrained.identity,
                                                    c.pretrained.inception, c.loss.lpips_vgg_path)}
    covered = {}
    for key, row in rows.items():
        for name in key.split("` / `"):
            covered[name] = row
    assert named <= set(covered), named - set(covered)
    for name in named:
        cells = [c.strip() for c in covered[name].strip("|").split("|")]
        assert len(cells) == 5 and cells[2] and cells[3], covered[name]  # source and size filled in
    ck = _read("checkpoints", "README.md")
    assert all(name in ck for name in named)


def test_training_doc_gives_the_exit_statuses_and_the_stop_message_the_code_uses():
    doc = _read("docs", "training.md")
    assert (cli.EXIT_FINISHED, cli.EXIT_STOPPED, cli.EXIT_ABORTED) == (0, 75, 130)
    for status in (cli.EXIT_FINISHED, cli.EXIT_STOPPED, cli.EXIT_ABORTED, 2):
        assert re.search(rf"^\| {status} \| ", doc, re.M), status
    assert STOP_MESSAGE in doc
    assert "exits\nwith status 0" not in doc and "status 0 (a second" not in doc


def test_applications_doc_no_longer_says_the_sketch_finetune_is_unwired():
    doc = _read("docs", "applications.md")
    assert "not wired" not in doc
    assert "python train.py --config configs/sketch_finetune.yaml" in doc


def test_training_doc_describes_best_and_g_ema_files_as_the_checkpoint_manager_writes_them():
    from training.checkpointing import CheckpointManager
    from training.run import _better

    doc = _read("docs", "training.md")
    # Names the code writes ...
    assert CheckpointManager("/x").path(5000).endswith("ckpt-0005000.pt") and "ckpt-0005000.pt" in doc
    assert "g_ema-0005000.pt" in doc and "export.pt" in doc and "train.keep_last" in doc
    # ... and the direction of every metric the doc calls higher-is-better.
    higher = re.search(r"lower is better, except ([^;]+);", doc).group(1)
    for metric in re.findall(r"`(\w+)`", higher):
        assert _better(metric, 2.0, 1.0), metric
    assert not _better("fid", 2.0, 1.0) and not _better("lpips", 2.0, 1.0)
    # The doc's list is the code's whole list (a similarity metric missing from it would make
    # best.pt keep the worst checkpoint).
    from metrics.evaluator import HIGHER_IS_BETTER
    assert set(re.findall(r"`(\w+)`", higher)) == set(HIGHER_IS_BETTER)
