// Interface of the AVX-512 translation unit of NormConv1x1. That unit is compiled for AVX-512
// and so must not instantiate inline library code another unit could share: it takes plain
// pointers only.
#pragma once

#include <cstdint>

namespace densert::avx512 {

struct NormConv1x1Args {
  int64_t in_blocks = 0;   // input channels / 16
  int64_t out_blocks = 0;  // output channels / 16
  int64_t pixels = 0;      // of the output map
  int64_t width = 0;       // of the output map
  int64_t pool = 1;        // 2: each output pixel averages a 2x2 window of the input map
  int64_t in_width = 0, in_pixels = 0;
  int64_t tile_pixels = 0;
  const float* scale = nullptr;    // in_blocks * 16
  const float* shift = nullptr;    // in_blocks * 16
  const float* weights = nullptr;  // groups of up to 4 output blocks, see pack in the .cc
  const float* bias = nullptr;     // out_blocks * 16
  // Per block, bit c set where channel c of the block is real: padding channels read and
  // write as 0.
  const uint16_t* in_lanes = nullptr;
  const uint16_t* out_lanes = nullptr;
  // Clamps of the normalized input and of the result. With nan_to_lo a NaN becomes lo (ReLU's
  // rule, x > 0 ? x : 0); otherwise NaN passes through (Clip, or no activation).
  float in_lo = 0, in_hi = 0, out_lo = 0, out_hi = 0;
  bool in_nan_to_lo = false, out_nan_to_lo = false;
  const float* src = nullptr;
  float* dst = nullptr;
  float* scratch = nullptr;  // threads * tile_pixels * in_blocks * 16
  int threads = 1;
};

// Output blocks per weight group, and pixels per register tile for a group of nb blocks.
constexpr int kGroupBlocks = 4;
constexpr int register_tile(int nb) {
  return nb == 4 ? 6 : nb == 3 ? 8 : nb == 2 ? 12 : 14;
}

void norm_conv1x1(const NormConv1x1Args& args);

}  // namespace densert::avx512
