// densert's own kernel for the bottleneck of every dense layer: a per-channel affine map with a
// clamp (BatchNormalization + ReLU) followed by a 1x1 convolution with bias and a clamp (the
// next BatchNormalization folded in, ReLU as a post-op), on one image in nChw16c. It also runs
// DenseNet transitions, whose 2x2 average pool sits between the two (after the optimizer has
// moved the pool in front of the convolution): the pool then averages the normalized input.
//
// oneDNN 2.6 cannot fuse an op in front of a convolution, so run as primitives the pair writes
// the normalized input to memory and reads it back, and each DenseNet layer normalizes its whole
// concatenated input. Here a thread normalizes one tile of pixels (all input channels) into a
// buffer that stays in its L2 cache and runs the convolution over that tile straight away.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/ir.h"

namespace densert {

// Geometry and parameters of one fused step. Channel counts are physical (multiples of 16);
// padding channels carry zero scale, shift, weights and bias.
struct NormConv1x1Shape {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t in_height = 0, in_width = 0;
  int64_t pool = 1;  // 1, or 2 for a 2x2 average pool with stride 2 (odd last rows dropped)
  // Which physical channels are real, bit c % 16 of entry c / 16 (empty: all of them).
  // Padding channels read as 0 whatever they hold and are written as 0.
  std::vector<uint16_t> in_lanes, out_lanes;

  int64_t height() const { return in_height / pool; }
  int64_t width() const { return in_width / pool; }
  int64_t pixels() const { return height() * width(); }
};

class NormConv1x1 {
 public:
  // The normalized input is activation(x * scale + shift) per channel; weights are
  // [out_channels][in_channels] row-major; the result is output_activation(conv + bias).
  // Activations follow densert's reference (Activation::apply), NaN included.
  NormConv1x1(const NormConv1x1Shape& shape, const float* scale, const float* shift,
              const Activation& input_activation, const float* weights, const float* bias,
              const Activation& output_activation, int max_threads);

  // True where the CPU runs this kernel (AVX-512) and oneDNN's ISA is not capped below it.
  static bool supported();

  // Floats of thread-local scratch that run() needs for `threads` threads.
  int64_t scratch_floats(int threads) const;
  // Runs on `threads` threads (at most the max_threads given at construction) of the calling
  // thread's OpenMP team. src and dst are nChw16c images; scratch holds scratch_floats(threads).
  void run(const float* src, float* dst, float* scratch, int threads) const;

  int64_t weight_bytes() const;
  const NormConv1x1Shape& shape() const { return shape_; }

 private:
  struct Aligned {
    void operator()(float* p) const;
  };
  using Buffer = std::unique_ptr<float[], Aligned>;
  static Buffer allocate(int64_t floats);

  NormConv1x1Shape shape_;
  int64_t tile_pixels_ = 0;
  Buffer scale_, shift_, weights_, bias_;
  Activation input_activation_, output_activation_;
};

}  // namespace densert
