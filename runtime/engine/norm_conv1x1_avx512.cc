// The AVX-512 body of NormConv1x1. Compiled with -mavx512f; see norm_conv1x1_avx512.h for why
// it uses no library templates.
//
// Layouts (one image): src and dst are nChw16c, element (c, p) at (c / 16) * pixels * 16 +
// p * 16 + c % 16. The weights come in groups of up to four output blocks (64 channels); group
// g holds, for each input channel i, the group's output channels contiguously:
// weights[g * 64 * in_channels + i * nb * 16 + o], so one input channel's contribution to the
// group is nb aligned vector loads.
//
// Work: the pixels are cut into tiles; an item is (tile, group). A thread takes a contiguous
// run of items, so it normalizes each of its tiles once, into its own scratch in the layout
// [in_block][tile pixel][16], and then convolves that tile for each of its groups. The input
// channels are taken in chunks whose weights fit the L1 cache, with partial sums kept in dst.
// The register tile is `ur` pixels by nb output blocks of accumulators; each input channel adds
// one broadcast input value times nb weight vectors to each pixel's accumulators.
#include "runtime/engine/norm_conv1x1_avx512.h"

#include <immintrin.h>
#include <omp.h>

// GCC 12's _mm512_max_ps/_mm512_min_ps pass _mm512_undefined_ps() as the unused merge source,
// which -Wmaybe-uninitialized reports once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace densert::avx512 {
namespace {

constexpr int64_t kChunkBlocks = 4;  // input blocks per L1 chunk: 4 * 16 * 64 * 4 B = 16 KiB

inline int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// min(max(v, lo), hi). vmaxps and vminps return their second operand when either is NaN, so
// the operand order decides whether NaN becomes lo or passes through.
inline __attribute__((always_inline)) __m512 clamp(__m512 v, __m512 lo, __m512 hi, bool nan_to_lo) {
  return nan_to_lo ? _mm512_min_ps(_mm512_max_ps(v, lo), hi)
                   : _mm512_min_ps(hi, _mm512_max_ps(lo, v));
}

// How a finished accumulator is written: clamped, and zero in padding channels.
struct Epilogue {
  __m512 lo, hi;
  bool nan_to_lo;
  const uint16_t* lanes;  // per output block of the group: its real channels
};

// acc += x * w, always in the accumulate-into-acc form: with the plain intrinsic GCC may pick
// a form that overwrites an operand and then copies registers back and forth (measured ~10%).
inline __attribute__((always_inline)) void multiply_add(__m512& acc, __m512 x, __m512 w) {
  asm("vfmadd231ps %[w], %[x], %[acc]" : [acc] "+v"(acc) : [x] "v"(x), [w] "v"(w));
}

// x: normalized tile at (first block of the chunk, first pixel); x_stride floats between input
// blocks. w: the group's weights at the chunk's first input channel. y: dst at (the group's
// first block, first pixel); y_stride floats between output blocks.
template <int NB, int UR>
inline __attribute__((always_inline)) void accumulate_tile(const float* x, int64_t x_stride,
                                                           const float* w, int64_t blocks, float* y,
                                                           int64_t y_stride, const float* bias,
                                                           bool first, bool last,
                                                           const Epilogue& e) {
  __m512 acc[UR][NB];
  if (first) {
#pragma GCC unroll 32
    for (int j = 0; j < NB; ++j) {
      const __m512 b = _mm512_loadu_ps(bias + j * 16);
#pragma GCC unroll 32
      for (int u = 0; u < UR; ++u)
        acc[u][j] = b;
    }
  } else {
#pragma GCC unroll 32
    for (int j = 0; j < NB; ++j) {
#pragma GCC unroll 32
      for (int u = 0; u < UR; ++u)
        acc[u][j] = _mm512_loadu_ps(y + j * y_stride + u * 16);
    }
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * x_stride;
    const float* wb = w + b * 16 * NB * 16;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      __m512 wv[NB];
#pragma GCC unroll 32
      for (int j = 0; j < NB; ++j)
        wv[j] = _mm512_loadu_ps(wb + (i * NB + j) * 16);
#pragma GCC unroll 32
      for (int u = 0; u < UR; ++u) {
        const __m512 xv = _mm512_set1_ps(xb[u * 16 + i]);
#pragma GCC unroll 32
        for (int j = 0; j < NB; ++j)
          multiply_add(acc[u][j], xv, wv[j]);
      }
    }
  }
#pragma GCC unroll 32
  for (int j = 0; j < NB; ++j) {
#pragma GCC unroll 32
    for (int u = 0; u < UR; ++u) {
      __m512 v = acc[u][j];
      if (last) v = _mm512_maskz_mov_ps(e.lanes[j], clamp(v, e.lo, e.hi, e.nan_to_lo));
      _mm512_storeu_ps(y + j * y_stride + u * 16, v);
    }
  }
}

