"""Sketch-guided editing for EXE-GAN: a generator with one extra input channel holding a sketch
(an edge map) inside the hole.

This is an *application* built on top of the paper's model (Lu et al., Neurocomputing 2025,
Sec. 3.1), not part of the paper's method: a trained EXE-GAN is fine-tuned with

    gin = cat(image * (1 - mask), mask - 0.5, sketch * mask)         # [B, 5, S, S]

where, during the fine-tune, ``sketch`` is the edge map of the ground truth (:func:`extract_edges`)
and, at inference, the user's strokes. Only the image encoder's first layer ``down_from_big`` (a
1x1 conv) changes: it gains one input channel whose weights start at **zero**, so the upgraded
network computes exactly what the trained one computed, bit for bit, until the fine-tune moves
those weights (:func:`upgrade_generator`).

Pieces:

* :class:`SketchGenerator` — a :class:`models.Generator` whose ``down_from_big`` reads 4 + 1
  channels. ``forward`` takes a 5-channel gin (``sketch_gin``) or the usual 4-channel one, which
  means "no strokes" (or the strokes set with :meth:`SketchGenerator.sketch_input`).
* :func:`upgrade_generator` — a trained Generator -> SketchGenerator with zero sketch weights.
* :func:`extract_edges` — Canny-like edges of training images (torch, deterministic).
* :func:`sketch_gin` — the 5-channel generator input.
* :func:`load_sketch_generator` / :class:`SketchEXEGAN` — loading a fine-tuned file and inference
  (``inpaint(..., sketch=...)``), used by ``scripts/inpaint.py --sketch``.

The fine-tune's config section is ``training.config.SketchConfig``; the loop's side of it is
``training/sketch.py`` (an add-on a plain training run never imports).

Sketch convention (tensors): float [B, 1, S, S] in [0, 1], **1 = stroke / edge**, 0 = nothing;
only its hole part is used. (PNG files: see ``scripts/inpaint.py`` and docs/applications.md.)
"""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointError, CheckpointMismatchError, safe_load
from models.checkpoint_arch import infer_generator_arch
from models.exegan import EXEGAN, InputError, make_gin
from models.generator import Generator
from models.psp import load_style_encoder
from models.stylegan2 import EqualConv2d
from op import conv2d_gradfix

#: Extra input channels of the sketch generator (one sketch / edge map).
SKETCH_CHANNELS = 1
#: Channels of the usual generator input cat(image * (1 - mask), mask - 0.5).
BASE_CHANNELS = 4


