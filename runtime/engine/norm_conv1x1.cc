// NormConv1x1 outside its loops: tile sizes, weight packing and the CPU check. The loops are in
// norm_conv1x1_avx512.cc.
#include "runtime/engine/norm_conv1x1.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/engine/norm_conv1x1_avx512.h"

namespace densert {
namespace {

constexpr int64_t kBlock = 16;
// Normalized input a thread keeps per tile: 256 KiB, a fraction of any AVX-512 core's L2.
constexpr int64_t kTileBudgetFloats = 64 * 1024;
// Budget-sized tiles are multiples of 24 pixels, a multiple of every register tile (6, 8, 12).
constexpr int64_t kTileQuantum = 24;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Pixels per tile: as many as the budget allows, then smaller until every thread gets an
// (ideally equal) share of the (tile, group) items.
int64_t choose_tile_pixels(const NormConv1x1Shape& s, int threads) {
  const int64_t groups = ceil_div(s.out_channels / kBlock, avx512::kGroupBlocks);
  const int64_t max_tile =
      std::max(kTileQuantum, kTileBudgetFloats / s.in_channels / kTileQuantum * kTileQuantum);
  int64_t tiles = ceil_div(s.pixels(), max_tile);
  const int64_t balanced = 8 * static_cast<int64_t>(threads);
  while (tiles < s.pixels() && tiles * groups < balanced && (tiles * groups) % threads != 0)
    ++tiles;
  // Balanced tiles round up to 6 pixels, the register tile of full 64-channel groups.
  int64_t tile = ceil_div(s.pixels(), tiles);
  if (tile > kTileQuantum) tile = std::min(s.pixels(), ceil_div(tile, 6) * 6);
  return tile;
}

// An activation as the kernel's clamp: ReLU is [0, inf) with NaN sent to 0 (x > 0 ? x : 0),
// Clip is [min, max] and keeps NaN, no activation clamps nothing.
void set_clamp(const Activation& act, float& lo, float& hi, bool& nan_to_lo) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  lo = -inf;
  hi = inf;
  nan_to_lo = false;
  if (act.kind == Activation::Kind::kRelu) {
    lo = 0.0f;
    nan_to_lo = true;
  } else if (act.kind == Activation::Kind::kClip) {
    lo = act.min;
    hi = act.max;
  }
}

}  // namespace

void NormConv1x1::Aligned::operator()(float* p) const {
  std::free(p);
}

NormConv1x1::Buffer NormConv1x1::allocate(int64_t floats) {
  const size_t bytes = static_cast<size_t>((std::max<int64_t>(floats, 16) * 4 + 63) / 64 * 64);
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return Buffer(p);
}

NormConv1x1::NormConv1x1(const NormConv1x1Shape& shape, const float* scale, const float* shift,
                         const Activation& input_activation, const float* weights,
                         const float* bias, const Activation& output_activation, int max_threads)
    : shape_(shape), input_activation_(input_activation), output_activation_(output_activation) {
  const int64_t ic = shape.in_channels, oc = shape.out_channels;
  tile_pixels_ = choose_tile_pixels(shape, std::max(1, max_threads));
  scale_ = allocate(ic);
  shift_ = allocate(ic);
  bias_ = allocate(oc);
  std::copy_n(scale, ic, scale_.get());
  std::copy_n(shift, ic, shift_.get());
  std::copy_n(bias, oc, bias_.get());
  shape_.in_lanes.resize(static_cast<size_t>(ic / kBlock), 0xFFFF);
  shape_.out_lanes.resize(static_cast<size_t>(oc / kBlock), 0xFFFF);
  // Groups of up to four output blocks, each [input channel][the group's output channels].
  weights_ = allocate(ic * oc);
  const int64_t group_channels = avx512::kGroupBlocks * kBlock;
  for (int64_t g0 = 0; g0 < oc; g0 += group_channels) {
    const int64_t width = std::min(group_channels, oc - g0);
    float* group = weights_.get() + g0 * ic;
    for (int64_t i = 0; i < ic; ++i) {
      for (int64_t o = 0; o < width; ++o)
        group[i * width + o] = weights[(g0 + o) * ic + i];
    }
  }
}

bool NormConv1x1::supported() {
  // oneDNN's effective ISA follows ONEDNN_MAX_CPU_ISA, so one setting caps both kernels.
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  return __builtin_cpu_supports("avx512f") && (isa & avx512) == avx512;
}

int64_t NormConv1x1::scratch_floats(int threads) const {
  return static_cast<int64_t>(std::max(threads, 1)) * tile_pixels_ * shape_.in_channels;
}

int64_t NormConv1x1::weight_bytes() const {
  return (shape_.in_channels * shape_.out_channels + 2 * shape_.in_channels + shape_.out_channels) *
         static_cast<int64_t>(sizeof(float));
}

void NormConv1x1::run(const float* src, float* dst, float* scratch, int threads) const {
  avx512::NormConv1x1Args a;
  a.in_blocks = shape_.in_channels / kBlock;
  a.out_blocks = shape_.out_channels / kBlock;
  a.pixels = shape_.pixels();
  a.width = shape_.width();
  a.pool = shape_.pool;
  a.in_width = shape_.in_width;
  a.in_pixels = shape_.in_height * shape_.in_width;
  a.tile_pixels = tile_pixels_;
  a.scale = scale_.get();
  a.shift = shift_.get();
  a.weights = weights_.get();
  a.bias = bias_.get();
  a.in_lanes = shape_.in_lanes.data();
  a.out_lanes = shape_.out_lanes.data();
  set_clamp(input_activation_, a.in_lo, a.in_hi, a.in_nan_to_lo);
  set_clamp(output_activation_, a.out_lo, a.out_hi, a.out_nan_to_lo);
  a.src = src;
  a.dst = dst;
  a.scratch = scratch;
  a.threads = std::max(threads, 1);
  avx512::norm_conv1x1(a);
}

}  // namespace densert
