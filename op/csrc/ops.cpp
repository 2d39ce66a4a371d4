// Host side of the compiled ops: argument checks, output allocation, device guard, the Python
// binding, and a host loop over the kernels' own per-element functions for CPU tensors.
//
// Headers are deliberately narrow (pybind + Tensor here, only TensorBase in the .cu files,
// never <torch/extension.h>): CI compiles this extension on every run, and the full headers
// roughly double its compile time.
//
// fused_bias_act — one elementwise op serves forward, backward and double backward
// (op/fused_act.py):
//   grad = 0:  out = act(x + b) * gain
//   grad = 1:  out = x * slope(ref) * gain   (x is an incoming gradient, ref the forward output)
//   act: 0 = linear, 1 = leaky ReLU with negative slope alpha. Empty b / ref mean "none".
//
// upfirdn2d — x [N, H, W] (batch and channels folded by the Python wrapper), kernel [kh, kw].
//   Per axis: insert up - 1 zeros after every sample, pad by pad0 / pad1 (negative crops),
//   convolve with the kernel (true convolution, "valid" region), keep every down-th sample.
//   Its gradient is the same op with transposed parameters (op/upfirdn2d.py).
//   The last argument picks the kernel: -1 the general one (one thread per output sample), 0 / 1
//   / 2 the tiled kernel of that case (upfirdn2d_tiled.h); op/upfirdn2d.py's _choose decides,
//   after a self-check of the tiled case on the device.
//
// CPU tensors run the same per-element functions (fused_bias_act.h, upfirdn2d.h) in a serial
// loop: a check of the kernels' math on machines without a GPU, not a fast path (the public
// API sends CPU tensors to the PyTorch reference).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>
#include <torch/csrc/utils/pybind.h>

#include "fused_bias_act.h"
#include "upfirdn2d.h"
#include "upfirdn2d_tiled.h"

#include <algorithm>
#include <limits>
#include <vector>

void fused_bias_act_launch(const at::TensorBase& out, const at::TensorBase& x,
                           const at::TensorBase& b, const at::TensorBase& ref,
                           const FusedBiasActParams& p);

void upfirdn2d_launch(const at::TensorBase& out, const at::TensorBase& x,
                      const at::TensorBase& kernel, const UpFirDn2dParams& p);

void upfirdn2d_tiled_launch(const at::TensorBase& out, const at::TensorBase& x,
                            const at::TensorBase& kernel, const UpFirDn2dParams& p, int tiled_case);

static void check_like(const at::Tensor& t, const at::Tensor& x, const char* what) {
  TORCH_CHECK(t.device() == x.device(), what, " must be on the same device as x");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), what, " must have x's dtype");
}

static at::Tensor fused_bias_act(const at::Tensor& x, const at::Tensor& b, const at::Tensor& ref,
                                 int64_t act, int64_t grad, double alpha, double gain) {
  TORCH_CHECK(x.is_cuda() || x.is_cpu(), "fused_bias_act: x must be a CUDA (or CPU) tensor");
  TORCH_CHECK(x.dim() >= 2, "fused_bias_act: x must be [B, C, ...]");
  TORCH_CHECK(act == 0 || act == 1, "fused_bias_act: act must be 0 (linear) or 1 (lrelu)");
  TORCH_CHECK(grad == 0 || grad == 1, "fused_bias_act: grad must be 0 or 1");
  const bool has_bias = b.numel() > 0;
  if (has_bias) {
    TORCH_CHECK(grad == 0, "fused_bias_act: the gradient mode takes no bias");
    TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(1), "fused_bias_act: b must be [C]");
    check_like(b, x, "fused_bias_act: b");
  }
  const bool needs_ref = grad == 1 && act == 1;
  if (needs_ref) {
    TORCH_CHECK(ref.sizes() == x.sizes(), "fused_bias_act: ref must have x's shape");
    check_like(ref, x, "fused_bias_act: ref");
  }
  const at::Tensor xc = x.contiguous();
  const at::Tensor bc = has_bias ? b.contiguous() : at::Tensor();
  const at::Tensor rc = needs_ref ? ref.contiguous() : at::Tensor();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  FusedBiasActParams p;
  p.n = xc.numel();
  p.channels = xc.size(1);
  p.step = p.n > 0 ? p.n / (xc.size(0) * p.channels) : 1;
  p.act = static_cast<int>(act);
  p.grad = static_cast<int>(grad);
  p.alpha = alpha;
  p.gain = gain;
  if (p.n == 0) return out;
  if (xc.is_cuda()) {
    const c10::cuda::CUDAGuard guard(xc.device());
    fused_bias_act_launch(out, xc, bc, rc, p);
    return out;
  }
  // The host loop is a check of the kernel's math, so float and double suffice.
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "fused_bias_act", [&] {
    using acc_t = at::acc_type<scalar_t, true>;  // the device's accumulate type
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* bp = has_bias ? bc.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* rp = needs_ref ? rc.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    for (int64_t i = 0; i < p.n; ++i) {
      op[i] = static_cast<scalar_t>(fused_bias_act_element<scalar_t, acc_t>(xp, bp, rp, p, i));
    }
  });
  return out;
}