// The last pixels of a tile, fewer than a full register tile.
template <int NB, int UR>
inline void tail_tile(int64_t count, const float* x, int64_t x_stride, const float* w,
                      int64_t blocks, float* y, int64_t y_stride, const float* bias, bool first,
                      bool last, const Epilogue& e) {
  if constexpr (UR > 0) {
    if (count == UR) {
      accumulate_tile<NB, UR>(x, x_stride, w, blocks, y, y_stride, bias, first, last, e);
    } else {
      tail_tile<NB, UR - 1>(count, x, x_stride, w, blocks, y, y_stride, bias, first, last, e);
    }
  }
}

// One group of NB output blocks over a normalized tile of `count` pixels.
template <int NB>
void convolve_group(const NormConv1x1Args& a, const float* tile, int64_t tile_stride, int64_t count,
                    const float* w, const float* bias, const uint16_t* lanes, float* y) {
  constexpr int64_t ur = register_tile(NB);
  const int64_t y_stride = a.pixels * 16;
  const Epilogue e = {_mm512_set1_ps(a.out_lo), _mm512_set1_ps(a.out_hi), a.out_nan_to_lo, lanes};
  const char* weights_end =
      reinterpret_cast<const char*>(a.weights + a.in_blocks * 16 * a.out_blocks * 16);
  const int64_t register_tiles = (count + ur - 1) / ur;
  for (int64_t c0 = 0; c0 < a.in_blocks; c0 += kChunkBlocks) {
    const int64_t blocks = min64(kChunkBlocks, a.in_blocks - c0);
    const bool first = c0 == 0, last = c0 + blocks == a.in_blocks;
    const float* x = tile + c0 * tile_stride;
    const float* wc = w + c0 * 16 * NB * 16;
    // The weights of the next chunk (or group) follow this chunk's in memory: each register
    // tile asks for its share of them to reach L2 before they are needed. On small maps the
    // weights are most of the bytes a layer reads.
    const char* next = reinterpret_cast<const char*>(wc + blocks * 16 * NB * 16);
    const int64_t next_lines =
        min64(kChunkBlocks * 16 * NB * 16 * 4, next < weights_end ? weights_end - next : 0) / 64;
    int64_t r = 0;
    const auto prefetch_share = [&] {
      for (int64_t l = r * next_lines / register_tiles; l < (r + 1) * next_lines / register_tiles;
           ++l) {
        _mm_prefetch(next + l * 64, _MM_HINT_T1);
      }
      ++r;
    };
    int64_t p = 0;
    for (; p + ur <= count; p += ur) {
      prefetch_share();
      accumulate_tile<NB, ur>(x + p * 16, tile_stride, wc, blocks, y + p * 16, y_stride, bias,
                              first, last, e);
    }
    if (p < count) {
      prefetch_share();
      tail_tile<NB, ur - 1>(count - p, x + p * 16, tile_stride, wc, blocks, y + p * 16, y_stride,
                            bias, first, last, e);
    }
  }
}

