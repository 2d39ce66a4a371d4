"""Config schema, YAML includes, dotted overrides, --dry-run and the paper's defaults."""
import glob
import os

import pytest
import yaml

from training import cli
from training.config import (Config, ConfigError, ema_decay, from_dict, lazy_ratio, load_config,
                             parse_override)
from trainutil import REPO, tiny_dict, write_yaml


def test_defaults_are_the_papers():
    c = Config()
    assert (c.optim.lr, c.optim.beta1, c.optim.beta2) == (0.002, 0.0, 0.99)
    L = c.loss
    assert (L.r1_gamma, L.d_reg_every) == (10.0, 16)
    assert (L.path_weight, L.g_reg_every, L.path_batch_shrink) == (2.0, 4, 2)
    assert (L.lambda_id, L.lambda_lpips, L.lambda_attr, L.lambda_adv) == (0.1, 0.5, 0.1, 1.0)
    assert c.exemplar.self_prob == 0.2 and c.exemplar.per_sample is False
    assert c.mask.per_sample is True
    assert c.train.mixing == 0.5 and c.train.batch == 2  # the authors' train.py defaults
    assert c.train.diffaug is False and c.train.amp == "off"
    assert ema_decay(c) == 0.5 ** (32 / 10000)
    assert lazy_ratio(16) == 16 / 17 and lazy_ratio(4) == 4 / 5


def test_yaml_base_include_and_override_precedence(tmp_path):
    write_yaml(tmp_path / "base.yaml", {"model": {"size": 64}, "loss": {"lambda_id": 0.3},
                                         "train": {"batch": 2}})
    child = write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "loss": {"lambda_id": 0.4}})
    c = load_config(child, ["train.batch=8", "optim.lr=2e-3", "mask.per_sample=false",
                            "model.exemplar_slots=[2, 3]"])
    assert c.name == "child"                     # the file stem, not the base's
    assert c.model.size == 64                    # from the base
    assert c.loss.lambda_id == 0.4               # the child wins over the base
    assert c.train.batch == 8                    # the override wins over both
    assert c.optim.lr == 0.002 and isinstance(c.optim.lr, float)  # "2e-3" is a number
    assert c.mask.per_sample is False and c.model.exemplar_slots == [2, 3]
    assert c.loss.lambda_attr == 0.1             # untouched keys keep the defaults


@pytest.mark.parametrize("override, fragment", [
    ("loss.lambda_idd=0.1", "valid keys of loss are: lambda_adv, lambda_id"),
    ("bogus.x=1", "valid keys of the top level are: name, model"),
    ("train.batch=two", "train.batch must be an integer"),
    ("train.batch=0", "train.batch must be >= 1"),
    ("loss.d_reg_every=0", "loss.d_reg_every must be >= 1"),
    ("train.amp=fp8", "train.amp must be one of off, bf16"),
    ("train.modconv=fused", "train.modconv must be one of auto, grouped, batched"),
    ("lambda_id", "must look like section.key=value"),
])
def test_bad_overrides_are_one_clear_sentence(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(os.path.join(REPO, "configs", "demo.yaml"), [override])
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


def test_override_values_are_yaml_scalars():
    assert parse_override("a.b=0.1") == (["a", "b"], 0.1)
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a.b=null") == (["a", "b"], None)
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


def test_to_dict_round_trips_through_yaml():
    c = load_config(os.path.join(REPO, "configs", "ffhq_512_large_masks.yaml"), ["loss.lambda_id=0.2"])
    again = from_dict(yaml.safe_load(c.to_yaml()))
    assert again == c


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))))
def test_shipped_configs_load(path):
    c = load_config(path)
    assert c.name == os.path.splitext(os.path.basename(path))[0]
    if c.name != "demo":  # the paper settings read the released files under checkpoints/
        assert not c.pretrained.allow_random and not c.loss.allow_random_backbone
        assert c.pretrained.style_encoder == "checkpoints/psp_ffhq_encode.pt"
        assert c.pretrained.identity == "checkpoints/Arcface.pth"
        assert c.loss.lpips_vgg_path == "checkpoints/vgg16-397923af.pth"
        assert c.pretrained.inception == "checkpoints/pt_inception-2015-12-05-6726825d.pth"
        assert c.loss == Config().loss.__class__(lpips_vgg_path=c.loss.lpips_vgg_path)  # paper weights
    if c.name == "ffhq_512_large_masks":
        assert c.model.size == 512 and c.mask.kind == "large"


def test_dry_run_prints_the_resolved_config(capsys):
    rc = cli.main(["--config", os.path.join(REPO, "configs", "demo.yaml"), "--set", "train.iters=7",
                   "--dry-run", "--outdir", "/nonexistent/runs"])
    assert rc == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["iters"] == 7 and printed["log"]["outdir"] == "/nonexistent/runs"
    assert not os.path.exists("/nonexistent/runs")  # a dry run creates nothing


