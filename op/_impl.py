"""Which implementation of the custom ops runs: ``auto`` | ``cuda`` | ``ref``.

The choice comes from :func:`set_impl` (what a training config calls) or, when that was never
called, from the environment variable ``EXEGAN_OPS`` (default ``auto``). CPU tensors always take
the pure-PyTorch reference path whatever the setting, so every test and CPU user runs the same
code. For CUDA tensors:

* ``ref``  — always the reference path;
* ``cuda`` — the compiled kernels; a build failure is raised (with the build log);
* ``auto`` — the compiled kernels when they build, else the reference path with one warning.

Nothing here compiles at import: the extension is built on the first CUDA call that needs it.

Which upfirdn2d kernel the compiled path uses is a second, independent choice:
:func:`set_upfirdn2d_kernel` or the environment variable ``EXEGAN_UPFIRDN2D_KERNEL``:

* ``auto``    — (the default) the tiled shared-memory kernel (``op/csrc/upfirdn2d_tiled.h``) for
  the cases it is specialised for, each after it passed a self-check against the reference on
  the device at its first use (``op/_selfcheck.py``); the general kernel for the rest and for a
  case that failed its check;
* ``general`` — the general kernel (one thread per output sample) only;
* ``tiled``   — the tiled kernel wherever it is specialised, without the self-check.

``general`` and ``tiled`` are for debugging and benchmarks.
"""
import os
import contextlib
import warnings

ENV_VAR = 'EXEGAN_OPS'
VALID_IMPLS = ('auto', 'cuda', 'ref')

KERNEL_ENV_VAR = 'EXEGAN_UPFIRDN2D_KERNEL'
VALID_KERNELS = ('auto', 'general', 'tiled')

_override = None  # set by set_impl(); None means "read the environment variable"
_kernel_override = None  # set by set_upfirdn2d_kernel(); None: the environment variable
_warned = []      # non-empty once a build failure was reported in auto mode
_naive_upfirdn2d = False  # set by set_upfirdn2d_naive(): a benchmark baseline, never a default


class OpImplError(ValueError):
    """An invalid implementation name was given (by set_impl or EXEGAN_OPS)."""


def _checked(value, valid, what, setter):
    """``value`` (None allowed) if it is one of ``valid``, else one sentence naming ``setter``."""
    if value is not None and value not in valid:
        raise OpImplError(f"{what} {value!r} is not one of {', '.join(valid)}; "
                          f"pass one of those to op.{setter}().")
    return value


def _from_env(var, default, valid):
    """The environment variable's choice (``default`` when unset or empty), checked."""
    value = os.environ.get(var, default).strip().lower() or default
    if value not in valid:
        raise OpImplError(f"environment variable {var}={value!r} is not one of "
                          f"{', '.join(valid)}; set it to one of those or unset it.")
    return value


def set_impl(impl):
    """Select the op implementation for CUDA tensors: 'auto', 'cuda' or 'ref' (None = env var)."""
    global _override
    _override = _checked(impl, VALID_IMPLS, "op implementation", "set_impl")


def get_impl():
    """The implementation currently selected: set_impl's value, else $EXEGAN_OPS, else 'auto'."""
    if _override is not None:
        return _override
    return _from_env(ENV_VAR, 'auto', VALID_IMPLS)


@contextlib.contextmanager
def using_impl(impl):
    """``with op.using_impl('ref'):`` selects ``impl`` as :func:`set_impl` does inside the block,
    then restores the previous selection (set_impl's value, or none: the environment variable).
    For code that must run one implementation for a while, e.g. tracing for an ONNX export."""
    global _override
    previous = _override
    set_impl(impl)
    try:
        yield
    finally:
        _override = previous


def set_upfirdn2d_kernel(kernel):
    """Select the compiled upfirdn2d kernel: 'auto' | 'general' | 'tiled' (None = the env
    variable)."""
    global _kernel_override
    _kernel_override = _checked(kernel, VALID_KERNELS, "upfirdn2d kernel", "set_upfirdn2d_kernel")


def get_upfirdn2d_kernel():
    """The upfirdn2d kernel selected: set_upfirdn2d_kernel's value, else
    $EXEGAN_UPFIRDN2D_KERNEL, else 'auto'."""
    if _kernel_override is not None:
        return _kernel_override
    return _from_env(KERNEL_ENV_VAR, 'auto', VALID_KERNELS)


def set_upfirdn2d_naive(flag):
    """With ``True``, :func:`op.upfirdn2d` runs :func:`op.upfirdn2d_naive` on every device (the
    single-channel formulation: the baseline ``scripts/benchmark.py``'s naive_upfirdn variant
    times); ``False`` (the default) restores the usual dispatch. Same values up to float rounding."""
    global _naive_upfirdn2d
    _naive_upfirdn2d = bool(flag)


def get_upfirdn2d_naive():
    """Whether :func:`set_upfirdn2d_naive` selected the naive formulation."""
    return _naive_upfirdn2d


def cuda_extension(*tensors):
    """Return the compiled extension module to use for these tensors, or None for the reference.

    Called on every op call, so the common cases (CPU tensors, impl='ref') return before
    touching the loader.
    """
    if not any(t is not None and t.is_cuda for t in tensors):
        return None
    impl = get_impl()
    if impl == 'ref':
        return None
    # Imported here so that `import op` never pulls in torch.utils.cpp_extension.
    from . import _loader
    if impl == 'cuda':
        return _loader.load_extension()  # raises OpBuildError with the build log
    try:
        return _loader.load_extension()
    except Exception as exc:  # auto: fall back, but say so once
        if not _warned:
            _warned.append(exc)
            warnings.warn(f"the CUDA ops could not be built, using the slower pure-PyTorch "
                          f"reference instead (set {ENV_VAR}=ref to silence this, or "
                          f"{ENV_VAR}=cuda to make it an error): {exc}", RuntimeWarning,
                          stacklevel=3)
        return None