# ---------------------------------------------------------------------------------------- network
class SketchInputConv(nn.Module):
    """``down_from_big``'s 1x1 equalized-lr conv with extra input channels appended.

    The weight is one tensor [C, 4 + k, 1, 1] (state-dict key ``down_from_big.0.weight``), but the
    forward pass convolves the first 4 input channels and the extra ones separately and adds the
    two: with zero extra weights the second term is exactly 0, so the output equals the base
    layer's bit for bit (a single 5-channel conv could sum in another order).

    DEVIATION from a fresh ``EqualConv2d(4 + k, ...)``: the equalized-lr scale stays the base
    layer's 1/sqrt(4 * 1 * 1), so the trained weights keep their meaning; the sketch column uses
    the same scale, i.e. the same effective learning rate as the others.
    """

    def __init__(self, base: EqualConv2d, extra: int = SKETCH_CHANNELS):
        super().__init__()
        w = base.weight.detach()
        self.base_in = int(w.shape[1])
        self.extra = int(extra)
        self.weight = nn.Parameter(torch.cat(
            [w.clone(), w.new_zeros(w.shape[0], self.extra, *w.shape[2:])], 1))
        self.scale = base.scale
        self.stride, self.padding = base.stride, base.padding
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.base_in
        w = self.weight * self.scale
        # Same call, shapes and memory layout as the base EqualConv2d on a 4-channel gin.
        out = conv2d_gradfix.conv2d(x[:, :n].contiguous(), w[:, :n].contiguous(), bias=self.bias,
                                    stride=self.stride, padding=self.padding)
        return out + conv2d_gradfix.conv2d(x[:, n:].contiguous(), w[:, n:].contiguous(),
                                           stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{self.base_in}+{self.extra}, {o}, kernel_size={k}"


class SketchGenerator(Generator):
    """EXE-GAN generator with a sketch input channel (same arguments as :class:`Generator`).

    ``forward(gin, codes, styles, ...)`` takes ``gin`` [B, 5, S, S] from :func:`sketch_gin`, or a
    plain [B, 4, S, S] gin (then the sketch is the one set by :meth:`sketch_input`, else empty).
    The sketch channel is multiplied by the hole (read from gin's mask channel) in every case, so
    strokes outside the hole are ignored. Built from scratch, the base weights are drawn exactly
    as ``Generator`` draws them (same seed -> same weights) and the sketch column is zero.
    """

    def __init__(self, *args, sketch_channels: int = SKETCH_CHANNELS, **kwargs):
        super().__init__(*args, **kwargs)
        if sketch_channels < 1:
            raise ValueError(f"sketch_channels must be >= 1, got {sketch_channels}.")
        self.sketch_channels = int(sketch_channels)
        # Replace the conv inside the ConvLayer (keys stay down_from_big.0.weight / .1.bias).
        self.down_from_big[0] = SketchInputConv(self.down_from_big[0], self.sketch_channels)
        self.kwargs["sketch_channels"] = self.sketch_channels
        self._pending_sketch: Optional[torch.Tensor] = None

    @property
    def sketch_weight(self) -> torch.Tensor:
        """The sketch column of ``down_from_big`` [C, sketch_channels, 1, 1]."""
        return self.down_from_big[0].weight[:, BASE_CHANNELS:]

    @contextlib.contextmanager
    def sketch_input(self, sketch: Optional[torch.Tensor]) -> Iterator[None]:
        """Within the block, a 4-channel gin is completed with ``sketch`` [B or 1, k, S, S].

        Lets code that builds the usual gin itself (``EXEGAN.complete``) drive the sketch channel.
        """
        previous = self._pending_sketch
        self._pending_sketch = sketch
        try:
            yield
        finally:
            self._pending_sketch = previous

    def _full_gin(self, gin: torch.Tensor) -> torch.Tensor:
        k = self.sketch_channels
        if gin.shape[1] == BASE_CHANNELS:
            b, _, h, w = gin.shape
            sk = self._pending_sketch
            if sk is None:
                sk = gin.new_zeros(b, k, h, w)
            else:
                sk = sk.to(gin)
                if sk.ndim != 4 or sk.shape[1] != k or tuple(sk.shape[2:]) != (h, w) or sk.shape[0] not in (1, b):
                    raise ValueError(f"the sketch must be [{b} or 1, {k}, {h}, {w}], got {list(sk.shape)}.")
                sk = sk.expand(b, -1, -1, -1)
            gin = torch.cat([gin, sk], 1)
        hole = (gin[:, BASE_CHANNELS - 1:BASE_CHANNELS] > 0).to(gin)  # mask - 0.5 > 0 <=> hole
        return torch.cat([gin[:, :BASE_CHANNELS], gin[:, BASE_CHANNELS:] * hole], 1)

    def _check_inputs(self, gin: torch.Tensor, codes: torch.Tensor, styles) -> None:
        want = (BASE_CHANNELS, BASE_CHANNELS + self.sketch_channels)
        if gin.ndim != 4 or gin.shape[1] not in want:
            s = self.size
            raise ValueError(f"gin must be [B, {want[1]}, {s}, {s}] (sketch_gin) or [B, 4, {s}, {s}], "
                             f"got {list(gin.shape)}.")
        super()._check_inputs(gin[:, :BASE_CHANNELS], codes, styles)

    def encode(self, gin: torch.Tensor):
        return super().encode(self._full_gin(gin))


def upgrade_generator(generator: Generator, sketch_channels: int = SKETCH_CHANNELS) -> SketchGenerator:
    """A :class:`SketchGenerator` with ``generator``'s weights and buffers and zero sketch weights.

    The result computes exactly what ``generator`` computes (for any sketch) until its sketch
    weights are trained; ``generator`` itself is left unchanged. Same device and train/eval mode.
    """
    if isinstance(generator, SketchGenerator):
        raise ValueError("this generator already has a sketch channel.")
    generator = getattr(generator, "module", generator)  # DDP
    device = generator.conv1.conv.weight.device
    with torch.device("meta"):  # the weights are copied below: skip drawing random ones
        sg = SketchGenerator(**_ctor_kwargs(generator.kwargs), sketch_channels=sketch_channels)
    sg = sg.to_empty(device=device)
    sd = dict(generator.state_dict())
    w = sd["down_from_big.0.weight"]
    sd["down_from_big.0.weight"] = torch.cat(
        [w, w.new_zeros(w.shape[0], sketch_channels, *w.shape[2:])], 1)
    sg.load_state_dict(sd, strict=True)
    return sg.train(generator.training)


def _ctor_kwargs(arch: dict) -> dict:
    """Generator constructor arguments out of a recorded/inferred architecture dict."""
    names = [p for p in inspect.signature(Generator.__init__).parameters if p != "self"]
    kw = {k: arch[k] for k in names if k in arch and arch[k] is not None}
    for k in ("blur_kernel", "exemplar_slots"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return kw


# ------------------------------------------------------------------------------------------ edges
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_BINOMIAL = torch.tensor([1.0, 2.0, 1.0]) / 4.0


def _conv3(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.to(x)[None, None])


@torch.no_grad()
def extract_edges(images: torch.Tensor, masks: Optional[torch.Tensor] = None, *,
                  threshold: float = 0.1, blur: bool = True, thin: bool = True) -> torch.Tensor:
    """Canny-like binary edge maps of images: the training sketches.

    Steps (all plain torch ops, deterministic, any device):

    1. luma ``(0.299 R + 0.587 G + 0.114 B + 1) / 2`` in [0, 1];
    2. optional 3x3 binomial blur ([1,2,1]/4 per axis, replicate padding);
    3. Sobel gradients normalised by 1/8, so a sharp step of height h gives a magnitude of h/2
       (3h/8 after the blur);
    4. optional non-maximum suppression along the gradient direction (4 sectors); of two equal
       neighbours across an edge the first one (left / up) is kept, so edges are 1 pixel wide;
    5. magnitude > ``threshold`` -> 1; then restricted to the hole when ``masks`` is given.

    Args:
        images: [B, 3, H, W] in [-1, 1].
        masks: optional [B, 1, H, W], 1 = hole (edges outside it are zeroed).
    Returns:
        float [B, 1, H, W] with values in {0, 1}, 1 = edge.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}.")
    x = images.float()
    luma = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3] + 1.0) / 2.0
    if blur:
        luma = _conv3(luma, torch.outer(_BINOMIAL, _BINOMIAL))
    gx = _conv3(luma, _SOBEL_X)
    gy = _conv3(luma, _SOBEL_X.t())
    mag = torch.sqrt(gx * gx + gy * gy)
    if thin:
        mag = _non_max_suppression(mag, gx, gy)
    edges = (mag > threshold).to(images.dtype)
    if masks is not None:
        if masks.shape[0] != images.shape[0] or masks.shape[1] != 1 or masks.shape[2:] != images.shape[2:]:
            raise ValueError(f"masks must be [{images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]}], "
                             f"got {list(masks.shape)}.")
        edges = edges * (masks > 0.5).to(edges)
    return edges


def _non_max_suppression(mag: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Zero every pixel that is not a local maximum of ``mag`` along its gradient direction."""
    p = F.pad(mag, (1, 1, 1, 1))  # zeros: the border is never suppressed by the outside

    def at(dy: int, dx: int) -> torch.Tensor:  # mag at (y + dy, x + dx)
        h, w = mag.shape[-2:]
        return p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    # Gradient angle in [0, 180) degrees, image axes (x right, y down), in four sectors.
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    horizontal = (angle < 22.5) | (angle >= 157.5)    # neighbours left / right
    diag_down = (angle >= 22.5) & (angle < 67.5)      # up-left / down-right
    vertical = (angle >= 67.5) & (angle < 112.5)      # up / down
    # (the rest, 112.5..157.5: up-right / down-left)
    before = torch.where(horizontal, at(0, -1), torch.where(diag_down, at(-1, -1),
                         torch.where(vertical, at(-1, 0), at(-1, 1))))
    after = torch.where(horizontal, at(0, 1), torch.where(diag_down, at(1, 1),
                        torch.where(vertical, at(1, 0), at(1, -1))))
    keep = (mag > before) & (mag >= after)
    return mag * keep.to(mag)


def sketch_gin(images: torch.Tensor, masks: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
    """``cat(images * (1 - masks), masks - 0.5, sketch * masks)``: the [B, 5, S, S] input."""
    return torch.cat([make_gin(images, masks), sketch * masks], 1)


# ---------------------------------------------------------------------------------------- loading
def load_sketch_generator(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                          which: str = "g_ema") -> SketchGenerator:
    """Load a fine-tuned sketch generator (entry ``which`` of our checkpoint or export file, or a
    bare state dict) strictly; returned on ``device`` in ``eval()`` mode.

    A generator without a sketch channel raises :class:`CheckpointError` saying to fine-tune it
    first (``configs/sketch_finetune.yaml``).
    """
    path = os.fspath(path)
    ckpt = safe_load(path)
    if isinstance(ckpt, dict) and which in ckpt and isinstance(ckpt[which], dict):
        sd, arch = ckpt[which], dict((ckpt.get("arch") or {}).get("g") or {})
    elif isinstance(ckpt, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in ckpt.items()):
        sd, arch = ckpt, {}
    else:
        raise CheckpointError(f"{path} has no '{which}' generator state dict; pass a sketch fine-tune "
                              f"checkpoint (runs/<run>/checkpoints/*.pt).")
    w = sd.get("down_from_big.0.weight")
    if not torch.is_tensor(w) or w.ndim != 4:
        raise CheckpointError(f"{path} ['{which}'] is not an EXE-GAN generator (no down_from_big.0.weight).")
    extra = int(w.shape[1]) - BASE_CHANNELS
    if extra < 1:
        raise CheckpointError(f"{path} is an EXE-GAN generator without a sketch channel; fine-tune it with "
                              f"configs/sketch_finetune.yaml (docs/applications.md) before using a sketch.")
    try:
        found = infer_generator_arch(sd)
    except KeyError as e:
        raise CheckpointError(f"{path} ['{which}'] is not an EXE-GAN generator state dict ({e.args[0]}).") from None
    kwargs = _ctor_kwargs({**found, **arch})
    try:
        with torch.device("meta"):
            model = SketchGenerator(**kwargs, sketch_channels=extra)
        model = model.to_empty(device="cpu")
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointMismatchError(f"{path} ['{which}'] does not fit a sketch generator built with "
                                      f"{kwargs}: {first}") from None
    return model.to(device).eval()


# -------------------------------------------------------------------------------------- inference
class SketchEXEGAN(EXEGAN):
    """:class:`models.EXEGAN` for a :class:`SketchGenerator`: ``inpaint``, ``style_mix`` and
    ``complete`` take ``sketch=`` [B, 1, S, S] (or [1, S, S] for a single image) in [0, 1],
    1 = stroke; only its hole part is used. ``sketch=None`` means no strokes.
    """

    def __init__(self, generator: SketchGenerator, style_encoder: nn.Module, **kwargs):
        if not isinstance(generator, SketchGenerator):
            raise TypeError("SketchEXEGAN needs a SketchGenerator (see upgrade_generator / "
                            "load_sketch_generator).")
        super().__init__(generator, style_encoder, **kwargs)

    @classmethod
    def from_checkpoints(cls, exe_ckpt, psp_ckpt, device: torch.device | str = "cpu", *,
                         which: str = "g_ema") -> "SketchEXEGAN":
        generator = load_sketch_generator(exe_ckpt, device, which=which)
        encoder = load_style_encoder(psp_ckpt, generator.exemplar_start, generator.n_exemplar, device,
                                     mapped=True)  # as EXEGAN.from_checkpoints
        return cls(generator, encoder).to(device)

    def _sketch(self, sketch: Optional[torch.Tensor]):
        if sketch is None:
            return self.generator.sketch_input(None)
        if not torch.is_tensor(sketch) or not sketch.is_floating_point():
            raise InputError("sketch must be a float tensor in [0, 1] (1 = stroke).")
        if sketch.ndim == 3:
            sketch = sketch.unsqueeze(0)
        s, k = self.size, self.generator.sketch_channels
        if sketch.ndim != 4 or sketch.shape[1] != k or tuple(sketch.shape[2:]) != (s, s):
            raise InputError(f"sketch must be [B, {k}, {s}, {s}] (or [{k}, {s}, {s}]), got {list(sketch.shape)}.")
        if not torch.isfinite(sketch).all() or sketch.min() < 0 or sketch.max() > 1:
            raise InputError("sketch values must lie in [0, 1] (1 = stroke, 0 = nothing).")
        return self.generator.sketch_input(sketch.to(self.device))

    def complete(self, images, masks, codes, *, sketch: Optional[torch.Tensor] = None, **kwargs):
        if sketch is None:  # keep the sketch of an enclosing inpaint / style_mix call (else none)
            return super().complete(images, masks, codes, **kwargs)
        with self._sketch(sketch):
            return super().complete(images, masks, codes, **kwargs)

    def inpaint(self, images, masks, exemplars, *, sketch: Optional[torch.Tensor] = None, **kwargs):
        with self._sketch(sketch):
            return super().inpaint(images, masks, exemplars, **kwargs)

    def style_mix(self, images, masks, exemplar_a, exemplar_b, layers, *,
                  sketch: Optional[torch.Tensor] = None, **kwargs):
        with self._sketch(sketch):
            return super().style_mix(images, masks, exemplar_a, exemplar_b, layers, **kwargs)
