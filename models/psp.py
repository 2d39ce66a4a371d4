"""The frozen pSp style encoder that gives EXE-GAN its exemplar style codes.

EXE-GAN (Lu et al., Neurocomputing 2025, Sec. 3.1 and 3.3) encodes the exemplar face with the
pretrained pSp ``GradualStyleEncoder`` (Richardson et al., CVPR 2021) on an IR-SE50 backbone; its
codes replace the generator's style slots [start, start + n), and the attribute loss compares the
codes of the completed image and of the exemplar. The encoder is never trained: it is always in
``eval()`` mode with frozen parameters, but gradients flow through it to its input.

Architecture (docs/encoders.md), top-down:

    img [B,3,H,W] in [-1,1]  --bilinear (align_corners=True) to 256x256 if needed (no ImageNet norm)
    input_layer, body (IR-SE50, models/irse.py)
        taps after body units 6, 20, 23: c1 [B,128,64,64], c2 [B,256,32,32], c3 [B,512,16,16]
    styles 0-2   on c3                                             (16x16)
    p2 = up(c3) + latlayer1(c2);  styles 3-6  on p2               (32x32)
    p1 = up(p2) + latlayer2(c1);  styles 7-17 on p1               (64x64)
        up = bilinear, align_corners=True; latlayer = Conv1x1 -> 512 with bias
    each style head: log2(spatial) x [Conv3x3 stride 2 + LeakyReLU(0.01)], EqualLinear(512, 512)
        (the pyramid has the last stage's channels, 8 * width = 512; heads output style_dim = 512)
    codes = heads + latent_avg                                   [B, 18, 512]

``latent_avg`` (the pSp file's average latent, [18, 512]) is a non-persistent buffer, so the
module's state dict holds exactly the keys of the released encoder (tests/data/
psp_encoder_ir_se50.keys.txt). ``width``, ``units``, ``style_dim`` and ``input_size`` shrink the
network for tests and the demo; ``load_style_encoder`` infers them from a file's tensors.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from models.irse import (IRSE50_UNITS, WeightsFileError, freeze, infer_irse_config, load_strict,
                         make_body, make_input_layer, read_weights_file, stage_end_indices,
                         stage_depths)
from models.stylegan2 import EqualLinear

COARSE_END = 3   # heads [0, 3) read the 16x16 map
MIDDLE_END = 7   # heads [3, 7) read the 32x32 map, the rest the 64x64 map
CONFIG_KEY = "pretrained.style_encoder"
RELEASED_FILE = "psp_ffhq_encode.pt"


class GradualStyleBlock(nn.Module):
    """One style head: halve the map log2(spatial) times down to 1x1, then an equalized linear.

    Keys: ``convs.<2k>.weight/bias`` (the odd indices are the parameter-free LeakyReLUs),
    ``linear.weight/bias``.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        n_down = int(round(math.log2(spatial)))
        if n_down < 1 or 2 ** n_down != spatial:
            raise ValueError(f"style head spatial size must be a power of two >= 2, got {spatial}.")
        layers: list[nn.Module] = []
        for i in range(n_down):
            # nn.LeakyReLU() keeps PyTorch's default slope 0.01, as pSp does.
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3,
                                 stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)                  # [B, C, 1, 1]
        return self.linear(x.flatten(1))   # [B, C]


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Feature-pyramid merge: bilinear upsampling of x (align_corners=True) to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class StyleEncoder(nn.Module):
    """pSp GradualStyleEncoder (IR-SE50), frozen and always in eval mode.

    ``forward(img)`` -> codes of heads [start, start + n) plus ``latent_avg[start:start + n]``,
    [B, n, style_dim]; ``all_codes(img, n_latent)`` -> heads [0, n_latent) plus latent_avg.
    The defaults are the released network (start 4, n 10 = the 256 generator's exemplar slots).
    """

    def __init__(self, *, start: int = 4, n: int = 10, n_styles: int = 18, style_dim: int = 512,
                 width: int = 64, units: Sequence[int] = IRSE50_UNITS, input_size: int = 256):
        super().__init__()
        if input_size % 16 or input_size < 32:
            raise ValueError(f"input_size must be a multiple of 16 and >= 32, got {input_size}.")
        if n_styles < 1:
            raise ValueError(f"n_styles must be positive, got {n_styles}.")
        self.n_styles = int(n_styles)
        self.style_dim = int(style_dim)
        self.width = int(width)
        self.units = tuple(int(u) for u in units)
        self.input_size = int(input_size)
        self.set_slots(start, n)
        # Body units whose outputs feed the pyramid: the last units of stages 2, 3 and 4.
        _, self.tap_fine, self.tap_middle, self.tap_coarse = stage_end_indices(self.units)

        self.input_layer = make_input_layer(self.width)
        self.body = make_body(self.width, self.units)
        # The pyramid keeps the last stage's channel count (512); in the released network that
        # equals style_dim, tiny test encoders may differ.
        depths = stage_depths(self.width)
        coarse = self.input_size // 16     # 16 at 256 px: spatial size of the last stage
        self.styles = nn.ModuleList()
        for i in range(self.n_styles):
            spatial = coarse if i < COARSE_END else 2 * coarse if i < MIDDLE_END else 4 * coarse
            self.styles.append(GradualStyleBlock(depths[3], self.style_dim, spatial))
        self.latlayer1 = nn.Conv2d(depths[2], depths[3], 1)   # 256 -> 512, tap 20
        self.latlayer2 = nn.Conv2d(depths[1], depths[3], 1)   # 128 -> 512, tap 6
        self.register_buffer("latent_avg", torch.zeros(self.n_styles, self.style_dim), persistent=False)

        freeze(self)
        self.eval()

    # -- configuration ------------------------------------------------------------------------
    def set_slots(self, start: int, n: int) -> None:
        """Choose which heads ``forward`` returns: [start, start + n)."""
        if start < 0 or n < 1 or start + n > self.n_styles:
            raise ValueError(f"exemplar slots [{start}, {start + n}) do not fit the encoder's "
                             f"{self.n_styles} style heads.")
        self.start, self.n = int(start), int(n)

    @property
    def n_exemplar(self) -> int:
        return self.n

    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Copy the pSp file's average latent [n_styles, style_dim] into the buffer."""
        latent_avg = torch.as_tensor(latent_avg)
        if latent_avg.dim() == 3 and latent_avg.shape[0] == 1:  # some pSp files store [1, 18, 512]
            latent_avg = latent_avg[0]
        if tuple(latent_avg.shape) != tuple(self.latent_avg.shape):
            raise ValueError(f"latent_avg must have shape {tuple(self.latent_avg.shape)}, "
                             f"got {tuple(latent_avg.shape)}.")
        self.latent_avg.copy_(latent_avg.to(self.latent_avg))

    def train(self, mode: bool = True) -> "StyleEncoder":
        # Frozen network: batch-norm must keep using its running statistics, whatever the caller
        # (e.g. G.train() on a parent module) asks for.
        return super().train(False)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Exemplar codes [B, n, style_dim] for slots [start, start + n)."""
        return self._codes(img, self.start, self.start + self.n)

    def all_codes(self, img: torch.Tensor, n_latent: int | None = None) -> torch.Tensor:
        """Codes of heads [0, n_latent) plus latent_avg[0:n_latent]: [B, n_latent, style_dim]."""
        n_latent = self.n_styles if n_latent is None else int(n_latent)
        if not 1 <= n_latent <= self.n_styles:
            raise ValueError(f"n_latent must be in [1, {self.n_styles}], got {n_latent}.")
        return self._codes(img, 0, n_latent)

    def _codes(self, img: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        heads = self.heads(img, lo, hi)                                       # [B, hi-lo, D]
        return heads + self.latent_avg[lo:hi].unsqueeze(0).to(heads.dtype)

    def heads(self, img: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Raw head outputs [B, hi - lo, style_dim] (no latent_avg); only the needed maps run."""
        hi = self.n_styles if hi is None else hi
        if not 0 <= lo < hi <= self.n_styles:
            raise ValueError(f"head range [{lo}, {hi}) is not inside [0, {self.n_styles}).")
        x = self._prepare(img)
        x = self.input_layer(x)
        c1 = c2 = c3 = None
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self.tap_fine:
                c1 = x        # [B, 128, 64, 64]
            elif i == self.tap_middle:
                c2 = x        # [B, 256, 32, 32]
            elif i == self.tap_coarse:
                c3 = x        # [B, 512, 16, 16]
        out = []
        if hi > COARSE_END:
            p2 = _upsample_add(c3, self.latlayer1(c2))
        if hi > MIDDLE_END:
            p1 = _upsample_add(p2, self.latlayer2(c1))
        for j in range(lo, hi):
            feature = c3 if j < COARSE_END else p2 if j < MIDDLE_END else p1
            out.append(self.styles[j](feature))
        return torch.stack(out, dim=1)

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"StyleEncoder expects images [B, 3, H, W] in [-1, 1], got {tuple(img.shape)}.")
        if img.shape[-2:] != (self.input_size, self.input_size):
            img = F.interpolate(img, size=(self.input_size, self.input_size), mode="bilinear",
                                align_corners=True)
        return img


