"""LPIPS perceptual loss with SVGL — EXE-GAN, Lu et al. 2025.

The network is the ``lpips`` package's LPIPS v0.1 with the VGG16 trunk (Zhang et al. 2018): its
small linear heads ship inside the package, but the ImageNet VGG16 trunk does not, and the
package would download it. We therefore build ``lpips.LPIPS(net='vgg', pnet_rand=True)`` (no
download, random trunk) and load the trunk from a local torchvision VGG16 state dict named in the
config (``loss.lpips_vgg_path``; torchvision's file is ``vgg16-397923af.pth``). The package keeps
torchvision's ``features.<idx>`` indices inside its five slices, so the trunk loads by renaming
``features.<idx>.<p>`` -> ``slice<s>.<idx>.<p>`` (26 tensors, strict).

In the loss, the completed image goes through SVGL with ``M_w`` so that LPIPS gradients are
weighted by the hole's confidence map, while the LPIPS value itself is unchanged.
"""
import logging
import os
import warnings

import torch
from torch import nn

from common.errors import UserError
from common.torchfile import not_a_torch_file

from .svgl import svgl

__all__ = ['LPIPSWeightsError', 'load_lpips', 'LPIPSLoss', 'VGG16_FILE', 'CONFIG_KEY']

log = logging.getLogger(__name__)

VGG16_FILE = 'vgg16-397923af.pth'
CONFIG_KEY = 'loss.lpips_vgg_path'

# torchvision VGG16 `features` index ranges of the lpips trunk slices (slice1..slice5).
_SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)),
           (5, range(23, 30)))
_VGG16_CONV_IDX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_VGG16_CONV_CH = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                  (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))


class LPIPSWeightsError(UserError, RuntimeError):
    """The VGG16 backbone file for LPIPS is missing or is not a torchvision VGG16 state dict."""


def _slice_of(idx):
    for s, r in _SLICES:
        if idx in r:
            return s
    raise KeyError(idx)


def _trunk_state_dict(sd, path):
    """Check a torchvision VGG16 state dict; rename ``features.<i>.<p>`` -> ``slice<s>.<i>.<p>``."""
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise LPIPSWeightsError(f'{path} is not a state dict (got {type(sd).__name__}); '
                                f'{CONFIG_KEY} must name a torchvision VGG16 state dict '
                                f'({VGG16_FILE}).')
    expected = {f'features.{i}.{p}' for i in _VGG16_CONV_IDX for p in ('weight', 'bias')}
    feats = {k: v for k, v in sd.items() if k.startswith('features.')}
    if set(feats) != expected:
        missing = sorted(expected - set(feats))[:3]
        extra = sorted(set(feats) - expected)[:3]
        raise LPIPSWeightsError(
            f'{path} is not a torchvision VGG16 state dict (missing keys {missing}, unexpected '
            f'keys {extra}); {CONFIG_KEY} must name the plain VGG16 file ({VGG16_FILE}), not '
            f'VGG16-BN or another network.')
    for idx, (cin, cout) in zip(_VGG16_CONV_IDX, _VGG16_CONV_CH):
        w, b = feats[f'features.{idx}.weight'], feats[f'features.{idx}.bias']
        if not (torch.is_tensor(w) and torch.is_tensor(b) and tuple(w.shape) == (cout, cin, 3, 3)
                and tuple(b.shape) == (cout,)):
            raise LPIPSWeightsError(
                f'{path} has VGG16 key names but wrong tensor shapes (features.{idx}); '
                f'{CONFIG_KEY} must name a torchvision VGG16 state dict ({VGG16_FILE}).')
    out = {}
    for k, v in feats.items():
        _, idx, p = k.split('.')
        out[f'slice{_slice_of(int(idx))}.{idx}.{p}'] = v
    return out


def _shipped_heads_path(version='0.1'):
    import lpips  # optional: the lpips package is needed only when the LPIPS loss or metric is on
    return os.path.join(os.path.dirname(lpips.__file__), 'weights', f'v{version}', 'vgg.pth')


