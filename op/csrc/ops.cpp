// Host side of the compiled ops: argument checks, output allocation, device guard and the
// Python binding. The kernels live in fused_bias_act_kernel.cu and upfirdn2d_kernel.cu.
//
// Headers are deliberately narrow (pybind + Tensor, not <torch/extension.h>; the .cu files see
// only TensorBase): the whole extension is compiled by the CI's compile test on every run,
// and the full headers roughly double its compile time.
//
// fused_bias_act — one elementwise kernel serves forward, backward and double backward
// (op/fused_act.py):
//   grad = 0:  out = act(x + b) * gain
//   grad = 1:  out = x * slope(ref) * gain   (x is an incoming gradient, ref the forward output)
//   act: 0 = linear, 1 = leaky ReLU with negative slope alpha. Empty b / ref mean "none".
//
// upfirdn2d — x [N, H, W] (batch and channels folded by the Python wrapper), kernel [kh, kw].
//   Per axis: insert up - 1 zeros after every sample, pad by pad0 / pad1 (negative crops),
//   convolve with the kernel (true convolution, "valid" region), keep every down-th sample.
//   Its gradient is the same op with transposed parameters (op/upfirdn2d.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>
#include <torch/csrc/utils/pybind.h>

void fused_bias_act_launch(const at::TensorBase& out, const at::TensorBase& x,
                           const at::TensorBase& b, const at::TensorBase& ref, int act, int grad,
                           double alpha, double gain);

void upfirdn2d_launch(const at::TensorBase& out, const at::TensorBase& x,
                      const at::TensorBase& kernel, int up_x, int up_y, int down_x, int down_y,
                      int pad_x0, int pad_y0);

static void check_like(const at::Tensor& t, const at::Tensor& x, const char* what) {
  TORCH_CHECK(t.device() == x.device(), what, " must be on the same device as x");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), what, " must have x's dtype");
}

static at::Tensor fused_bias_act(const at::Tensor& x, const at::Tensor& b, const at::Tensor& ref,
                                 int64_t act, int64_t grad, double alpha, double gain) {
  TORCH_CHECK(x.is_cuda(), "fused_bias_act: x must be a CUDA tensor");
  TORCH_CHECK(x.dim() >= 2, "fused_bias_act: x must be [B, C, ...]");
  TORCH_CHECK(act == 0 || act == 1, "fused_bias_act: act must be 0 (linear) or 1 (lrelu)");
  TORCH_CHECK(grad == 0 || grad == 1, "fused_bias_act: grad must be 0 or 1");
  if (b.numel() > 0) {
    TORCH_CHECK(grad == 0, "fused_bias_act: the gradient mode takes no bias");
    TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(1), "fused_bias_act: b must be [C]");
    check_like(b, x, "fused_bias_act: b");
  }
  const bool needs_ref = grad == 1 && act == 1;
  if (needs_ref) {
    TORCH_CHECK(ref.sizes() == x.sizes(), "fused_bias_act: ref must have x's shape");
    check_like(ref, x, "fused_bias_act: ref");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor bc = b.numel() > 0 ? b.contiguous() : at::Tensor();
  const at::Tensor rc = needs_ref ? ref.contiguous() : at::Tensor();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  if (out.numel() > 0) {
    fused_bias_act_launch(out, xc, bc, rc, static_cast<int>(act), static_cast<int>(grad), alpha,
                          gain);
  }
  return out;
}

static at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x,
                            int64_t up_y, int64_t down_x, int64_t down_y, int64_t pad_x0,
                            int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 3, "upfirdn2d: x must be [N, H, W]");
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must be [kh, kw]");
  check_like(kernel, x, "upfirdn2d: kernel");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
              "upfirdn2d: up and down must be >= 1");
  const int64_t padded_h = x.size(1) * up_y + pad_y0 + pad_y1;
  const int64_t padded_w = x.size(2) * up_x + pad_x0 + pad_x1;
  TORCH_CHECK(padded_h >= kernel.size(0) && padded_w >= kernel.size(1),
              "upfirdn2d: the padded input is smaller than the kernel");
  const int64_t out_h = (padded_h - kernel.size(0)) / down_y + 1;
  const int64_t out_w = (padded_w - kernel.size(1)) / down_x + 1;
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor kc = kernel.contiguous();
  at::Tensor out = at::empty({x.size(0), out_h, out_w}, xc.options());
  if (out.numel() > 0) {
    upfirdn2d_launch(out, xc, kc, static_cast<int>(up_x), static_cast<int>(up_y),
                     static_cast<int>(down_x), static_cast<int>(down_y),
                     static_cast<int>(pad_x0), static_cast<int>(pad_y0));
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_bias_act", &fused_bias_act,
        "bias + activation * gain (grad=0), or gradient * slope(ref) * gain (grad=1)");
  m.def("upfirdn2d", &upfirdn2d, "upsample, pad, FIR-filter, downsample (x [N, H, W])");
}
