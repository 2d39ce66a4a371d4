// CUDA kernel of fused_bias_act (modes described in ops.cpp).
//
// Arithmetic runs in the accumulate type (float for half/bfloat16), so half-precision
// activations are rounded once, on the store. Tensors arrive contiguous and allocated.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/core/TensorBase.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace {

template <typename scalar_t>
__global__ void fused_bias_act_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                      const scalar_t* __restrict__ b,
                                      const scalar_t* __restrict__ ref, int64_t n,
                                      int64_t step, int64_t channels, int act, int grad,
                                      at::acc_type<scalar_t, true> alpha,
                                      at::acc_type<scalar_t, true> gain) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    acc_t v = static_cast<acc_t>(x[i]);
    if (grad == 0) {
      if (b != nullptr) v += static_cast<acc_t>(b[(i / step) % channels]);
      // Same branch as torch's leaky_relu: the positive part only for v > 0.
      if (act == 1 && !(v > acc_t(0))) v *= alpha;
      out[i] = static_cast<scalar_t>(v * gain);
    } else {
      acc_t slope = acc_t(1);
      if (act == 1) {
        // ref = act(x + b) * gain: its sign is the pre-activation's, flipped by a negative
        // gain. Zero counts as the negative side, like torch's leaky_relu backward.
        const acc_t r = static_cast<acc_t>(ref[i]);
        const bool positive = gain >= acc_t(0) ? r > acc_t(0) : r < acc_t(0);
        slope = positive ? acc_t(1) : alpha;
      }
      out[i] = static_cast<scalar_t>(v * slope * gain);
    }
  }
}

}  // namespace

void fused_bias_act_launch(const at::TensorBase& out, const at::TensorBase& x,
                           const at::TensorBase& b, const at::TensorBase& ref, int act, int grad,
                           double alpha, double gain) {
  const int64_t n = x.numel();
  const int64_t channels = x.size(1);
  const int64_t step = n / (x.size(0) * channels);  // elements per (sample, channel)
  const int threads = 256;
  // Grid-stride loop: a bounded grid fills the GPU for any size.
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(65535) * 8);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "fused_bias_act", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        fused_bias_act_kernel<scalar_t>
            <<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
                out.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
                ref.defined() ? ref.const_data_ptr<scalar_t>() : nullptr, n, step, channels,
                act, grad, static_cast<acc_t>(alpha), static_cast<acc_t>(gain));
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
