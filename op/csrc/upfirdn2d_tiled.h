// Tiled upfirdn2d: one block computes a TILE_H x TILE_W tile of outputs of one [H, W] plane,
// after staging the input samples the tile reads (the tile plus its halo) and the kernel in
// shared memory. Specialised at compile time for the networks' cases (4x4 kernel; up 2, down 2,
// or neither); any other parameters take the general kernel (upfirdn2d.h).
//
// The per-block work is written as two host+device functions of (tile index, thread index,
// thread count, shared buffer), with a barrier between them:
//
//   Tile::load(x, kernel, p, block, tid, nthreads, smem)       every thread stages part of the
//                                                              input tile and the kernel
//   -- __syncthreads() --
//   Tile::compute(out, p, block, tid, nthreads, smem)          every thread computes part of
//                                                              the output tile
//
// The CUDA kernel runs them with threadIdx / blockIdx; ops.cpp runs the whole grid on the CPU,
// one block after another, each phase for every thread id before the next phase (exactly what
// the barrier guarantees), so tile edges, halos, negative pads and partial tiles are exercised
// on a machine without a GPU (tests/op/test_cuda_compile.py).
//
// Summation order: an output visits the same taps in the same order as upfirdn2d_sample (rows
// i = i_start, i_start + UP, ...; within a row j = j_start, j_start + UP, ...), with the same
// casts to the accumulate type. Taps that fall on padding read a staged zero instead of being
// skipped, and adding an exact zero product leaves a finite sum unchanged, so each output is the
// same floating-point value as the general kernel's (checked bit for bit on the CPU).
#pragma once

#include <c10/util/Exception.h>

#include "upfirdn2d.h"

// Floor division for a possibly negative numerator (C++'s / truncates towards zero).
EXEGAN_HOST_DEVICE int exegan_floor_div(int a, int b) {
  return (a >= 0) ? a / b : -((-a + b - 1) / b);
}

// The specialised cases: 0 = plain 4x4 filter (up 1, down 1), 1 = up 2, 2 = down 2; -1 = none
// (the general kernel runs). Pads, sizes and the kernel's values are free.
EXEGAN_HOST_DEVICE int upfirdn2d_tiled_case(const UpFirDn2dParams& p) {
  if (p.kernel_h != 4 || p.kernel_w != 4) return -1;
  if (p.up_x != p.up_y || p.down_x != p.down_y) return -1;
  if (p.up_x == 1 && p.down_x == 1) return 0;
  if (p.up_x == 2 && p.down_x == 1) return 1;
  if (p.up_x == 1 && p.down_x == 2) return 2;
  return -1;
}

template <int UP, int DOWN, int K, int TILE_H, int TILE_W>
struct UpFirDn2dTile {
  static constexpr int up = UP, down = DOWN, k = K, tile_h = TILE_H, tile_w = TILE_W;
  // Input rows a tile can read: the multiples of UP among the (TILE_H - 1) * DOWN + K
  // consecutive zero-inserted positions its taps cover, rounded up.
  static constexpr int in_h = ((TILE_H - 1) * DOWN + K + UP - 1) / UP;
  static constexpr int in_w = ((TILE_W - 1) * DOWN + K + UP - 1) / UP;
  static constexpr int smem_elems = in_h * in_w + K * K;  // input tile, then the kernel

  // Tiles per plane and in the whole grid (one block per tile).
  EXEGAN_HOST_DEVICE static int tiles_y(const UpFirDn2dParams& p) { return (p.out_h + TILE_H - 1) / TILE_H; }
  EXEGAN_HOST_DEVICE static int tiles_x(const UpFirDn2dParams& p) { return (p.out_w + TILE_W - 1) / TILE_W; }
  EXEGAN_HOST_DEVICE static int64_t num_tiles(const UpFirDn2dParams& p) {
    const int64_t planes = p.total / (static_cast<int64_t>(p.out_h) * p.out_w);
    return planes * tiles_y(p) * tiles_x(p);
  }

  // Where tile `block` lies: plane n, first output row / column, first staged input row / column.
  struct Where {
    int64_t n;
    int oy0, ox0, iy0, ix0;
  };
  EXEGAN_HOST_DEVICE static Where where(const UpFirDn2dParams& p, int64_t block) {
    Where w;
    const int tx = tiles_x(p), ty = tiles_y(p);
    const int bx = static_cast<int>(block % tx);
    const int by = static_cast<int>((block / tx) % ty);
    w.n = block / (static_cast<int64_t>(tx) * ty);
    w.oy0 = by * TILE_H;
    w.ox0 = bx * TILE_W;
    // First input sample a tap of the tile's first output can land on: ceil(pos / UP).
    w.iy0 = exegan_floor_div(w.oy0 * DOWN - p.pad_y0 + UP - 1, UP);
    w.ix0 = exegan_floor_div(w.ox0 * DOWN - p.pad_x0 + UP - 1, UP);
    return w;
  }