def test_cli_reports_user_errors_without_traceback(capsys):
    rc = cli.main(["--config", os.path.join(REPO, "configs", "demo.yaml"), "--set", "loss.nope=1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: Unknown config key 'loss.nope'") and "Traceback" not in err
    assert cli.main([]) == 2
    assert cli.main(["--resume", "/nonexistent/run"]) == 2


def test_missing_files_fail_before_a_run_directory_exists(face_dirs, tmp_path, capsys):
    # The paper config reads checkpoints/*.pt, which a fresh clone does not have.
    out = tmp_path / "runs"
    rc = cli.main(["--config", os.path.join(REPO, "configs", "celebahq_256.yaml"), "--outdir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "pretrained.style_encoder = 'checkpoints/psp_ffhq_encode.pt' does not exist" in err
    cfg_path = write_yaml(tmp_path / "tiny.yaml", tiny_dict(face_dirs, out))
    rc = cli.main(["--config", cfg_path, "--set", "data.train=/nonexistent/train"])
    assert rc == 2 and "data.train = '/nonexistent/train' does not exist" in capsys.readouterr().err
    assert not out.exists()


# -- every numeric key range-checked in one place ------------------------------------

@pytest.mark.parametrize("override, fragment", [
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("optim.d_lr=0", "optim.d_lr must be > 0"),
    ("optim.beta2=1", "optim.beta2 must be in [0, 1)"),
    ("train.iters=-5", "train.iters must be >= 1"),
    ("train.iters=0", "train.iters must be >= 1"),
    ("train.ema_kimg=-1", "train.ema_kimg must be >= 0"),
    ("eval.batch=0", "eval.batch must be >= 1"),
    ("train.threads=-3", "train.threads must be >= 0"),
    ("train.keep_last=0", "train.keep_last must be >= 1"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("model.channel_multiplier=0", "model.channel_multiplier must be > 0"),
    ("loss.path_decay=.nan", "loss.path_decay must be in [0, 1]"),
    ("exemplar.self_prob=1.5", "exemplar.self_prob must be in [0, 1]"),
    ("dist.timeout_min=0", "dist.timeout_min must be >= 1"),
    ("sketch.drop_prob=-0.1", "sketch.drop_prob must be in [0, 1]"),
    ("model.exemplar_slots=[4, 0]", "model.exemplar_slots must be null or [start, n]"),
])
def test_out_of_range_values_are_one_sentence_naming_the_key_also_under_dry_run(override, fragment,
                                                                                  tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        load_config(os.path.join(REPO, "configs", "demo.yaml"), [override])
    assert str(e.value).startswith(fragment) and "\n" not in str(e.value)
    out = tmp_path / "runs"
    rc = cli.main(["--config", os.path.join(REPO, "configs", "demo.yaml"), "--set", override,
                   "--outdir", str(out), "--dry-run"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err == f"error: {e.value}\n" and captured.out == ""
    assert not out.exists()


def test_every_numeric_key_of_the_schema_has_a_range():
    from training.configload import field_types as _field_types
    from training.validation import RANGES

    numeric = []
    for section, tp in _field_types(Config).items():
        if not hasattr(tp, "__dataclass_fields__"):
            continue
        for key, ktp in _field_types(tp).items():
            if ktp in (int, float) or str(ktp) in ("typing.Optional[int]", "typing.Optional[float]"):
                numeric.append(f"{section}.{key}")
    missing = sorted(set(numeric) - set(RANGES))
    assert not missing, f"add these numeric config keys to training.config.RANGES: {missing}"
    assert not set(RANGES) - set(numeric)                 # no stale entries
    load_config(os.path.join(REPO, "configs", "celebahq_256.yaml"))  # the defaults are in range


def test_random_lpips_backbone_needs_no_vgg_file(face_dirs, tmp_path):
    from training.pretrained import check_files

    # Real style encoder / identity files are not needed for this check: allow_random covers them
    # in tiny_dict; turn it off and give the loss its random trunk instead.
    d = tiny_dict(face_dirs, tmp_path / "runs", pretrained={"allow_random": False, "style_encoder": __file__,
                                                          "identity": __file__},
                  loss={"allow_random_backbone": True, "lpips_vgg_path": None})
    cfg = from_dict(d)
    check_files(cfg)  # before the fix: "loss.lpips_vgg_path = None does not exist"
    cfg.loss.allow_random_backbone = False
    with pytest.raises(ConfigError, match=r"^loss\.lpips_vgg_path is not set; point it at the released "
                                          r"vgg16-397923af\.pth .* or set loss\.allow_random_backbone=true"):
        check_files(cfg)


@pytest.mark.parametrize("overrides, fragment", [
    (["data.train=/data/mine_lmdb"], "data.train = '/data/mine_lmdb' is not read when data.kind is demo"),
    (["data.test=/data/test"], "data.test = '/data/test' is not read when data.kind is demo"),
    (["eval.mask_dir=/masks"], "eval.mask_dir = '/masks' is only read by the irregular and paired"),
    (["eval.exemplar_folder=/ex"], "eval.exemplar_folder = '/ex' is only read when eval.exemplar is folder"),
])
def test_a_setting_the_chosen_mode_ignores_is_an_error(overrides, fragment):
    # demo.yaml trains on the built-in faces: before the fix data.train was silently not read.
    with pytest.raises(ConfigError) as e:
        load_config(os.path.join(REPO, "configs", "demo.yaml"), overrides)
    assert str(e.value).startswith(fragment)


def test_demo_keys_with_folder_data_are_an_error(face_dirs, tmp_path):
    d = tiny_dict(face_dirs, tmp_path / "runs", data={"demo_train": 64})
    with pytest.raises(ConfigError, match=r"^data\.demo_train = 64 is only read when data\.kind is demo"):
        load_config(write_yaml(tmp_path / "c.yaml", d))
    # The demo config's own data.test (the demo test folder, for test.py --config) is consistent.
    assert load_config(os.path.join(REPO, "configs", "demo.yaml")).data.test == "data/demo_faces/test"
