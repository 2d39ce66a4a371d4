"""Custom ops of the StyleGAN2 backbone EXE-GAN is built on: upfirdn2d, fused_bias_act, conv2d.

Public API (docs/ops.md):

* ``upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0))``
* ``fused_bias_act(x, b=None, act='lrelu'|'linear', alpha=0.2, gain=None)``,
  ``fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5)``,
  ``FusedLeakyReLU(channel, bias=True, negative_slope=0.2, scale=2 ** 0.5)``
* ``conv2d_gradfix.conv2d`` / ``conv_transpose2d``
* ``set_impl('auto'|'cuda'|'ref')`` / ``get_impl()``, environment variable ``EXEGAN_OPS``;
  ``with using_impl(...):`` for a block, the previous selection restored after
* ``set_upfirdn2d_kernel('auto'|'general'|'tiled')`` / ``get_upfirdn2d_kernel()``, environment
  variable ``EXEGAN_UPFIRDN2D_KERNEL`` (which compiled upfirdn2d kernel CUDA tensors use; 'auto',
  the default: the tiled one for each case that passed its self-check on the device)
* ``upfirdn2d_selfcheck()``: the self-check verdicts reached in this process
* ``set_upfirdn2d_naive(True|False)`` / ``get_upfirdn2d_naive()`` (every device runs
  ``upfirdn2d_naive``: a benchmark baseline)

CPU tensors always run the pure-PyTorch reference. CUDA tensors run compiled kernels (built
lazily by ``op._loader`` on the first CUDA call) unless the reference is selected. Importing this
package never compiles anything.
"""
from . import conv2d_gradfix
from ._impl import (ENV_VAR, KERNEL_ENV_VAR, OpImplError, get_impl, get_upfirdn2d_kernel,
                    get_upfirdn2d_naive, set_impl, set_upfirdn2d_kernel, set_upfirdn2d_naive,
                    using_impl)
from .fused_act import FusedLeakyReLU, fused_bias_act, fused_bias_act_ref, fused_leaky_relu
from ._selfcheck import verdicts as upfirdn2d_selfcheck
from .upfirdn2d import upfirdn2d, upfirdn2d_naive, upfirdn2d_ref

__all__ = [
    'upfirdn2d', 'upfirdn2d_ref', 'upfirdn2d_naive',
    'fused_bias_act', 'fused_bias_act_ref', 'fused_leaky_relu', 'FusedLeakyReLU',
    'conv2d_gradfix', 'set_impl', 'get_impl', 'using_impl', 'ENV_VAR', 'OpImplError',
    'set_upfirdn2d_kernel', 'get_upfirdn2d_kernel', 'KERNEL_ENV_VAR',
    'set_upfirdn2d_naive', 'get_upfirdn2d_naive', 'upfirdn2d_selfcheck',
]
