// CUDA kernels of upfirdn2d: the general one (one thread per output sample, math in upfirdn2d.h)
// and the tiled one (upfirdn2d_tiled.h). Both accumulate in the accumulate type (float for
// half/bfloat16, double for double).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/core/TensorBase.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "upfirdn2d.h"
#include "upfirdn2d_tiled.h"

namespace {

template <typename scalar_t>
__global__ void upfirdn2d_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                 const scalar_t* __restrict__ kernel, const UpFirDn2dParams p) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       idx < p.total; idx += stride) {
    out[idx] = static_cast<scalar_t>(upfirdn2d_sample<scalar_t, acc_t>(x, kernel, p, idx));
  }
}

}  // namespace

void upfirdn2d_launch(const at::TensorBase& out, const at::TensorBase& x,
                      const at::TensorBase& kernel, const UpFirDn2dParams& p) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((p.total + threads - 1) / threads, int64_t(65535) * 8);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
        upfirdn2d_kernel<scalar_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
            out.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            kernel.const_data_ptr<scalar_t>(), p);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------
// Tiled kernel (run per case after its self-check, op/_selfcheck.py): the per-block work of
// upfirdn2d_tiled.h, one block per output tile (grid-stride over the tiles), shared memory
// declared statically per case.
// ---------------------------------------------------------------------------------------------

namespace {

template <typename Tile, typename scalar_t>
__global__ void __launch_bounds__(kUpFirDn2dTiledThreads)
upfirdn2d_tiled_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                       const scalar_t* __restrict__ kernel, const UpFirDn2dParams p,
                       int64_t num_tiles) {
  using acc_t = at::acc_type<scalar_t, true>;
  // Raw bytes: half / bfloat16 are classes, which a __shared__ array may not be declared of.
  __shared__ __align__(16) unsigned char raw[Tile::smem_elems * sizeof(scalar_t)];
  scalar_t* smem = reinterpret_cast<scalar_t*>(raw);
  for (int64_t block = blockIdx.x; block < num_tiles; block += gridDim.x) {
    Tile::load(x, kernel, p, block, threadIdx.x, blockDim.x, smem);
    __syncthreads();
    Tile::template compute<scalar_t, acc_t>(out, p, block, threadIdx.x, blockDim.x, smem);
    __syncthreads();  // the next tile overwrites smem
  }
}

}  // namespace

void upfirdn2d_tiled_launch(const at::TensorBase& out, const at::TensorBase& x,
                            const at::TensorBase& kernel, const UpFirDn2dParams& p, int tiled_case) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  upfirdn2d_tiled_dispatch(tiled_case, [&](auto tile) {
    using Tile = decltype(tile);
    const int64_t num_tiles = Tile::num_tiles(p);
    const int64_t blocks = std::min<int64_t>(num_tiles, int64_t(1) << 20);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_tiled", [&] {
          upfirdn2d_tiled_kernel<Tile, scalar_t>
              <<<static_cast<unsigned int>(blocks), kUpFirDn2dTiledThreads, 0, stream>>>(
                  out.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                  kernel.const_data_ptr<scalar_t>(), p, num_tiles);
        });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
