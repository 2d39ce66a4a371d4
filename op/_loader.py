"""The one loader for the compiled CUDA ops: lazy, cached, atomic, loud on failure.

* Lazy: nothing is compiled at import; :func:`load_extension` runs on the first CUDA call that
  needs an op (``op/_impl.py``), and its result (module or error) is remembered per process.
* Cached: a build lives in ``<cache root>/<name>-<key>/``; ``key`` is a sha256 over the source
  files and headers, the build flags, the GPU name and capability, and the torch / CUDA versions, so an edited
  kernel or another GPU gets its own build and a stale one is never loaded. The cache root is
  ``$EXEGAN_OP_CACHE``, else ``.op_cache/`` in the repository (``~/.cache/exegan_ops`` if that
  is read-only). Both ops live in one extension (``ops``), built once.
* Atomic: a build happens in a fresh temporary directory inside the cache root and is renamed
  into place only after it succeeded; an OS-level lock per extension makes concurrent processes
  (one per GPU under torchrun) wait for a single build instead of compiling eight times.
* Loud: a failed build raises :class:`OpBuildError` with the compiler output, which is also
  written to ``<cache root>/<name>-<key>.build.log``.

:func:`prepare_build_env` holds the environment fixes a build needs (CUDA_HOME, the arch list,
the include folders of the pip ``nvidia`` packages, ninja on PATH). The compile test calls the
same functions, so CI exercises this file, not a copy.
"""
import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import site
import sys
import tempfile

import torch

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc')
# One extension holds both ops: the compile test builds it on every CI run, and one host file
# (ops.cpp) instead of one per op saves a third of the compile time.
EXTENSION = 'ops'
SOURCES = {EXTENSION: ('ops.cpp', 'fused_bias_act_kernel.cu', 'upfirdn2d_kernel.cu')}
# Headers the sources include: part of the cache key, not compiled on their own.
HEADERS = ('common.h', 'fused_bias_act.h', 'upfirdn2d.h', 'upfirdn2d_tiled.h')
# No -O3: nvcc optimises device code by default, and the host code is argument checks; the
# flag only makes the build (run by CI on every change) slower.
EXTRA_CFLAGS = ()
EXTRA_CUDA_CFLAGS = ()
# Architecture compiled for when no GPU is visible (the compile-only check in CI): one arch
# keeps that build short. With a GPU, its own capability is used.
DEFAULT_ARCH = '9.0'
CACHE_ENV = 'EXEGAN_OP_CACHE'
_BUILD_VERSION = 1  # bump to invalidate every cached build after a loader change

_loaded = {}  # name -> module, or the exception its build raised (so auto mode tries once)


class OpBuildError(RuntimeError):
    """A CUDA op could not be built or loaded; the message carries the build log."""


# ---------------------------------------------------------------------------------------------
# Build environment
# ---------------------------------------------------------------------------------------------

def _is_toolkit_root(path):
    """bin/nvcc plus the runtime headers (in include/, or targets/<arch>/include/ as in some
    packaged toolkits)."""
    if not path or not os.path.isfile(os.path.join(path, 'bin', 'nvcc')):
        return False
    return os.path.isfile(os.path.join(path, 'include', 'cuda_runtime.h')) or \
        bool(glob.glob(os.path.join(path, 'targets', '*', 'include', 'cuda_runtime.h')))


def find_cuda_home():
    """The CUDA toolkit root, or None.

    torch guesses the root as the parent of the ``nvcc`` on PATH; where that nvcc is a wrapper
    script (e.g. /usr/local/bin/nvcc) the guess has no headers or libcudart and linking fails,
    so a candidate only counts if it holds both ``bin/nvcc`` and ``include/cuda_runtime.h``.
    """
    candidates = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')]
    nvcc = shutil.which('nvcc')
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        candidates.append(os.path.dirname(os.path.dirname(nvcc)))
        candidates.extend(_wrapped_nvcc_roots(nvcc))
    candidates.append('/usr/local/cuda')
    candidates.extend(sorted(glob.glob('/usr/local/cuda-*'), reverse=True))
    for path in candidates:
        if _is_toolkit_root(path):
            return os.path.realpath(path)
    return None


def _wrapped_nvcc_roots(nvcc):
    """Toolkit roots named inside a small wrapper script (`exec /path/to/cuda/bin/nvcc "$@"`)."""
    try:
        if os.path.getsize(nvcc) > 4096:
            return []  # a real binary, not a wrapper
        with open(nvcc, encoding='utf-8', errors='ignore') as f:
            words = f.read().split()
    except OSError:
        return []
    return [os.path.dirname(os.path.dirname(w)) for w in words if w.endswith('/bin/nvcc')]


