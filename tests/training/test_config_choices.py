"""Every check before the first step and under --dry-run: enumerations are typed choices in one
table (CHOICES) whose error lists the valid values; mask options, exemplar slots and the eval
protocol's files are checked at start-up, not at the first evaluation."""
import os

import pytest

from training import cli
from training.config import CHOICES, ConfigError, choices_of, load_config
from training.run import run
from trainutil import REPO, tiny_config

DEMO = os.path.join(REPO, "configs", "demo.yaml")


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_error_lists_the_valid_values(key):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [f"{key}=bogus"])
    msg = str(e.value)
    assert msg.startswith(f"{key} must be one of ") and msg.endswith(", got 'bogus'.")
    assert all(v in msg for v in choices_of(key)) and "\n" not in msg


@pytest.mark.parametrize("override, fragment", [
    ("eval.mask=centre", "eval.mask must be one of center, free_form, large, irregular, paired"),
    ("eval.exemplar=reversed", "eval.exemplar must be one of reverse, self, folder"),
    ("mask.kind=blobs", "mask.kind must be one of free_form, center, large"),
    ("mask.options={hole_rnge: [0.1, 0.3]}",
     "mask.options has unknown key(s) hole_rnge for mask.kind free_form; its options are hole_range"),
    ("mask.options={hole_range: [0.9, 0.1]}", "mask.options"),
    ("model.exemplar_slots=[4, 5]", "start + n <= 8 (the w slots at model.size 32), got [4, 5]"),
    ("eval.mask=irregular", "eval.mask irregular reads mask files: set eval.mask_dir"),
    ("eval.exemplar=folder", "eval.exemplar folder reads exemplar images: set eval.exemplar_folder"),
])
def test_dry_run_refuses_what_used_to_fail_at_the_first_step_or_evaluation(override, fragment, capsys):
    assert cli.main(["--config", DEMO, "--set", override, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_eval_mask_files_are_checked_before_the_first_step(face_dirs, tmp_path):
    empty = tmp_path / "no_masks"
    empty.mkdir()
    cfg = tiny_config(face_dirs, tmp_path / "runs", eval={"every": 1000, "mask": "irregular",
                                                          "mask_dir": str(empty)})
    with pytest.raises(Exception) as e:
        run(cfg)
    assert "Traceback" not in str(e.value) and str(empty) in str(e.value)
    from common.errors import UserError
    assert isinstance(e.value, UserError)
    assert not os.path.exists(tmp_path / "runs" / "00000-tiny")  # nothing trained, nothing left


def test_under_torchrun_every_rank_stops_on_rank_0s_refusal(face_dirs, tmp_path):
    import subprocess

    from trainutil import PYTHON, python_env, tiny_dict, write_yaml
    empty = tmp_path / "no_masks"
    empty.mkdir()
    cfg = tiny_dict(face_dirs, tmp_path / "runs", train={"batch": 2},
                    eval={"every": 1000, "mask": "irregular", "mask_dir": str(empty)},
                    dist={"timeout_min": 5})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           "--config", cfg_path]
    # Without the broadcast, rank 1 would wait in the first step for dist.timeout_min.
    proc = subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=240)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:") and str(empty) in line]
    assert len(errors) == 2, proc.stderr[-3000:]  # one sentence from each rank
    assert not os.path.exists(tmp_path / "runs" / "00000-tiny")


def test_old_value_names_warn_and_resolve_to_the_current_ones():
    """mask.kind / eval.mask "mixed" is the old name of free_form: read, never silently (one
    FutureWarning naming the new name), and resolved, so config.yaml holds the current name."""
    import warnings

    from datasets.mask_generators import FreeFormMasks
    from datasets.masks import make_mask_generator

    for key in ("mask.kind", "eval.mask"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            cfg = load_config(DEMO, [f"{key}=mixed"])
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == "free_form"
        assert [str(w.message) for w in seen if issubclass(w.category, FutureWarning)] == [
            f"{key}: 'mixed' is the old name of 'free_form' (the same setting); write 'free_form'."]
    with pytest.warns(FutureWarning, match="'mixed' is the old name of 'free_form'"):
        assert isinstance(make_mask_generator("mixed"), FreeFormMasks)
