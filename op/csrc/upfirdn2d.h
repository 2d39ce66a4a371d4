// Per-output-sample math of upfirdn2d (semantics in ops.cpp).
//
// Instead of materialising the zero-inserted signal, an output sample visits only the kernel
// taps that land on real input samples: with upsampling factor u, every u-th tap starting from
// the first one aligned with a sample.
#pragma once

#include "common.h"

struct UpFirDn2dParams {
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int in_h, in_w, out_h, out_w, kernel_h, kernel_w;
  int64_t total;  // N * out_h * out_w
};

// a mod m in [0, m), also for negative a (C++'s % keeps the sign of a).
EXEGAN_HOST_DEVICE int exegan_mod_pos(int a, int m) { return ((a % m) + m) % m; }

// Output sample idx (flat index into [N, out_h, out_w]) of x [N, in_h, in_w] (contiguous).
template <typename scalar_t, typename acc_t>
EXEGAN_HOST_DEVICE acc_t upfirdn2d_sample(const scalar_t* x, const scalar_t* kernel,
                                          const UpFirDn2dParams& p, int64_t idx) {
  const int ox = static_cast<int>(idx % p.out_w);
  const int oy = static_cast<int>((idx / p.out_w) % p.out_h);
  const int64_t n = idx / (static_cast<int64_t>(p.out_w) * p.out_h);
  // Where kernel tap 0 falls in the zero-inserted signal (the padding shifts it).
  const int uy0 = oy * p.down_y - p.pad_y0;
  const int ux0 = ox * p.down_x - p.pad_x0;
  // First taps that land on real samples (upsampled positions divisible by up).
  const int i_start = exegan_mod_pos(-uy0, p.up_y);
  const int j_start = exegan_mod_pos(-ux0, p.up_x);
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
  return acc;
}