def nvidia_include_dirs():
    """``include`` folders of the pip ``nvidia-*`` packages (cuBLAS, cuSPARSE, ... headers that
    torch's CUDA headers include but a bare system toolkit may lack)."""
    roots = list(site.getsitepackages()) if hasattr(site, 'getsitepackages') else []
    roots += [p for p in sys.path if p.endswith('site-packages')]
    found = []
    for root in dict.fromkeys(roots):
        for pattern in ('nvidia/*/include', 'nvidia/*/*/include'):
            for path in sorted(glob.glob(os.path.join(root, pattern))):
                if os.path.isdir(path) and path not in found:
                    found.append(path)
    return found


def default_arch_list():
    """TORCH_CUDA_ARCH_LIST to use: the visible GPU's capability, else DEFAULT_ARCH."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f'{major}.{minor}'
    return DEFAULT_ARCH


def prepare_build_env(environ=None):
    """Make a CUDA extension buildable in this process; returns the variables it set.

    Each fix addresses a failure seen on a machine with the toolkit but no GPU:
    CUDA_HOME must be the real toolkit root (also patched into torch.utils.cpp_extension, which
    reads it once at import), TORCH_CUDA_ARCH_LIST must be set (torch's arch detection fails
    without a visible GPU), the pip nvidia include folders go on CPATH, and ninja must be on
    PATH (a venv's bin folder is not when python is called by path).
    """
    environ = os.environ if environ is None else environ
    changed = {}
    cuda_home = find_cuda_home()
    if cuda_home and not _is_toolkit_root(environ.get('CUDA_HOME')):
        changed['CUDA_HOME'] = cuda_home
    if not environ.get('TORCH_CUDA_ARCH_LIST'):
        changed['TORCH_CUDA_ARCH_LIST'] = default_arch_list()
    cpath = [p for p in environ.get('CPATH', '').split(os.pathsep) if p]
    extra = [p for p in nvidia_include_dirs() if p not in cpath]
    if extra:
        changed['CPATH'] = os.pathsep.join(cpath + extra)
    if shutil.which('ninja', path=environ.get('PATH')) is None:
        ninja_dirs = [os.path.dirname(sys.executable)]
        with contextlib.suppress(ImportError, AttributeError):
            import ninja  # optional: the pip ninja package, only to find its binary for a build
            ninja_dirs.insert(0, ninja.BIN_DIR)
        for d in ninja_dirs:
            if shutil.which('ninja', path=d):
                changed['PATH'] = d + os.pathsep + environ.get('PATH', '')
                break
    environ.update(changed)
    if environ is os.environ and cuda_home:
        import torch.utils.cpp_extension as cpp_ext  # heavy: only when a CUDA build is set up
        cpp_ext.CUDA_HOME = environ['CUDA_HOME']
    return changed


# ---------------------------------------------------------------------------------------------
# Cache key and directories
# ---------------------------------------------------------------------------------------------

def cache_root():
    """$EXEGAN_OP_CACHE, else .op_cache/ in the repository (git-ignored), else ~/.cache when the
    repository is read-only (an installed copy, a shared cluster checkout)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return root
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.op_cache')
    parent = os.path.dirname(root)
    if os.access(root if os.path.isdir(root) else parent, os.W_OK):
        return root
    return os.path.join(os.path.expanduser('~'), '.cache', 'exegan_ops')


def gpu_tag():
    """The GPU the build is for: name and capability, or 'no-gpu' (compile-only builds)."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f'{torch.cuda.get_device_name()} sm_{major}{minor}'
    return 'no-gpu'


def build_key(name=EXTENSION, csrc=CSRC, arch_list=None):
    """sha256 over everything that changes the binary: sources, flags, GPU, versions."""
    h = hashlib.sha256()
    arch_list = arch_list or os.environ.get('TORCH_CUDA_ARCH_LIST') or default_arch_list()
    meta = [name, _BUILD_VERSION, EXTRA_CFLAGS, EXTRA_CUDA_CFLAGS, arch_list, gpu_tag(),
            torch.__version__, torch.version.cuda, sys.version_info[:2]]
    h.update(repr(meta).encode())
    for filename in SOURCES[name] + HEADERS:
        h.update(filename.encode() + b'\0')
        with open(os.path.join(csrc, filename), 'rb') as f:
            h.update(f.read())
        h.update(b'\0')
    return h.hexdigest()


@contextlib.contextmanager
def _build_lock(path):
    """An OS-level lock (released by the kernel even if the holder dies: no stale lock)."""
    try:
        import fcntl  # POSIX only
    except ImportError:  # not POSIX: builds still land atomically, just possibly twice
        yield
        return
    with open(path, 'a+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _import_built(build_dir):
    with open(os.path.join(build_dir, 'extension.json')) as f:
        meta = json.load(f)
    path = os.path.join(build_dir, meta['file'])
    spec = importlib.util.spec_from_file_location(meta['module'], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Build and load
# ---------------------------------------------------------------------------------------------

def build(name=EXTENSION, root=None, csrc=CSRC, verbose=False):
    """Build extension ``name`` into the cache (if not there yet); return (module, build_dir,
    built) where ``built`` says whether this call compiled it."""
    if name not in SOURCES:
        raise KeyError(f"unknown op extension {name!r}; known: {sorted(SOURCES)}")
    prepare_build_env()
    import torch.utils.cpp_extension as cpp_ext  # heavy: never imported unless an op is built
    if not cpp_ext.CUDA_HOME or not _is_toolkit_root(cpp_ext.CUDA_HOME):
        raise OpBuildError(f"cannot build the CUDA op {name!r}: no CUDA toolkit found (looked at "
                           f"$CUDA_HOME, the nvcc on PATH and /usr/local/cuda*); install the "
                           f"toolkit or set CUDA_HOME, or use EXEGAN_OPS=ref.")
    root = root or cache_root()
    os.makedirs(root, exist_ok=True)
    key = build_key(name, csrc)[:20]
    final = os.path.join(root, f'{name}-{key}')
    with _build_lock(os.path.join(root, f'{name}.lock')):
        if os.path.isfile(os.path.join(final, 'extension.json')):
            return _import_built(final), final, False
        tmp = tempfile.mkdtemp(prefix=f'{name}-{key}.tmp', dir=root)
        module_name = f'exegan_{name}'
        try:
            module = cpp_ext.load(
                name=module_name, sources=[os.path.join(csrc, s) for s in SOURCES[name]],
                extra_cflags=list(EXTRA_CFLAGS), extra_cuda_cflags=list(EXTRA_CUDA_CFLAGS),
                build_directory=tmp, verbose=verbose, with_cuda=True)
        except Exception as exc:
            log_path = os.path.join(root, f'{name}-{key}.build.log')
            ninja_file = os.path.join(tmp, 'build.ninja')
            with open(log_path, 'w') as f:
                f.write(f"{type(exc).__name__}: {exc}\n")
                if os.path.isfile(ninja_file):
                    f.write(f"\n--- {ninja_file} ---\n")
                    with open(ninja_file) as nf:
                        f.write(nf.read())
            failed = os.path.join(root, f'{name}-{key}.failed')
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(tmp, failed)  # kept for inspection, never loaded
            raise OpBuildError(f"building the CUDA op {name!r} failed; the full build log is in "
                               f"{log_path} (build files in {failed}). Fix the error or run with "
                               f"EXEGAN_OPS=ref. Build output:\n{exc}") from exc
        # torch may rename the module (name_v1, ...) when one process builds the same name
        # twice, so record what was built for later processes.
        filename = os.path.basename(module.__file__)
        with open(os.path.join(tmp, 'extension.json'), 'w') as f:
            json.dump({'module': module.__name__, 'file': filename, 'gpu': gpu_tag(),
                       'torch': torch.__version__, 'cuda': torch.version.cuda}, f)
        # Atomic publish: the directory appears complete or not at all. (The already imported
        # module keeps working after its file is renamed.)
        os.rename(tmp, final)
        return module, final, True


def load_extension(name=EXTENSION):
    """The compiled module of op ``name`` for this process (built on first use)."""
    cached = _loaded.get(name)
    if isinstance(cached, Exception):
        raise cached
    if cached is not None:
        return cached
    try:
        module = build(name)[0]
    except OpBuildError as exc:
        _loaded[name] = exc
        raise
    except Exception as exc:  # e.g. an import failure of a cached build
        err = OpBuildError(f"loading the CUDA op {name!r} failed: {type(exc).__name__}: {exc}")
        _loaded[name] = err
        raise err from exc
    _loaded[name] = module
    return module
