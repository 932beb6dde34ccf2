// Helpers shared by densert's tests: fixture paths, tensor comparison and small graph builders.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/ir.h"

namespace densert::testing {

// Folder holding the generated DenseNet fixtures (DENSERT_FIXTURE_DIR).
std::string fixture_dir();
// The source tree (DENSERT_SOURCE_DIR).
std::string source_dir();
// The build tree (DENSERT_BINARY_DIR).
std::string binary_dir();

// max |a - b| over all elements; infinity if the shapes differ.
float max_abs_diff(const Tensor& a, const Tensor& b);
float max_abs(const Tensor& t);
// Index of the largest value of row `row` of a [rows, classes] tensor.
int64_t argmax_row(const Tensor& t, int64_t row);
// Rows [begin, end) of a tensor along dim 0.
Tensor slice_batch(const Tensor& t, int64_t begin, int64_t end);

// Asserts max |actual - expected| <= relative * max |expected| and identical top-1 per row.
void expect_close_with_same_top1(const Tensor& actual, const Tensor& expected, float relative,
                                 const std::string& what);

// A deterministic pseudo-random tensor with values in [lo, hi).
Tensor random_tensor(const Dims& dims, uint32_t seed, float lo = -1.0f, float hi = 1.0f);

}  // namespace densert::testing
