// CUDA kernel of upfirdn2d (semantics in ops.cpp).
//
// One thread per output sample. Instead of materialising the zero-inserted signal, each thread
// visits only the kernel taps that land on real input samples: with upsampling factor u, every
// u-th tap starting from the first one aligned with a sample. Accumulation is in the
// accumulate type (float for half/bfloat16, double for double).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/core/TensorBase.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace {

struct UpFirDn2dParams {
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int in_h, in_w, out_h, out_w, kernel_h, kernel_w;
  int64_t total;  // N * out_h * out_w
};

// a mod m in [0, m) also for negative a (C++'s % keeps the sign of a).
__device__ __forceinline__ int mod_pos(int a, int m) { return ((a % m) + m) % m; }

template <typename scalar_t>
__global__ void upfirdn2d_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                 const scalar_t* __restrict__ kernel, const UpFirDn2dParams p) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       idx < p.total; idx += stride) {
    const int ox = static_cast<int>(idx % p.out_w);
    const int oy = static_cast<int>((idx / p.out_w) % p.out_h);
    const int64_t n = idx / (static_cast<int64_t>(p.out_w) * p.out_h);
    // Where kernel tap 0 falls in the zero-inserted signal (the padding shifts it).
    const int uy0 = oy * p.down_y - p.pad_y0;
    const int ux0 = ox * p.down_x - p.pad_x0;
    // First taps that land on real samples (upsampled positions divisible by up).
    const int i_start = mod_pos(-uy0, p.up_y);
    const int j_start = mod_pos(-ux0, p.up_x);
    const scalar_t* xn = x + n * p.in_h * p.in_w;
    acc_t acc = acc_t(0);
    for (int i = i_start; i < p.kernel_h; i += p.up_y) {
      const int iy = (uy0 + i) / p.up_y;  // exact: uy0 + i is a multiple of up_y
      if (iy < 0 || iy >= p.in_h) continue;
      const scalar_t* xrow = xn + static_cast<int64_t>(iy) * p.in_w;
      // Tap i of the correlation uses kernel row kh-1-i: a true (flipped) convolution.
      const scalar_t* krow = kernel + static_cast<int64_t>(p.kernel_h - 1 - i) * p.kernel_w;
      for (int j = j_start; j < p.kernel_w; j += p.up_x) {
        const int ix = (ux0 + j) / p.up_x;
        if (ix < 0 || ix >= p.in_w) continue;
        acc += static_cast<acc_t>(xrow[ix]) * static_cast<acc_t>(krow[p.kernel_w - 1 - j]);
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

}  // namespace

void upfirdn2d_launch(const at::TensorBase& out, const at::TensorBase& x,
                      const at::TensorBase& kernel, int up_x, int up_y, int down_x, int down_y,
                      int pad_x0, int pad_y0) {
  UpFirDn2dParams p;
  p.up_x = up_x;
  p.up_y = up_y;
  p.down_x = down_x;
  p.down_y = down_y;
  p.pad_x0 = pad_x0;
  p.pad_y0 = pad_y0;
  p.in_h = static_cast<int>(x.size(1));
  p.in_w = static_cast<int>(x.size(2));
  p.out_h = static_cast<int>(out.size(1));
  p.out_w = static_cast<int>(out.size(2));
  p.kernel_h = static_cast<int>(kernel.size(0));
  p.kernel_w = static_cast<int>(kernel.size(1));
  p.total = out.numel();
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