// upfirdn2d's parameters for an [n, in_h, in_w] input and a [kh, kw] kernel, output size
// included: the one place in the C++ code that computes it (op/upfirdn2d.py's out_size is the
// Python one; tests/op/test_cuda_compile.py checks that they agree).
static UpFirDn2dParams upfirdn2d_params(int64_t n, int64_t in_h, int64_t in_w, int64_t kh,
                                        int64_t kw, int64_t up_x, int64_t up_y, int64_t down_x,
                                        int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                                        int64_t pad_y0, int64_t pad_y1) {
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
              "upfirdn2d: up and down must be >= 1");
  const int64_t padded_h = in_h * up_y + pad_y0 + pad_y1;
  const int64_t padded_w = in_w * up_x + pad_x0 + pad_x1;
  TORCH_CHECK(padded_h >= kh && padded_w >= kw,
              "upfirdn2d: the padded input is smaller than the kernel");
  UpFirDn2dParams p{};
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.pad_x0 = static_cast<int>(pad_x0);
  p.pad_y0 = static_cast<int>(pad_y0);
  p.in_h = static_cast<int>(in_h);
  p.in_w = static_cast<int>(in_w);
  p.kernel_h = static_cast<int>(kh);
  p.kernel_w = static_cast<int>(kw);
  p.out_h = static_cast<int>((padded_h - kh) / down_y + 1);
  p.out_w = static_cast<int>((padded_w - kw) / down_x + 1);
  p.total = n * p.out_h * p.out_w;
  return p;
}

// The general kernel's math in a host loop (CPU tensors: a check, not a user path).
static void upfirdn2d_host(const at::Tensor& out, const at::Tensor& xc, const at::Tensor& kc,
                           const UpFirDn2dParams& p) {
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "upfirdn2d", [&] {
    using acc_t = at::acc_type<scalar_t, true>;  // the device's accumulate type
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* kp = kc.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    for (int64_t idx = 0; idx < p.total; ++idx) {
      op[idx] = static_cast<scalar_t>(upfirdn2d_sample<scalar_t, acc_t>(xp, kp, p, idx));
    }
  });
}

// The tiled kernel's whole grid on the CPU: blocks one after another, and within a block the
// load phase for every thread id, then (after the barrier) the compute phase for every thread
// id. Shared memory is filled with NaN before each block and the output before the first, so a
// read of an entry no thread staged, or an output no thread wrote, shows up in the result.
static void upfirdn2d_tiled_host(const at::Tensor& out, const at::Tensor& xc,
                                 const at::Tensor& kc, const UpFirDn2dParams& p, int tile) {
  upfirdn2d_tiled_dispatch(tile, [&](auto t) {
    using Tile = decltype(t);
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "upfirdn2d_tiled", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      const scalar_t nan = std::numeric_limits<scalar_t>::quiet_NaN();
      const scalar_t* xp = xc.const_data_ptr<scalar_t>();
      const scalar_t* kp = kc.const_data_ptr<scalar_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      std::fill(op, op + p.total, nan);
      std::vector<scalar_t> smem(Tile::smem_elems);
      const int threads = kUpFirDn2dTiledThreads;
      const int64_t num_tiles = Tile::num_tiles(p);
      for (int64_t block = 0; block < num_tiles; ++block) {
        std::fill(smem.begin(), smem.end(), nan);
        for (int tid = 0; tid < threads; ++tid) {
          Tile::load(xp, kp, p, block, tid, threads, smem.data());
        }
        for (int tid = 0; tid < threads; ++tid) {  // after __syncthreads()
          Tile::template compute<scalar_t, acc_t>(op, p, block, tid, threads, smem.data());
        }
      }
    });
  });
}