// tile[b][p][16] = clamp(src[b][first + p][16] * scale + shift) for `count` pixels; with a
// pool, the mean of that over the pixel's 2x2 input window. Padding channels become 0 whatever
// they hold (an infinity times a padding weight of 0 leaves a NaN there).
void normalize_tile(const NormConv1x1Args& a, int64_t first, int64_t count, float* tile) {
  const __m512 lo = _mm512_set1_ps(a.in_lo), hi = _mm512_set1_ps(a.in_hi);
  if (a.pool == 2) {
    const __m512 quarter = _mm512_set1_ps(0.25f);
    for (int64_t b = 0; b < a.in_blocks; ++b) {
      const __m512 s = _mm512_loadu_ps(a.scale + b * 16);
      const __m512 t = _mm512_loadu_ps(a.shift + b * 16);
      const __mmask16 real = a.in_lanes[b];
      const auto norm = [&](const float* x) {
        return clamp(_mm512_fmadd_ps(_mm512_loadu_ps(x), s, t), lo, hi, a.in_nan_to_lo);
      };
      const float* in = a.src + b * a.in_pixels * 16;
      float* out = tile + b * a.tile_pixels * 16;
      int64_t y = first / a.width, x = first % a.width;
      for (int64_t p = 0; p < count; ++p) {
        const float* top = in + (2 * y * a.in_width + 2 * x) * 16;
        const float* bottom = top + a.in_width * 16;
        const __m512 sum = _mm512_add_ps(_mm512_add_ps(norm(top), norm(top + 16)),
                                         _mm512_add_ps(norm(bottom), norm(bottom + 16)));
        _mm512_storeu_ps(out + p * 16, _mm512_maskz_mul_ps(real, sum, quarter));
        if (++x == a.width) {
          x = 0;
          ++y;
        }
      }
    }
    return;
  }
  for (int64_t b = 0; b < a.in_blocks; ++b) {
    const __m512 s = _mm512_loadu_ps(a.scale + b * 16);
    const __m512 t = _mm512_loadu_ps(a.shift + b * 16);
    const __mmask16 real = a.in_lanes[b];
    const float* in = a.src + (b * a.pixels + first) * 16;
    float* out = tile + b * a.tile_pixels * 16;
    // A pixel of a block is one cache line; the next block's run starts far away, so ask for
    // its lines one block ahead instead of waiting for the hardware prefetcher to find it.
    const char* ahead = reinterpret_cast<const char*>(in + a.pixels * 16);
    const bool prefetch = b + 1 < a.in_blocks;
    for (int64_t p = 0; p < count; ++p) {
      if (prefetch) _mm_prefetch(ahead + p * 64, _MM_HINT_T0);
      const __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(in + p * 16), s, t);
      _mm512_storeu_ps(out + p * 16, _mm512_maskz_mov_ps(real, clamp(v, lo, hi, a.in_nan_to_lo)));
    }
  }
}

void run_items(const NormConv1x1Args& a, int64_t begin, int64_t end, float* tile) {
  const int64_t groups = (a.out_blocks + kGroupBlocks - 1) / kGroupBlocks;
  const int64_t in_channels = a.in_blocks * 16;
  const int64_t tile_stride = a.tile_pixels * 16;
  int64_t normalized = -1;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t t = item / groups, g = item % groups;
    const int64_t first = t * a.tile_pixels;
    const int64_t count = min64(a.tile_pixels, a.pixels - first);
    if (t != normalized) {
      normalize_tile(a, first, count, tile);
      normalized = t;
    }
    const int64_t nb = min64(kGroupBlocks, a.out_blocks - g * kGroupBlocks);
    const float* w = a.weights + g * kGroupBlocks * 16 * in_channels;
    const float* bias = a.bias + g * kGroupBlocks * 16;
    const uint16_t* lanes = a.out_lanes + g * kGroupBlocks;
    float* y = a.dst + (g * kGroupBlocks * a.pixels + first) * 16;
    switch (nb) {
      case 4:
        convolve_group<4>(a, tile, tile_stride, count, w, bias, lanes, y);
        break;
      case 3:
        convolve_group<3>(a, tile, tile_stride, count, w, bias, lanes, y);
        break;
      case 2:
        convolve_group<2>(a, tile, tile_stride, count, w, bias, lanes, y);
        break;
      default:
        convolve_group<1>(a, tile, tile_stride, count, w, bias, lanes, y);
        break;
    }
  }
}

}  // namespace

void norm_conv1x1(const NormConv1x1Args& a) {
  const int64_t groups = (a.out_blocks + kGroupBlocks - 1) / kGroupBlocks;
  const int64_t tiles = (a.pixels + a.tile_pixels - 1) / a.tile_pixels;
  const int64_t items = tiles * groups;
  const int64_t tile_floats = a.tile_pixels * a.in_blocks * 16;
  if (a.threads <= 1 || items == 1) {
    run_items(a, 0, items, a.scratch);
    return;
  }
#pragma omp parallel num_threads(a.threads)
  {
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    run_items(a, items * t / n, items * (t + 1) / n, a.scratch + t * tile_floats);
  }
}

}  // namespace densert::avx512
