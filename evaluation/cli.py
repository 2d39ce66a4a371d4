"""Command line of test.py: argument parsing, settings resolution (flags, else the YAML
``--config``, else the config defaults; flags always win), the ``--pred`` / ``--gt`` scoring
mode, and the one-sentence report of user errors (exit status 2).

The evaluation itself lives in metrics/ (``metrics.testrun.run_test``,
``metrics.scoring.score_folders``, the loop ``metrics.eval_loop``); see docs/evaluation.md,
section "test.py". This package sits above metrics/ and training/ (a ``--config`` is read and
checked by ``training.config``, the schema train.py uses), so that neither of those imports the
other's command line.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import Optional, Sequence

from common.cli import DefaultsHelpFormatter
from common.errors import UserError, report
from datasets.errors import ProtocolError
from metrics.evaluator import DEFAULT_METRICS
from metrics.results import format_summary
from metrics.scoring import score_folders
from metrics.settings import TestSettings, settings_dict
from metrics.testrun import run_test
from training.config import Config, load_config

MASK_CHOICES = ("center", "free_form", "large", "irregular", "paired")
PAIR_BY_HELP = ("how file names pair across folders: {name} stands for the shared part, e.g. "
                "mask={name}_mask (x.png + x_mask.png) or gt={name}_real mask={name}_mask "
                "pred={name}_out (1_real.png + 1_mask.png + 1_out.png); default {name} (the same "
                "name, any extension)")
EXEMPLAR_CHOICES = ("reverse", "self", "folder")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="test.py", description="Evaluate an EXE-GAN checkpoint under the paper's protocol.",
        formatter_class=DefaultsHelpFormatter)
    f = p.add_argument_group("files")
    f.add_argument("--ckpt", help="generator: our checkpoint / export, or the authors' "
                                  "EXE_GAN_model_256.pt / a bare g_ema state dict")
    f.add_argument("--which", default="g_ema", help="entry of a training checkpoint to load")
    f.add_argument("--psp", help="pSp style encoder file (psp_ffhq_encode.pt)")
    f.add_argument("--data", help="test images: an image folder or an LMDB made by "
                                  "scripts/prepare_data.py")
    f.add_argument("--inception", help="FID Inception weights "
                                       "(pt_inception-2015-12-05-6726825d.pth)")
    f.add_argument("--lpips-vgg", help="torchvision VGG16 state dict for LPIPS (vgg16-397923af.pth)")
    f.add_argument("--config", help="YAML config (as for train.py): file paths and the eval section")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set data.test=...")
    f.add_argument("--pred", nargs="+", metavar="DIR",
                   help="score existing completions instead of running a checkpoint: one folder "
                        "per repeat, paired with --gt (and --masks DIR) by name")
    f.add_argument("--gt", help="with --pred: the ground-truth images (default: --data)")
    f.add_argument("--allow-subset", action="store_true",
                   help="with --pred: score completions of only part of the ground truth on "
                        "purpose (recorded in results.json); otherwise every ground-truth image "
                        "needs a completion")
    f.add_argument("--pair-by", nargs="+", default=[], metavar="ROLE=PATTERN",
                   help="roles image (alias gt), mask, exemplar, pred; "
                        + PAIR_BY_HELP.replace("%", "%%"))
    f.add_argument("--allow-random-pretrained", action="store_true",
                   help="TESTS / DEMO ONLY: random stand-ins for missing pSp / Inception / VGG "
                        "files (numbers are meaningless)")
    pr = p.add_argument_group("protocol")
    pr.add_argument("--masks", nargs="+", metavar="KIND [DIR]",
                    help="center | free_form | large | irregular DIR | paired DIR "
                         "(default: eval.mask of the config, else center)")
    pr.add_argument("--mask-seed", type=int, help="seed of the masks (default: --seed)")
    pr.add_argument("--hole-value", type=int, choices=(0, 1), default=1,
                    help="mask files: 1 = white is hole (NVIDIA), 0 = black is hole")
    pr.add_argument("--buckets", nargs="+", metavar="LABEL",
                    help="irregular masks: evaluate only these hole-ratio buckets (e.g. 20-30 30-40)")
    pr.add_argument("--exemplars", nargs="+", metavar="MODE [DIR]",
                    help="reverse | self | folder DIR (default: eval.exemplar, else reverse)")
    pr.add_argument("--repeats", type=int, default=1, help="repeats R (seeds seed..seed+R-1)")
    pr.add_argument("--seed", type=int, help="seed of z / noise (default: eval.seed, else 0)")
    pr.add_argument("--n-images", type=int, help="first N test images (default: all, or "
                                                 "eval.n_images of the config)")
    pr.add_argument("--batch", type=int, help="batch size (default: eval.batch, else 16); part of "
                                              "the protocol with reverse exemplars")
    pr.add_argument("--truncation", type=float, default=1.0, help="truncation psi")
    pr.add_argument("--metrics", nargs="+", metavar="M",
                    help="any of fid ids lpips psnr ssim l1 (the paper's columns, the default) "
                         "ssim_gauss11 l1_mean (other common definitions)")
    pr.add_argument("--fid-resize", choices=("pytorch_fid", "tf1"), default="pytorch_fid",
                    help="Inception input resize convention")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile the generator and the style encoder (a one-off compile, "
                        "then faster batches; equal up to float rounding; docs/benchmarks.md)")
    r.add_argument("--out", help="results directory (must not exist or be empty; default: a new "
                                 "runs/eval/<NNNNN>-<name>)")
    r.add_argument("--save-images", action="store_true",
                   help="also write the completed images and masks as PNG")
    r.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    r.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    return p


def _kind_and_dir(values, choices, flag: str):
    kind = values[0]
    if kind not in choices:
        raise ProtocolError(f"{flag} {kind!r} is not one of {', '.join(choices)}.")
    needs_dir = kind in ("irregular", "paired", "folder")
    if needs_dir and len(values) != 2:
        raise ProtocolError(f"{flag} {kind} needs a folder: {flag} {kind} DIR.")
    if not needs_dir and len(values) != 1:
        raise ProtocolError(f"{flag} {kind} takes no folder (got {values[1:]}).")
    return kind, (values[1] if needs_dir else None)


def _load_config(args):
    """The ``--config`` file with the ``--set`` overrides, read and checked by the schema
    train.py uses (None without either)."""
    if not args.config and not args.overrides:
        return None
    return load_config(args.config, args.overrides)


def resolve(args, argv=None):
    """TestSettings from the flags, the config and the defaults (flags win)."""
    cfg = _load_config(args)
    where = f"in {args.config}" if args.config else "from --set"
    sources = {}
    allow_random = bool(args.allow_random_pretrained or
                        (cfg is not None and getattr(cfg.pretrained, "allow_random", False)))
    files = _weight_files(args, cfg, where, sources, allow_random)
    data = _test_data(args, cfg, where, sources)
    if args.pred:
        return _resolve_scoring(args, argv, files, allow_random, data, sources)
    if args.gt:
        raise ProtocolError("--gt is the ground truth of --pred; without --pred give the test "
                            "images with --data.")
    if args.allow_subset:
        raise ProtocolError("--allow-subset only applies to --pred (scoring existing "
                            "completions); without --pred choose the images with --n-images.")
    ev = getattr(cfg, "eval", None) if cfg is not None else None

    def from_eval(key, default):
        value = getattr(ev, key, None) if ev is not None else None
        return default if value is None else value

    if args.masks:
        masks, mask_dir = _kind_and_dir(args.masks, MASK_CHOICES, "--masks")
    else:  # the config's names are the current ones (training.config rewrites old ones, warning)
        masks, mask_dir = from_eval("mask", "center"), None
    if args.exemplars:
        exemplars, exemplar_dir = _kind_and_dir(args.exemplars, EXEMPLAR_CHOICES, "--exemplars")
    else:
        exemplars, exemplar_dir = from_eval("exemplar", "reverse"), from_eval("exemplar_folder", None)
    if not math.isfinite(args.truncation):
        raise ProtocolError(f"--truncation must be a finite number, got {args.truncation}; psi = 1 is no "
                            f"truncation.")
    n_images, at_most = args.n_images, False
    if n_images is None and ev is not None and getattr(ev, "n_images", None) is not None:
        n_images, at_most = int(ev.n_images), True
    return TestSettings(
        ckpt=args.ckpt, data=data, psp=files["psp"], inception=files["inception"],
        lpips_vgg=files["lpips_vgg"], allow_random_pretrained=allow_random,
        masks=masks, mask_dir=mask_dir, hole_value=args.hole_value, buckets=args.buckets,
        mask_seed=args.mask_seed, exemplars=exemplars, exemplar_dir=exemplar_dir,
        repeats=args.repeats, seed=args.seed if args.seed is not None else int(from_eval("seed", 0)),
        n_images=n_images, n_images_at_most=at_most,
        batch=args.batch if args.batch is not None else int(from_eval("batch", 16)),
        device=args.device, truncation=args.truncation,
        metrics=list(args.metrics) if args.metrics else list(DEFAULT_METRICS),
        fid_resize=args.fid_resize, which=args.which, out=args.out,
        save_images=args.save_images, progress=not args.no_progress, config=args.config,
        compile=args.compile, pair_by=list(args.pair_by),
        command=["test.py"] + list(sys.argv[1:] if argv is None else argv), sources=sources)


#: The pretrained files of test.py: key -> (flag, config section, config key).
WEIGHT_FILES = {"psp": ("--psp", "pretrained", "style_encoder"),
                "inception": ("--inception", "pretrained", "inception"),
                "lpips_vgg": ("--lpips-vgg", "loss", "lpips_vgg_path")}


def _weight_files(args, cfg, where: str, sources: dict, allow_random: bool) -> dict:
    """{psp, inception, lpips_vgg}: each the flag, else the config value, else the schema default;
    with stand-ins allowed, a default location that holds no file means "not given". Records in
    ``sources`` where each came from."""
    d = Config()
    files = {}
    for key, (flag, section, name) in WEIGHT_FILES.items():
        default = getattr(getattr(d, section), name)
        value = getattr(args, key)
        if value is not None:
            sources[key] = flag
        else:
            value = getattr(getattr(cfg, section, None), name, None) if cfg else None
            if value is not None:
                sources[key] = f"{section}.{name} {where} (or pass {flag})"
            else:
                value = default
                if default is not None:
                    sources[key] = f"default of {section}.{name} (pass {flag})"
        if allow_random and value is not None and value == default and getattr(args, key) is None \
                and not os.path.isfile(value):
            value = None
        files[key] = value
    return files


def _test_data(args, cfg, where: str, sources: dict):
    """The test images: --data, else the config's demo faces or data.test."""
    sources["data"] = "--data"
    if args.data is not None or cfg is None:
        return args.data
    if getattr(cfg.data, "kind", "folder") == "demo":
        sources["data"] = f"the demo faces of data.demo_* {where}"
        return _demo_test_folder(cfg)
    sources["data"] = f"data.test {where} (or pass --data)"
    return getattr(cfg.data, "test", None)