// The one upfirdn2d entry: x [N, H, W], kernel [kh, kw]; `tile` = -1 runs the general kernel,
// 0 / 1 / 2 the tiled kernel of that case (upfirdn2d_tiled.h), which must be the case of these
// parameters (op/upfirdn2d.py asks upfirdn2d_tiled_plan once per case and checks the tiled
// kernel against the reference before it asks for it). CPU tensors run the kernels' host
// emulation.
static at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x,
                            int64_t up_y, int64_t down_x, int64_t down_y, int64_t pad_x0,
                            int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, int64_t tile) {
  TORCH_CHECK(x.is_cuda() || x.is_cpu(), "upfirdn2d: x must be a CUDA (or CPU) tensor");
  TORCH_CHECK(x.dim() == 3, "upfirdn2d: x must be [N, H, W]");
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must be [kh, kw]");
  check_like(kernel, x, "upfirdn2d: kernel");
  const UpFirDn2dParams p = upfirdn2d_params(x.size(0), x.size(1), x.size(2), kernel.size(0),
                                             kernel.size(1), up_x, up_y, down_x, down_y, pad_x0,
                                             pad_x1, pad_y0, pad_y1);
  if (tile >= 0) {
    TORCH_CHECK(tile == upfirdn2d_tiled_case(p), "upfirdn2d: tiled case ", tile,
                " asked for parameters whose case is ", upfirdn2d_tiled_case(p),
                " (-1 = no tiled kernel)");
  } else {
    TORCH_CHECK(tile == -1, "upfirdn2d: tile must be -1 (general kernel) or a tiled case");
  }
  const at::Tensor xc = x.contiguous();
  const at::Tensor kc = kernel.contiguous();
  at::Tensor out = at::empty({xc.size(0), p.out_h, p.out_w}, xc.options());
  if (p.total == 0) return out;
  if (xc.is_cuda()) {
    const c10::cuda::CUDAGuard guard(xc.device());
    if (tile >= 0) {
      upfirdn2d_tiled_launch(out, xc, kc, p, static_cast<int>(tile));
    } else {
      upfirdn2d_launch(out, xc, kc, p);
    }
  } else if (tile >= 0) {
    upfirdn2d_tiled_host(out, xc, kc, p, static_cast<int>(tile));
  } else {
    upfirdn2d_host(out, xc, kc, p);
  }
  return out;
}

// (case, tile_h, tile_w, in_h, in_w, number of blocks) of the tiled kernel for these parameters;
// case -1: no tiled kernel (the general one serves them).
static std::vector<int64_t> upfirdn2d_tiled_plan(int64_t n, int64_t in_h, int64_t in_w,
                                                 int64_t kh, int64_t kw, int64_t up_x,
                                                 int64_t up_y, int64_t down_x, int64_t down_y,
                                                 int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                                                 int64_t pad_y1) {
  const UpFirDn2dParams p = upfirdn2d_params(n, in_h, in_w, kh, kw, up_x, up_y, down_x, down_y,
                                             pad_x0, pad_x1, pad_y0, pad_y1);
  const int tiled_case = upfirdn2d_tiled_case(p);
  if (tiled_case < 0) return {-1, 0, 0, 0, 0, 0, p.out_h, p.out_w};
  std::vector<int64_t> plan;
  upfirdn2d_tiled_dispatch(tiled_case, [&](auto tile) {
    using Tile = decltype(tile);
    plan = {tiled_case, Tile::tile_h, Tile::tile_w, Tile::in_h, Tile::in_w, Tile::num_tiles(p),
            p.out_h, p.out_w};
  });
  return plan;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "EXE-GAN custom ops (fused_bias_act, upfirdn2d); see op/csrc/ops.cpp";
  m.def("fused_bias_act", &fused_bias_act,
        "bias + activation * gain (grad=0), or gradient * slope(ref) * gain (grad=1)");
  m.def("upfirdn2d", &upfirdn2d,
        "upsample, pad, FIR-filter, downsample (x [N, H, W]); tile -1 = general kernel, "
        "0 / 1 / 2 = that tiled case");
  m.def("upfirdn2d_tiled_plan", &upfirdn2d_tiled_plan,
        "(case, tile_h, tile_w, in_h, in_w, blocks, out_h, out_w) of the tiled kernel; "
        "case -1 = no tiled kernel");
}