  // Phase 1: stage the input tile (zeros outside the input) and the kernel in smem.
  template <typename scalar_t>
  EXEGAN_HOST_DEVICE static void load(const scalar_t* x, const scalar_t* kernel,
                                      const UpFirDn2dParams& p, int64_t block, int tid,
                                      int nthreads, scalar_t* smem) {
    const Where w = where(p, block);
    const scalar_t* xn = x + w.n * p.in_h * p.in_w;
    for (int e = tid; e < in_h * in_w; e += nthreads) {
      const int iy = w.iy0 + e / in_w;
      const int ix = w.ix0 + e % in_w;
      const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
      smem[e] = inside ? xn[static_cast<int64_t>(iy) * p.in_w + ix] : scalar_t(0);
    }
    for (int e = tid; e < K * K; e += nthreads) smem[in_h * in_w + e] = kernel[e];
  }

  // Phase 2: each thread computes outputs tid, tid + nthreads, ... of the tile (row-major, so
  // neighbouring threads write neighbouring outputs).
  template <typename scalar_t, typename acc_t>
  EXEGAN_HOST_DEVICE static void compute(scalar_t* out, const UpFirDn2dParams& p, int64_t block,
                                         int tid, int nthreads, const scalar_t* smem) {
    const Where w = where(p, block);
    const scalar_t* ks = smem + in_h * in_w;
    scalar_t* on = out + w.n * p.out_h * p.out_w;
    for (int e = tid; e < TILE_H * TILE_W; e += nthreads) {
      const int oy = w.oy0 + e / TILE_W;
      const int ox = w.ox0 + e % TILE_W;
      if (oy >= p.out_h || ox >= p.out_w) continue;  // a partial tile at the plane's edge
      // As in upfirdn2d_sample: where tap 0 falls in the zero-inserted, padded signal.
      const int uy0 = oy * DOWN - p.pad_y0;
      const int ux0 = ox * DOWN - p.pad_x0;
      const int i_start = exegan_mod_pos(-uy0, UP);
      const int j_start = exegan_mod_pos(-ux0, UP);
      acc_t acc = acc_t(0);
      for (int i = i_start; i < K; i += UP) {
        const int row = ((uy0 + i) / UP - w.iy0) * in_w - w.ix0;  // exact: uy0 + i = m * UP
        const scalar_t* krow = ks + (K - 1 - i) * K;  // flipped kernel, as the general kernel
        for (int j = j_start; j < K; j += UP) {
          acc += static_cast<acc_t>(smem[row + (ux0 + j) / UP]) *
                 static_cast<acc_t>(krow[K - 1 - j]);
        }
      }
      on[static_cast<int64_t>(oy) * p.out_w + ox] = static_cast<scalar_t>(acc);
    }
  }
};

// Tile shapes: 32 x 32 outputs per block (4 per thread at 256 threads); input tiles of 35 x 35
// (blur), 18 x 18 (up 2) and 66 x 66 (down 2) samples: at most 17 KB of shared memory in float,
// 35 KB in double, within the 48 KB a block may declare statically.
using UpFirDn2dTileBlur = UpFirDn2dTile<1, 1, 4, 32, 32>;
using UpFirDn2dTileUp2 = UpFirDn2dTile<2, 1, 4, 32, 32>;
using UpFirDn2dTileDown2 = UpFirDn2dTile<1, 2, 4, 32, 32>;
constexpr int kUpFirDn2dTiledThreads = 256;

// Calls fn(Tile()) with the tile type of case `c` (0, 1, 2; see upfirdn2d_tiled_case). Any other
// value is an error: running some tile for a case it was not written for would give wrong values.
template <typename Fn>
void upfirdn2d_tiled_dispatch(int c, Fn&& fn) {
  switch (c) {
    case 0: fn(UpFirDn2dTileBlur()); break;
    case 1: fn(UpFirDn2dTileUp2()); break;
    case 2: fn(UpFirDn2dTileDown2()); break;
    default: TORCH_CHECK(false, "upfirdn2d: there is no tiled kernel for case ", c,
                         " (the cases are 0 = blur, 1 = up 2, 2 = down 2)");
  }
}
