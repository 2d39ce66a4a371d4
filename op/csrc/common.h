// Shared by the host file (ops.cpp, compiled by the C++ compiler) and the kernels (nvcc).
//
// The per-element math of every op is a function marked EXEGAN_HOST_DEVICE: the CUDA kernels
// call it from each thread, and ops.cpp calls the very same function in a plain loop for CPU
// tensors. That host loop is not a user path (CPU tensors take the PyTorch reference); it exists
// so that a machine without a GPU can still run the kernels' indexing and arithmetic and compare
// them with the reference (tests/op/test_cuda_compile.py).
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define EXEGAN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define EXEGAN_HOST_DEVICE inline
#endif