def _resolve_scoring(args, argv, files, allow_random, data, sources):
    """TestSettings of ``--pred`` (score existing completions): no model, no protocol flags."""
    unused = [flag for flag, value in (("--ckpt", args.ckpt), ("--psp", args.psp),
                                       ("--exemplars", args.exemplars), ("--seed", args.seed),
                                       ("--mask-seed", args.mask_seed),
                                       ("--buckets", args.buckets), ("--compile", args.compile),
                                       ("--save-images", args.save_images))
              if value not in (None, False)]
    if args.repeats != 1:
        unused.append("--repeats")
    if unused:
        raise ProtocolError(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no "
                            f"effect with --pred (the completions exist; each --pred folder is "
                            f"one repeat); drop {'it' if len(unused) == 1 else 'them'}.")
    mask_dir = None
    if args.masks:
        values = list(args.masks)
        if values[0] == "paired":
            values = values[1:]
        if len(values) != 1 or values[0] in MASK_CHOICES:
            raise ProtocolError("With --pred, --masks takes the folder of the completions' masks "
                                "(--masks DIR, paired by name); generated masks cannot be "
                                "recovered from finished images.")
        mask_dir = values[0]
    gt = args.gt if args.gt is not None else (args.data if args.data is not None else data)
    sources["data"] = "--gt"
    return TestSettings(
        ckpt=None, data=gt, inception=files["inception"], lpips_vgg=files["lpips_vgg"],
        allow_random_pretrained=allow_random, masks="paired" if mask_dir else "none",
        mask_dir=mask_dir, hole_value=args.hole_value, n_images=args.n_images,
        batch=args.batch if args.batch is not None else 16, device=args.device,
        metrics=list(args.metrics) if args.metrics else list(DEFAULT_METRICS),
        fid_resize=args.fid_resize, out=args.out, progress=not args.no_progress,
        config=args.config, pair_by=list(args.pair_by), pred=list(args.pred),
        allow_subset=args.allow_subset,
        command=["test.py"] + list(sys.argv[1:] if argv is None else argv), sources=sources)


def _demo_test_folder(cfg) -> str:
    """The demo faces' test split, generated on first use (the folder train.py uses)."""
    from datasets.demo import make_demo_faces  # reason: the demo's drawing code, only for data.kind demo
    d, size = cfg.data, cfg.model.size
    root = os.path.join(d.demo_root, f"{size}px-n{d.demo_train}-t{d.demo_test}-seed{d.demo_seed}")
    make_demo_faces(root, d.demo_train, size, d.demo_seed, n_test=d.demo_test)
    return os.path.join(root, "test")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("exegan.test").setLevel(logging.INFO)
    try:
        settings = resolve(args, argv)
        if args.dry_run:
            print(json.dumps(settings_dict(settings), indent=2))
            return 0
        out_dir, result = score_folders(settings) if settings.pred else run_test(settings)
    except UserError as e:
        return report(e)
    print(format_summary(result))
    print(f"results: {os.path.join(out_dir, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