# ----------------------------------------------------------------------------------------------
# Loading the released pSp file.

def style_encoder_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Infer the StyleEncoder constructor arguments from an (un-prefixed) encoder state dict."""
    width, units = infer_irse_config(state_dict)
    n_styles = 0
    while f"styles.{n_styles}.linear.weight" in state_dict:
        n_styles += 1
    n_down = 0
    while f"styles.0.convs.{2 * n_down}.weight" in state_dict:
        n_down += 1
    if n_styles == 0 or n_down == 0:
        raise ValueError("no style heads found")
    return dict(n_styles=n_styles, style_dim=int(state_dict["styles.0.linear.weight"].shape[0]),
                width=width, units=units, input_size=16 * 2 ** n_down)


def load_style_encoder(path: str | os.PathLike | None, start: int = 4, n: int = 10,
                       device: torch.device | str = "cpu", *, mapped: bool = False) -> StyleEncoder:
    """Build the frozen StyleEncoder from a pSp file (e.g. the released ``psp_ffhq_encode.pt``).

    The file is a dict with ``opts`` (a dict), ``state_dict`` (encoder keys prefixed ``encoder.``;
    ``decoder.`` keys are ignored) and ``latent_avg`` [n_styles, 512]. The architecture is read
    from the tensors (so tiny test encoders load too) and the weights load strictly.

    ``mapped`` (inference): the weights stay mapped from the file instead of being copied into
    memory - the released encoder is 1.07 GB of float32, and an exemplar only ever reads the trunk
    and the heads of the generator's exemplar slots (10 of 18 at 256 px), so the other heads are
    never read from disk, and loading does not hold two copies at once. Same values, bit for bit.
    """
    what = "pSp style encoder"
    ckpt = read_weights_file(path, what=what, config_key=CONFIG_KEY, expected_file=RELEASED_FILE,
                             mmap=mapped)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} is not a pSp checkpoint (expected a dict with "
            f"'opts', 'state_dict' and 'latent_avg', like {RELEASED_FILE}); check `{CONFIG_KEY}`.")
    prefix = "encoder."
    encoder_sd = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not encoder_sd:
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} has no 'encoder.' weights in its state_dict; "
            f"expected a pSp checkpoint like {RELEASED_FILE}.")
    if "latent_avg" not in ckpt or not torch.is_tensor(ckpt["latent_avg"]):
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} has no 'latent_avg' tensor; EXE-GAN adds it to the "
            f"codes, so use a pSp checkpoint trained with start_from_latent_avg like {RELEASED_FILE}.")
    try:
        config = style_encoder_config(encoder_sd)
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} does not hold a GradualStyleEncoder with an IR-SE "
            f"backbone ({type(exc).__name__}: {exc}); expected {RELEASED_FILE}.") from None
    if start + n > config["n_styles"]:
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} has {config['n_styles']} style heads, too few for the "
            f"exemplar slots [{start}, {start + n}).")
    if mapped:  # no memory for weights that the file's tensors replace
        with torch.device("meta"):
            encoder = StyleEncoder(start=start, n=n, **config)
        load_strict(encoder, encoder_sd, path=path, what=what, assign=True)
        encoder.register_buffer("latent_avg", torch.zeros(encoder.n_styles, encoder.style_dim),
                                persistent=False)
        freeze(encoder)
    else:
        encoder = StyleEncoder(start=start, n=n, **config)
        load_strict(encoder, encoder_sd, path=path, what=what)
    try:
        encoder.set_latent_avg(ckpt["latent_avg"])
    except ValueError as exc:
        raise WeightsFileError(f"{what} file {os.fspath(path)!r}: {exc}") from None
    return encoder.to(device)
