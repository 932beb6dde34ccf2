// Implementation of the shared test helpers.
#include "tests/support/test_support.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>

namespace densert::testing {

std::string fixture_dir() {
  const char* dir = std::getenv("DENSERT_FIXTURE_DIR");
  return dir ? dir : DENSERT_TEST_FIXTURE_DIR;
}

std::string source_dir() {
  const char* dir = std::getenv("DENSERT_SOURCE_DIR");
  return dir ? dir : DENSERT_TEST_SOURCE_DIR;
}

std::string binary_dir() {
  const char* dir = std::getenv("DENSERT_BINARY_DIR");
  return dir ? dir : DENSERT_TEST_BINARY_DIR;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.dims != b.dims || a.data.size() != b.data.size())
    return std::numeric_limits<float>::infinity();
  float diff = 0.0f;
  for (size_t i = 0; i < a.data.size(); ++i) {
    const float d = std::fabs(a.data[i] - b.data[i]);
    if (std::isnan(d)) return std::numeric_limits<float>::infinity();
    diff = std::max(diff, d);
  }
  return diff;
}

float max_abs(const Tensor& t) {
  float m = 0.0f;
  for (float v : t.data)
    m = std::max(m, std::fabs(v));
  return m;
}

int64_t argmax_row(const Tensor& t, int64_t row) {
  const int64_t classes = t.numel() / t.dims[0];
  const float* begin = t.data.data() + row * classes;
  return std::max_element(begin, begin + classes) - begin;
}

Tensor slice_batch(const Tensor& t, int64_t begin, int64_t end) {
  Dims dims = t.dims;
  dims[0] = end - begin;
  const int64_t row = t.numel() / t.dims[0];
  return Tensor(dims, std::vector<float>(t.data.begin() + begin * row, t.data.begin() + end * row));
}

void expect_close_with_same_top1(const Tensor& actual, const Tensor& expected, float relative,
                                 const std::string& what) {
  ASSERT_EQ(dims_to_string(actual.dims), dims_to_string(expected.dims)) << what;
  const float diff = max_abs_diff(actual, expected);
  const float scale = max_abs(expected);
  EXPECT_LE(diff, relative * scale) << what << ": max |diff| " << diff << ", max |ref| " << scale;
  if (expected.dims.size() == 2) {
    for (int64_t row = 0; row < expected.dims[0]; ++row) {
      EXPECT_EQ(argmax_row(actual, row), argmax_row(expected, row)) << what << ": row " << row;
    }
  }
}

Tensor random_tensor(const Dims& dims, uint32_t seed, float lo, float hi) {
  Tensor t(dims);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : t.data)
    v = dist(rng);
  return t;
}

}  // namespace densert::testing
