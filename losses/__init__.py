"""Losses of EXE-GAN (Lu et al. 2025): adversarial + lazy regularisers, LPIPS, identity,
attribute, SVGL and its weight maps, and the assembled generator objective.

See docs/losses.md for a table of every term, its default weight and where it is applied.
"""
from .adversarial import (PathLengthRegularizer, d_logistic_loss, g_nonsaturating_loss,
                          r1_loss, r1_penalty)
from .attribute import AttributeLoss
from .identity import IdentityLoss
from .objective import GeneratorObjective, LossConfig
from .perceptual import LPIPSLoss, LPIPSWeightsError, load_lpips
from .svgl import SVGLFunction, svgl
from .weight_maps import ConfidenceMap, confidence_map, reverse_weight_map

__all__ = [
    'd_logistic_loss', 'g_nonsaturating_loss', 'r1_penalty', 'r1_loss', 'PathLengthRegularizer',
    'svgl', 'SVGLFunction', 'ConfidenceMap', 'confidence_map', 'reverse_weight_map',
    'load_lpips', 'LPIPSLoss', 'LPIPSWeightsError', 'IdentityLoss', 'AttributeLoss',
    'LossConfig', 'GeneratorObjective',
]
