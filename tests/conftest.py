"""Test-wide setup: repo root on sys.path and a small torch thread count (CPU only by default).

One intra-op thread by default: the test models are tiny, and on a 2-core machine two threads
spend more time waiting on each other than computing (measured 5-20x slower on small convs when
the cores are shared). EXEGAN_TEST_THREADS overrides it.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("EXEGAN_TEST_THREADS", "1")))

# The command lines' CPU default runs the networks in onnxruntime after exporting each checkpoint
# once (inference/runtime.py; ~20 s even for a tiny test model). The suite writes dozens of
# checkpoints, so its subprocesses and in-process runs use PyTorch unless a test asks for onnx;
# tests/inference/test_runtime.py removes this to test the default itself.
os.environ.setdefault("EXEGAN_RUNTIME", "torch")
