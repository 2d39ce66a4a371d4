"""Train EXE-GAN (exemplar-guided facial inpainting, Lu et al., Neurocomputing 2025).

    python train.py --config configs/demo.yaml
    python train.py --config configs/celebahq_256.yaml --set train.batch=8
    torchrun --nproc_per_node=8 train.py --config configs/ffhq_256.yaml
    python train.py --resume runs/00003-ffhq_256

Thin entry point: everything lives in training/ (see docs/training.md).
"""
import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