def load_lpips(vgg_path=None, *, allow_random_backbone=False, device='cpu'):
    """Build a frozen, eval-mode ``lpips.LPIPS`` (VGG, v0.1) without any download.

    Args:
        vgg_path: local torchvision VGG16 state dict (``vgg16-397923af.pth``), the config key
            ``loss.lpips_vgg_path``.
        allow_random_backbone: tests and the demo only. With ``vgg_path=None`` keep the random
            trunk and log a loud warning instead of raising. A path that is given but does not
            exist is always an error (a typo must not silently give a random backbone).
        device: where to put the network.
    Returns:
        ``lpips.LPIPS``; call it as ``net(pred, target)`` with images in [-1, 1] -> [B, 1, 1, 1].
    Raises:
        LPIPSWeightsError: missing file, or a file that is not a VGG16 state dict.
    """
    if vgg_path is None and not allow_random_backbone:
        raise LPIPSWeightsError(
            f'LPIPS needs ImageNet VGG16 weights: set {CONFIG_KEY} to a local torchvision VGG16 '
            f'state dict ({VGG16_FILE}); nothing is downloaded at run time.')
    if vgg_path is not None and not os.path.isfile(vgg_path):
        raise LPIPSWeightsError(
            f'{CONFIG_KEY} = {vgg_path!r} does not exist; put the torchvision VGG16 state dict '
            f'({VGG16_FILE}) there or fix the path.')

    trunk = None
    if vgg_path is not None:
        # Read and check the file before building LPIPS, so a wrong file fails fast.
        why = not_a_torch_file(vgg_path)
        if why is not None:
            raise LPIPSWeightsError(
                f'{vgg_path} is not a PyTorch checkpoint ({why}); {CONFIG_KEY} must name a '
                f'torchvision VGG16 state dict ({VGG16_FILE}).')
        try:
            sd = torch.load(vgg_path, map_location='cpu', weights_only=True)
        except Exception as e:  # unpickling / format errors: one clear sentence
            raise LPIPSWeightsError(
                f'{vgg_path} could not be read as a weights-only state dict ({type(e).__name__}); '
                f'{CONFIG_KEY} must name a torchvision VGG16 state dict ({VGG16_FILE}).') from None
        trunk = _trunk_state_dict(sd, vgg_path)
        del sd  # the classifier tensors (~0.5 GB) are not needed

    import lpips  # optional: as in _shipped_heads_path
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` argument; the trunk is random here.
        warnings.filterwarnings('ignore', message=".*'pretrained' is deprecated.*")
        warnings.filterwarnings('ignore', message='.*Arguments other than a weight enum.*')
        net = lpips.LPIPS(net='vgg', version='0.1', pnet_rand=True, verbose=False)

    # lpips loads its heads with strict=False; make sure they really came from the shipped file.
    heads = torch.load(_shipped_heads_path('0.1'), map_location='cpu', weights_only=True)
    own = net.state_dict()
    for k, v in heads.items():
        if k not in own or not torch.equal(own[k], v):
            raise RuntimeError(f'lpips did not load its shipped head {k!r}; the installed lpips '
                               f'version is incompatible (expected lpips 0.1.4).')

    if vgg_path is None:
        log.warning('!' * 72)
        log.warning('LPIPS IS USING A RANDOMLY INITIALISED VGG16 BACKBONE (allow_random_backbone='
                    'True). Its values are meaningless: use this for tests and the demo only; '
                    'set %s to %s for real training or evaluation.', CONFIG_KEY, VGG16_FILE)
        log.warning('!' * 72)
    else:
        try:
            net.net.load_state_dict(trunk, strict=True)
        except RuntimeError:
            raise LPIPSWeightsError(
                f'{vgg_path} has VGG16 key names but wrong tensor shapes; {CONFIG_KEY} must name '
                f'a torchvision VGG16 state dict ({VGG16_FILE}).') from None

    net.requires_grad_(False)
    return net.eval().to(device)


class LPIPSLoss(nn.Module):
    """``forward(pred, target, weight_map=None, reduction='mean')``: LPIPS(SVGL(pred, M_w), target).

    ``pred`` and ``target`` are [B, 3, H, W] in [-1, 1]; ``weight_map`` (normally ``M_w``,
    [B, 1, H, W]) only changes the gradient reaching ``pred``. Returns the batch mean, the batch
    sum with ``reduction='sum'`` (what the authors' generator loss adds on self-exemplar
    batches), or [B] with ``reduction='none'``. The LPIPS network stays frozen and in eval mode
    even when a parent module calls ``.train()`` (its heads contain dropout layers).
    """

    def __init__(self, lpips_module):
        super().__init__()
        self.net = lpips_module
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode=True):
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pred, target, weight_map=None, reduction='mean'):
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f'LPIPSLoss: expected pred and target [B, 3, H, W] of equal shape, '
                             f'got {tuple(pred.shape)} and {tuple(target.shape)}.')
        if weight_map is not None:
            pred = svgl(pred, weight_map)
        d = self.net(pred, target.detach()).flatten()  # [B]
        if reduction == 'none':
            return d
        if reduction == 'mean':
            return d.mean()
        if reduction == 'sum':
            return d.sum()
        raise ValueError(f"LPIPSLoss: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}.")
