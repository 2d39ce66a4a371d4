"""EXE-GAN networks (Lu et al., Neurocomputing 2025): the multi-style generator and discriminator
(StyleGAN2 blocks), the pSp style encoder, the identity backbone, checkpoint loading for ours and
the authors' files, and the inference wrapper. See docs/models.md."""
from models.checkpoint import (CheckpointError, CheckpointMismatchError, UnsafeCheckpointError,
                               load_discriminator, load_generator, make_checkpoint, safe_load,
                               save_checkpoint)
from models.discriminator import Discriminator
from models.exegan import EXEGAN, InputError
from models.generator import Generator, default_exemplar_slots
from models.identity import IdentityNet, load_identity_net
from models.irse import WeightsFileError
from models.psp import StyleEncoder, load_style_encoder

__all__ = [
    "Generator", "Discriminator", "default_exemplar_slots",
    "StyleEncoder", "load_style_encoder", "IdentityNet", "load_identity_net", "WeightsFileError",
    "EXEGAN", "InputError",
    "safe_load", "load_generator", "load_discriminator", "make_checkpoint", "save_checkpoint",
    "CheckpointError", "CheckpointMismatchError", "UnsafeCheckpointError",
]
