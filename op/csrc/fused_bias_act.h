// Per-element math of fused_bias_act (modes described in ops.cpp).
#pragma once

#include "common.h"

struct FusedBiasActParams {
  int64_t n;         // number of elements
  int64_t step;      // elements per (sample, channel): the bias index is (i / step) % channels
  int64_t channels;
  int act;           // 0 = linear, 1 = leaky ReLU
  int grad;          // 0 = forward, 1 = gradient times slope
  double alpha;      // leaky-ReLU negative slope
  double gain;
};

// Arithmetic runs in acc_t (float for half/bfloat16), so half-precision values are rounded
// once, on the store. b and ref may be null.
template <typename scalar_t, typename acc_t>
EXEGAN_HOST_DEVICE acc_t fused_bias_act_element(const scalar_t* x, const scalar_t* b,
                                                const scalar_t* ref, const FusedBiasActParams& p,
                                                int64_t i) {
  const acc_t alpha = static_cast<acc_t>(p.alpha);
  const acc_t gain = static_cast<acc_t>(p.gain);
  acc_t v = static_cast<acc_t>(x[i]);
  if (p.grad == 0) {
    if (b != nullptr) v += static_cast<acc_t>(b[(i / p.step) % p.channels]);
    // Same branch as torch's leaky_relu: the positive part only for v > 0.
    if (p.act == 1 && !(v > acc_t(0))) v *= alpha;
    return v * gain;
  }
  acc_t slope = acc_t(1);
  if (p.act == 1) {
    // ref = act(x + b) * gain: its sign is the pre-activation's, flipped by a negative gain.
    // Zero counts as the negative side, like torch's leaky_relu backward.
    const acc_t r = static_cast<acc_t>(ref[i]);
    const bool positive = gain >= acc_t(0) ? r > acc_t(0) : r < acc_t(0);
    slope = positive ? acc_t(1) : alpha;
  }
  return v * slope * gain;
}
