"""Evaluate EXE-GAN (Lu et al., Neurocomputing 2025): the paper's protocol, section 4.

    python test.py --ckpt checkpoints/EXE_GAN_model_256.pt --psp checkpoints/psp_ffhq_encode.pt \\
        --data data/celebahq/test --n-images 2000 --masks center --exemplars reverse --repeats 3
    python test.py --config configs/celebahq_256.yaml --ckpt runs/00003-celebahq_256/checkpoints/best.pt \\
        --masks irregular data/irregular_masks --repeats 3
    python test.py --pred results/r0 results/r1 results/r2 --gt data/celebahq/test --masks masks/ \\
        --inception ... --lpips-vgg ...          # score completions that already exist

Completed images vs ground truth: FID, U-IDS, P-IDS, LPIPS, PSNR, SSIM, L1 (+ L1 / PSNR inside
the hole), mean ± std over repeats, per mask bucket. Writes results.json (with the protocol
record: weights hashes, masks, exemplars, seeds, versions), results.csv and pairs.csv to a fresh
directory (``--out``, default runs/eval/<NNNNN>-<name>). Thin entry point: the command line lives
in evaluation/cli.py, the protocol in metrics/ (see docs/evaluation.md, section "test.py").

File settings come from the flags, else from the YAML ``--config`` (``pretrained.style_encoder``,
``pretrained.inception``, ``loss.lpips_vgg_path``, ``data.test``; the evaluation settings from its
``eval`` section), else from the config defaults under checkpoints/. Flags always win.
"""
import sys

from evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
