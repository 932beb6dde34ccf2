// Every op of the reference executor against values worked out by hand, plus the shape
// errors it reports. The reference is the oracle for everything else, so it is checked
// against arithmetic, not against another implementation.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/reference_executor.h"
#include "runtime/shape_inference.h"
#include "tests/support/test_support.h"

namespace densert {
namespace {

// One operand of the node under test: graph inputs are fed at run time, constants are
// baked into the graph the way the importer stores weights.
struct Operand {
  Tensor tensor;
  bool constant = false;
};

Operand input(Dims dims, std::vector<float> values) {
  return {Tensor(dims, values), false};
}
Operand constant(Dims dims, std::vector<float> values) {
  return {Tensor(dims, values), true};
}

// 1, 2, 3, ... laid out over dims: small inputs whose every element is easy to name.
std::vector<float> counting(int64_t count, float first = 1.0f) {
  std::vector<float> values(static_cast<size_t>(count));
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = first + static_cast<float>(i);
  return values;
}

// Attribute builders: GCC flags designated initializers that leave out an Activation
// member (it has no default member initializer), so the cases build attributes here.
ConvAttrs conv_attrs(const Window& window, int64_t group = 1, Activation activation = {}) {
  ConvAttrs attrs;
  attrs.window = window;
  attrs.group = group;
  attrs.activation = activation;
  return attrs;
}

BatchNormAttrs batch_norm_attrs(float epsilon, Activation activation = {}) {
  BatchNormAttrs attrs;
  attrs.epsilon = epsilon;
  attrs.activation = activation;
  return attrs;
}

GemmAttrs gemm_attrs(float alpha, float beta, bool trans_a = false, bool trans_b = false,
                     Activation activation = {}) {
  GemmAttrs attrs;
  attrs.alpha = alpha;
  attrs.beta = beta;
  attrs.trans_a = trans_a;
  attrs.trans_b = trans_b;
  attrs.activation = activation;
  return attrs;
}

// Builds a graph holding the single node and runs it through run_reference.
Expected<Tensor> run_one_node(OpType op, const Attributes& attrs,
                              const std::vector<Operand>& operands,
                              const std::string& node_name = "n") {
  Graph graph;
  std::vector<ValueId> node_inputs;
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < operands.size(); ++i) {
    const std::string name = "in" + std::to_string(i);
    if (operands[i].constant) {
      node_inputs.push_back(graph.add_constant(name, operands[i].tensor));
    } else {
      const ValueId id = graph.add_value(name, operands[i].tensor.dims);
      graph.inputs.push_back(id);
      node_inputs.push_back(id);
      feeds.push_back(operands[i].tensor);
    }
  }
  const ValueId out = graph.add_value("out", {});
  graph.add_node(op, node_name, node_inputs, {out}, attrs);
  graph.outputs.push_back(out);
  DENSERT_ASSIGN_OR_RETURN(std::vector<Tensor> outputs, run_reference(graph, feeds));
  return outputs.at(0);
}

struct OpCase {
  std::string name;
  OpType op;
  Attributes attrs;
  std::vector<Operand> operands;
  Tensor expected;
  float tolerance = 0.0f;  // zero where the arithmetic is exact in float32
};

void PrintTo(const OpCase& c, std::ostream* out) {
  *out << c.name;
}

class ReferenceOp : public ::testing::TestWithParam<OpCase> {};

TEST_P(ReferenceOp, MatchesHandComputedValues) {
  const OpCase& c = GetParam();
  Expected<Tensor> result = run_one_node(c.op, c.attrs, c.operands);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  ASSERT_EQ(dims_to_string(result->dims), dims_to_string(c.expected.dims));
  ASSERT_EQ(result->data.size(), c.expected.data.size());
  for (size_t i = 0; i < c.expected.data.size(); ++i) {
    EXPECT_NEAR(result->data[i], c.expected.data[i], c.tolerance) << "element " << i;
  }
}

std::string case_name(const ::testing::TestParamInfo<OpCase>& info) {
  return info.param.name;
}

// The 4x4 image 1..16 (x[r][c] = 4r + c + 1) and the 3x3 image 1..9 used by many cases.
Operand image4x4() {
  return input({1, 1, 4, 4}, counting(16));
}
Operand image3x3() {
  return input({1, 1, 3, 3}, counting(9));
}

std::vector<OpCase> conv_cases() {
  return {
      // 3x3 ones, stride 2, pads 1: windows cover rows/cols {0,1} and {1,2,3}.
      {"stride2_pads1",
       OpType::kConv,
       conv_attrs({.kernel = {3, 3}, .strides = {2, 2}, .pads = {1, 1, 1, 1}}),
       {image4x4(), constant({1, 1, 3, 3}, std::vector<float>(9, 1.0f))},
       Tensor({1, 1, 2, 2}, {14, 30, 57, 99})},
      // Padding only on top and right; an asymmetric kernel catches a flipped window.
      {"asymmetric_pads",
       OpType::kConv,
       conv_attrs({.kernel = {2, 2}, .pads = {1, 0, 0, 1}}),
       {image3x3(), constant({1, 1, 2, 2}, {1, 2, 3, 4})},
       Tensor({1, 1, 3, 3}, {11, 18, 9, 37, 47, 21, 67, 77, 33})},
      // Dilation 2 reads x[r][c], x[r][c+2], x[r+2][c], x[r+2][c+2].
      {"dilation2",
       OpType::kConv,
       conv_attrs({.kernel = {2, 2}, .dilations = {2, 2}}),
       {image4x4(), constant({1, 1, 2, 2}, {1, 2, 3, 4})},
       Tensor({1, 1, 2, 2}, {78, 88, 118, 128})},
      // Two groups of two output channels: outputs 0-1 read channels 0-1, outputs 2-3 read 2-3.
      {"groups2_bias",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}, 2),
       {input({1, 4, 1, 2}, counting(8)), constant({4, 2, 1, 1}, {1, 10, 2, 20, 100, 1000, -1, 0}),
        constant({4}, {0.5f, -0.5f, 0.0f, 1.0f})},
       Tensor({1, 4, 1, 2}, {31.5f, 42.5f, 61.5f, 83.5f, 7500, 8600, -4, -5})},
      // Depthwise (group == channels) with bottom/right padding: each channel its own kernel.
      {"depthwise_pads_bottom_right",
       OpType::kConv,
       conv_attrs({.kernel = {2, 2}, .pads = {0, 0, 1, 1}}, 3),
       {input({1, 3, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4}),
        constant({3, 1, 2, 2}, {1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1})},
       Tensor({1, 3, 2, 2}, {5, 2, 3, 4, 13, 8, 8, 0, -10, -6, -7, -4})},
      {"bias_no_activation",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}),
       {input({1, 1, 1, 4}, {-2, -1, 1, 2}), constant({1, 1, 1, 1}, {3}), constant({1}, {1})},
       Tensor({1, 1, 1, 4}, {-5, -2, 4, 7})},
      {"fused_relu",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}, 1, Activation::relu()),
       {input({1, 1, 1, 4}, {-2, -1, 1, 2}), constant({1, 1, 1, 1}, {3}), constant({1}, {1})},
       Tensor({1, 1, 1, 4}, {0, 0, 4, 7})},
      {"fused_clip",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}, 1, Activation::clip(-1.0f, 5.0f)),
       {input({1, 1, 1, 4}, {-2, -1, 1, 2}), constant({1, 1, 1, 1}, {3}), constant({1}, {1})},
       Tensor({1, 1, 1, 4}, {-1, -1, 4, 5})},
      // Two images, two input channels: image 0 = {1, 2}, image 1 = {3, 4}; weights {10, 1}.
      {"batch2_sums_channels",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}),
       {input({2, 2, 1, 1}, {1, 2, 3, 4}), constant({1, 2, 1, 1}, {10, 1})},
       Tensor({2, 1, 1, 1}, {12, 34})},
  };
}
INSTANTIATE_TEST_SUITE_P(Conv, ReferenceOp, ::testing::ValuesIn(conv_cases()), case_name);

std::vector<OpCase> batch_norm_cases() {
  // Channel 0: 4 / sqrt(3 + 1) = 2, y = 2 (x - 1) + 1. Channel 1: 0.5 / sqrt(15 + 1), y =
  // (x - 2) / 8. The epsilon of 1 is what makes both square roots exact.
  const std::vector<Operand> operands = {input({1, 2, 1, 2}, {1, 3, -2, 4}),
                                         constant({2}, {4, 0.5f}), constant({2}, {1, 0}),
                                         constant({2}, {1, 2}), constant({2}, {3, 15})};
  return {
      {"epsilon1", OpType::kBatchNorm, batch_norm_attrs(1.0f), operands,
       Tensor({1, 2, 1, 2}, {1, 5, -0.5f, 0.25f})},
      {"epsilon1_fused_relu", OpType::kBatchNorm, batch_norm_attrs(1.0f, Activation::relu()),
       operands, Tensor({1, 2, 1, 2}, {1, 5, 0, 0.25f})},
      // The default epsilon of 1e-5 on a variance of 1: 1 / sqrt(1.00001).
      {"default_epsilon",
       OpType::kBatchNorm,
       BatchNormAttrs{},
       {input({1, 1, 1, 2}, {2, -2}), constant({1}, {1}), constant({1}, {0}), constant({1}, {0}),
        constant({1}, {1})},
       Tensor({1, 1, 1, 2}, {1.99999f, -1.99999f}),
       1e-6f},
  };
}
INSTANTIATE_TEST_SUITE_P(BatchNorm, ReferenceOp, ::testing::ValuesIn(batch_norm_cases()),
                         case_name);

std::vector<OpCase> pool_cases() {
  const Operand image5x5 = input({1, 1, 5, 5}, counting(25));
  const Operand row5 = input({1, 1, 1, 5}, {1, 2, 3, 4, 5});
  const Window k2s2 = {.kernel = {2, 2}, .strides = {2, 2}};
  // Kernel 3 stride 2 along a row of 5 with one column of end padding: ceil_mode adds a
  // third window starting at column 4 that runs past the padding.
  const Window row_k3s2_pad_end = {.kernel = {1, 3}, .strides = {1, 2}, .pads = {0, 0, 0, 1}};
  // Kernel 2 stride 2 along a row of 5 with one column of padding each side: ceil_mode
  // would start a fourth window inside the end padding, which the rule forbids.
  const Window row_k2s2_pads = {.kernel = {1, 2}, .strides = {1, 2}, .pads = {0, 1, 0, 1}};
  return {
      {"max_k2s2",
       OpType::kMaxPool,
       PoolAttrs{.window = k2s2},
       {image4x4()},
       Tensor({1, 1, 2, 2}, {6, 8, 14, 16})},
      {"max_floor_drops_partial_window",
       OpType::kMaxPool,
       PoolAttrs{.window = k2s2},
       {image5x5},
       Tensor({1, 1, 2, 2}, {7, 9, 17, 19})},
      {"max_ceil_mode_keeps_partial_window",
       OpType::kMaxPool,
       PoolAttrs{.window = k2s2, .ceil_mode = true},
       {image5x5},
       Tensor({1, 1, 3, 3}, {7, 9, 10, 17, 19, 20, 22, 24, 25})},
      {"max_ceil_mode_last_window_must_start_inside",
       OpType::kMaxPool,
       PoolAttrs{.window = row_k2s2_pads, .ceil_mode = true},
       {row5},
       Tensor({1, 1, 1, 3}, {1, 3, 5})},
      // Negative inputs show that padding never wins a max (it is not a zero).
      {"max_asymmetric_pads_top_right",
       OpType::kMaxPool,
       PoolAttrs{.window = {.kernel = {2, 2}, .pads = {1, 0, 0, 1}}},
       {input({1, 1, 3, 3}, counting(9, -9.0f))},
       Tensor({1, 1, 3, 3}, {-8, -7, -7, -5, -4, -4, -2, -1, -1})},
      {"max_dilation2",
       OpType::kMaxPool,
       PoolAttrs{.window = {.kernel = {2, 2}, .dilations = {2, 2}}},
       {image4x4()},
       Tensor({1, 1, 2, 2}, {11, 12, 15, 16})},
      // Kernel 3 stride 2 pads 1 on 3x3: each window holds 4 of the 9 pixels.
      {"avg_pads_exclude_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = {.kernel = {3, 3}, .strides = {2, 2}, .pads = {1, 1, 1, 1}}},
       {image3x3()},
       Tensor({1, 1, 2, 2}, {3, 4, 6, 7})},
      {"avg_pads_include_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = {.kernel = {3, 3}, .strides = {2, 2}, .pads = {1, 1, 1, 1}},
                 .count_include_pad = true},
       {image3x3()},
       Tensor({1, 1, 2, 2}, {12.0f / 9, 16.0f / 9, 24.0f / 9, 28.0f / 9}),
       1e-6f},
      {"avg_asymmetric_pads_exclude_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = {.kernel = {2, 2}, .pads = {0, 0, 1, 1}}},
       {image3x3()},
       Tensor({1, 1, 3, 3}, {3, 4, 4.5f, 6, 7, 7.5f, 7.5f, 8.5f, 9})},
      {"avg_asymmetric_pads_include_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = {.kernel = {2, 2}, .pads = {0, 0, 1, 1}}, .count_include_pad = true},
       {image3x3()},
       Tensor({1, 1, 3, 3}, {3, 4, 2.25f, 6, 7, 3.75f, 3.75f, 4.25f, 2.25f})},
      {"avg_ceil_mode_partial_windows",
       OpType::kAveragePool,
       PoolAttrs{.window = k2s2, .ceil_mode = true},
       {image5x5},
       Tensor({1, 1, 3, 3}, {4, 6, 7.5f, 14, 16, 17.5f, 21.5f, 23.5f, 25})},
      // The last window holds column 4, one pad column and one column past the padding:
      // excluding pads divides by 1, including them by 2 (the part past the pad never counts).
      {"avg_ceil_mode_exclude_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = row_k3s2_pad_end, .ceil_mode = true},
       {row5},
       Tensor({1, 1, 1, 3}, {2, 4, 5})},
      {"avg_ceil_mode_include_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = row_k3s2_pad_end, .ceil_mode = true, .count_include_pad = true},
       {row5},
       Tensor({1, 1, 1, 3}, {2, 4, 2.5f})},
      {"avg_floor_mode_include_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = row_k3s2_pad_end, .count_include_pad = true},
       {row5},
       Tensor({1, 1, 1, 2}, {2, 4})},
      {"max_batch2_channels2",
       OpType::kMaxPool,
       PoolAttrs{.window = {.kernel = {1, 2}}},
       {input({2, 2, 1, 2}, {1, 2, 4, 3, -1, -2, 0, 9})},
       Tensor({2, 2, 1, 1}, {2, 4, -1, 9})},
      {"global_average",
       OpType::kGlobalAveragePool,
       {},
       {input({1, 2, 2, 2}, {1, 2, 3, 4, -1, -1, 5, 9})},
       Tensor({1, 2, 1, 1}, {2.5f, 3})},
      {"global_average_batch2",
       OpType::kGlobalAveragePool,
       {},
       {input({2, 1, 1, 3}, {1, 2, 6, -3, 0, 0})},
       Tensor({2, 1, 1, 1}, {3, -1})},
  };
}
INSTANTIATE_TEST_SUITE_P(Pool, ReferenceOp, ::testing::ValuesIn(pool_cases()), case_name);

std::vector<OpCase> concat_cases() {
  return {
      {"one_input",
       OpType::kConcat,
       AxisAttrs{1},
       {input({1, 2, 1, 1}, {7, 8})},
       Tensor({1, 2, 1, 1}, {7, 8})},
      // With two images the channel blocks of the three inputs interleave per image.
      {"three_inputs_axis1_batch2",
       OpType::kConcat,
       AxisAttrs{1},
       {input({2, 1, 1, 2}, {1, 2, 11, 12}), input({2, 2, 1, 2}, {3, 4, 5, 6, 13, 14, 15, 16}),
        input({2, 1, 1, 2}, {7, 8, 17, 18})},
       Tensor({2, 4, 1, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18})},
      {"axis0",
       OpType::kConcat,
       AxisAttrs{0},
       {input({1, 2}, {1, 2}), input({2, 2}, {3, 4, 5, 6})},
       Tensor({3, 2}, {1, 2, 3, 4, 5, 6})},
      {"axis1_with_constant",
       OpType::kConcat,
       AxisAttrs{1},
       {input({2, 1}, {1, 2}), constant({2, 2}, {10, 11, 20, 21})},
       Tensor({2, 3}, {1, 10, 11, 2, 20, 21})},
      {"last_axis_rank3",
       OpType::kConcat,
       AxisAttrs{2},
       {input({2, 1, 1}, {1, 2}), input({2, 1, 2}, {3, 4, 5, 6})},
       Tensor({2, 1, 3}, {1, 3, 4, 2, 5, 6})},
  };
}
INSTANTIATE_TEST_SUITE_P(Concat, ReferenceOp, ::testing::ValuesIn(concat_cases()), case_name);

std::vector<OpCase> layout_cases() {
  const std::vector<float> twelve = counting(12);
  return {
      // Pads: all begins, then all ends. One row on top and two columns on the right.
      {"pad_constant_value",
       OpType::kPad,
       PadAttrs{{0, 0, 1, 0, 0, 0, 0, 2}, 9.0f},
       {input({1, 1, 2, 2}, {1, 2, 3, 4})},
       Tensor({1, 1, 3, 4}, {9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9})},
      {"pad_negative_crops",
       OpType::kPad,
       PadAttrs{{0, 0, -1, 0, 0, 0, 0, -1}, 0.0f},
       {image3x3()},
       Tensor({1, 1, 2, 2}, {4, 5, 7, 8})},
      {"pad_crop_and_grow",
       OpType::kPad,
       PadAttrs{{0, 0, -1, 1, 0, 0, 0, 0}, -1.0f},
       {image3x3()},
       Tensor({1, 1, 2, 4}, {-1, 4, 5, 6, -1, 7, 8, 9})},
      {"flatten_axis1",
       OpType::kFlatten,
       AxisAttrs{1},
       {input({2, 3, 1, 2}, twelve)},
       Tensor({2, 6}, twelve)},
      {"flatten_axis2",
       OpType::kFlatten,
       AxisAttrs{2},
       {input({2, 3, 1, 2}, twelve)},
       Tensor({6, 2}, twelve)},
      {"flatten_axis0",
       OpType::kFlatten,
       AxisAttrs{0},
       {input({2, 3, 1, 2}, twelve)},
       Tensor({1, 12}, twelve)},
      {"reshape_copy_and_infer",
       OpType::kReshape,
       ReshapeAttrs{{0, -1}},
       {input({2, 3, 2}, twelve)},
       Tensor({2, 6}, twelve)},
      {"reshape_infer_first",
       OpType::kReshape,
       ReshapeAttrs{{-1, 4}},
       {input({2, 3, 2}, twelve)},
       Tensor({3, 4}, twelve)},
      {"reshape_copy_infer_middle",
       OpType::kReshape,
       ReshapeAttrs{{0, -1, 2}},
       {input({2, 3, 2}, twelve)},
       Tensor({2, 3, 2}, twelve)},
      {"transpose_rank3",
       OpType::kTranspose,
       TransposeAttrs{{0, 2, 1}},
       {input({1, 2, 3}, counting(6))},
       Tensor({1, 3, 2}, {1, 4, 2, 5, 3, 6})},
      {"transpose_nchw_to_nhwc",
       OpType::kTranspose,
       TransposeAttrs{{0, 2, 3, 1}},
       {input({1, 2, 2, 2}, counting(8))},
       Tensor({1, 2, 2, 2}, {1, 5, 2, 6, 3, 7, 4, 8})},
      {"squeeze_axes",
       OpType::kSqueeze,
       AxesAttrs{{2, 3}},
       {input({1, 3, 1, 1}, {1, 2, 3})},
       Tensor({1, 3}, {1, 2, 3})},
      {"squeeze_all_ones",
       OpType::kSqueeze,
       AxesAttrs{},
       {input({1, 3, 1, 1}, {1, 2, 3})},
       Tensor({3}, {1, 2, 3})},
      {"squeeze_negative_axis",
       OpType::kSqueeze,
       AxesAttrs{{-1}},
       {input({2, 3, 1}, counting(6))},
       Tensor({2, 3}, counting(6))},
      {"unsqueeze_front",
       OpType::kUnsqueeze,
       AxesAttrs{{0}},
       {input({3}, {1, 2, 3})},
       Tensor({1, 3}, {1, 2, 3})},
      // Axes index the output of rank 4: -1 is axis 3.
      {"unsqueeze_two_axes",
       OpType::kUnsqueeze,
       AxesAttrs{{1, -1}},
       {input({2, 3}, counting(6))},
       Tensor({2, 1, 3, 1}, counting(6))},
  };
}
INSTANTIATE_TEST_SUITE_P(Layout, ReferenceOp, ::testing::ValuesIn(layout_cases()), case_name);

std::vector<OpCase> gemm_cases() {
  // A = [[1,2,3],[4,5,6]], B = [[1,0],[0,1],[1,1]], so A B = [[4,5],[10,11]].
  const Operand a = input({2, 3}, {1, 2, 3, 4, 5, 6});
  const Operand a_t = input({3, 2}, {1, 4, 2, 5, 3, 6});
  const Operand b = constant({3, 2}, {1, 0, 0, 1, 1, 1});
  const Operand b_t = constant({2, 3}, {1, 0, 1, 0, 1, 1});
  const Tensor ab({2, 2}, {4, 5, 10, 11});
  return {
      {"plain", OpType::kGemm, GemmAttrs{}, {a, b}, ab},
      {"trans_a", OpType::kGemm, gemm_attrs(1.0f, 1.0f, /*trans_a=*/true), {a_t, b}, ab},
      {"trans_b",
       OpType::kGemm,
       gemm_attrs(1.0f, 1.0f, /*trans_a=*/false, /*trans_b=*/true),
       {a, b_t},
       ab},
      {"trans_a_trans_b",
       OpType::kGemm,
       gemm_attrs(1.0f, 1.0f, /*trans_a=*/true, /*trans_b=*/true),
       {a_t, b_t},
       ab},
      // 2 A B + 0.5 C with C broadcast along rows.
      {"alpha_beta_c_vector",
       OpType::kGemm,
       gemm_attrs(2.0f, 0.5f),
       {a, b, constant({2}, {10, 20})},
       Tensor({2, 2}, {13, 20, 25, 32})},
      {"alpha_beta_c_row",
       OpType::kGemm,
       gemm_attrs(2.0f, 0.5f),
       {a, b, constant({1, 2}, {10, 20})},
       Tensor({2, 2}, {13, 20, 25, 32})},
      {"c_column",
       OpType::kGemm,
       GemmAttrs{},
       {a, b, constant({2, 1}, {100, 200})},
       Tensor({2, 2}, {104, 105, 210, 211})},
      {"c_scalar",
       OpType::kGemm,
       GemmAttrs{},
       {a, b, constant({}, {4})},
       Tensor({2, 2}, {8, 9, 14, 15})},
      {"c_full_beta0",
       OpType::kGemm,
       gemm_attrs(1.0f, 0.0f),
       {a, b, constant({2, 2}, {1, 2, 3, 4})},
       ab},
      {"c_full_fused_relu",
       OpType::kGemm,
       gemm_attrs(1.0f, 1.0f, false, false, Activation::relu()),
       {a, b, constant({2, 2}, {-5, -20, -5, -20})},
       Tensor({2, 2}, {0, 0, 5, 0})},
      {"matmul_2d", OpType::kMatMul, {}, {a, b}, ab},
      // A of rank 3 multiplies each of its [2,3] matrices by B.
      {"matmul_rank3",
       OpType::kMatMul,
       {},
       {input({2, 2, 3}, {1, 2, 3, 4, 5, 6, -1, 0, 1, 2, 2, 2}), b},
       Tensor({2, 2, 2}, {4, 5, 10, 11, 0, 1, 4, 4})},
  };
}
INSTANTIATE_TEST_SUITE_P(Gemm, ReferenceOp, ::testing::ValuesIn(gemm_cases()), case_name);

std::vector<OpCase> elementwise_cases() {
  // x = {1,2 | 3,4 | 5,6} over three channels; the per-channel constant is {2, 4, 8}.
  const Operand x = input({1, 3, 1, 2}, counting(6));
  const Operand per_channel = constant({1, 3, 1, 1}, {2, 4, 8});
  const Operand values = input({1, 5}, {-2, -0.5f, 0, 0.5f, 3});
  return {
      {"add_per_channel",
       OpType::kAdd,
       {},
       {x, per_channel},
       Tensor({1, 3, 1, 2}, {3, 4, 7, 8, 13, 14})},
      {"sub_per_channel",
       OpType::kSub,
       {},
       {x, per_channel},
       Tensor({1, 3, 1, 2}, {-1, 0, -1, 0, -3, -2})},
      {"sub_per_channel_constant_first",
       OpType::kSub,
       {},
       {per_channel, x},
       Tensor({1, 3, 1, 2}, {1, 0, 1, 0, 3, 2})},
      {"mul_per_channel",
       OpType::kMul,
       {},
       {x, per_channel},
       Tensor({1, 3, 1, 2}, {2, 4, 12, 16, 40, 48})},
      {"div_per_channel",
       OpType::kDiv,
       {},
       {x, per_channel},
       Tensor({1, 3, 1, 2}, {0.5f, 1, 0.75f, 1, 0.625f, 0.75f})},
      {"add_per_channel_batch2",
       OpType::kAdd,
       {},
       {input({2, 3, 1, 1}, {1, 2, 3, 4, 5, 6}), per_channel},
       Tensor({2, 3, 1, 1}, {3, 6, 11, 6, 9, 14})},
      // A 1-D operand aligns with the last axis, as in NumPy.
      {"mul_trailing_vector",
       OpType::kMul,
       {},
       {input({1, 2, 2}, {1, 2, 3, 4}), constant({2}, {10, -1})},
       Tensor({1, 2, 2}, {10, -2, 30, -4})},
      {"add_scalar",
       OpType::kAdd,
       {},
       {x, constant({}, {0.5f})},
       Tensor({1, 3, 1, 2}, {1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f})},
      {"add_two_inputs_same_shape",
       OpType::kAdd,
       {},
       {input({2, 2}, {1, 2, 3, 4}), input({2, 2}, {10, 20, 30, 40})},
       Tensor({2, 2}, {11, 22, 33, 44})},
      {"relu", OpType::kRelu, {}, {values}, Tensor({1, 5}, {0, 0, 0, 0.5f, 3})},
      {"clip",
       OpType::kClip,
       ClipAttrs{-1.0f, 1.0f},
       {values},
       Tensor({1, 5}, {-1, -0.5f, 0, 0.5f, 1})},
      {"clip_relu6",
       OpType::kClip,
       ClipAttrs{0.0f, 6.0f},
       {input({1, 4}, {-1, 3, 6, 7})},
       Tensor({1, 4}, {0, 3, 6, 6})},
      {"clip_unbounded",
       OpType::kClip,
       ClipAttrs{},
       {values},
       Tensor({1, 5}, {-2, -0.5f, 0, 0.5f, 3})},
      {"identity", OpType::kIdentity, {}, {values}, Tensor({1, 5}, {-2, -0.5f, 0, 0.5f, 3})},
      {"dropout_is_identity",
       OpType::kDropout,
       {},
       {values},
       Tensor({1, 5}, {-2, -0.5f, 0, 0.5f, 3})},
  };
}
INSTANTIATE_TEST_SUITE_P(Elementwise, ReferenceOp, ::testing::ValuesIn(elementwise_cases()),
                         case_name);

std::vector<OpCase> reduction_cases() {
  const float ln2 = std::log(2.0f);
  const float ln5 = std::log(5.0f);
  const float third = 1.0f / 3.0f;
  // Channel 0 holds 1..4, channel 1 holds 10..40.
  const Operand two_channels = input({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
  return {
      // exp(0) : exp(ln 2) : exp(ln 5) = 1 : 2 : 5, so the softmax is {1, 2, 5} / 8.
      {"softmax_axis1_rank2",
       OpType::kSoftmax,
       AxisAttrs{1},
       {input({1, 3}, {0, ln2, ln5})},
       Tensor({1, 3}, {0.125f, 0.25f, 0.625f}),
       1e-6f},
      // Axis 1 of [1,3,2] is not the innermost: column 0 is {0, ln 2, ln 5}, column 1 is flat.
      {"softmax_axis1_rank3",
       OpType::kSoftmax,
       AxisAttrs{1},
       {input({1, 3, 2}, {0, 5, ln2, 5, ln5, 5})},
       Tensor({1, 3, 2}, {0.125f, third, 0.25f, third, 0.625f, third}),
       1e-6f},
      // Large logits overflow a naive exp; the max is subtracted first.
      {"softmax_last_axis_rank3",
       OpType::kSoftmax,
       AxisAttrs{2},
       {input({2, 1, 3}, {0, ln2, ln5, 1000, 1000, -1000})},
       Tensor({2, 1, 3}, {0.125f, 0.25f, 0.625f, 0.5f, 0.5f, 0}),
       1e-6f},
      {"reduce_mean_hw_keepdims",
       OpType::kReduceMean,
       AxesAttrs{{2, 3}, true},
       {two_channels},
       Tensor({1, 2, 1, 1}, {2.5f, 25})},
      {"reduce_mean_hw_no_keepdims",
       OpType::kReduceMean,
       AxesAttrs{{2, 3}, false},
       {two_channels},
       Tensor({1, 2}, {2.5f, 25})},
      {"reduce_mean_channels",
       OpType::kReduceMean,
       AxesAttrs{{1}, true},
       {two_channels},
       Tensor({1, 1, 2, 2}, {5.5f, 11, 16.5f, 22})},
      {"reduce_mean_negative_axis",
       OpType::kReduceMean,
       AxesAttrs{{-1}, false},
       {two_channels},
       Tensor({1, 2, 2}, {1.5f, 3.5f, 15, 35})},
      {"reduce_mean_all_axes",
       OpType::kReduceMean,
       AxesAttrs{{}, false},
       {two_channels},
       Tensor({}, {13.75f})},
      {"reduce_mean_hw_batch2",
       OpType::kReduceMean,
       AxesAttrs{{2, 3}, false},
       {input({2, 1, 1, 2}, {1, 3, -4, 0})},
       Tensor({2, 1}, {2, -2})},
  };
}
INSTANTIATE_TEST_SUITE_P(Reduction, ReferenceOp, ::testing::ValuesIn(reduction_cases()), case_name);

// Tensors with a zero-size axis: the ops produce empty results of the right shape.
std::vector<OpCase> zero_size_cases() {
  return {
      {"relu_empty", OpType::kRelu, {}, {input({0, 3}, {})}, Tensor({0, 3}, {})},
      {"concat_empty_input",
       OpType::kConcat,
       AxisAttrs{1},
       {input({1, 0, 1, 2}, {}), input({1, 2, 1, 2}, {1, 2, 3, 4})},
       Tensor({1, 2, 1, 2}, {1, 2, 3, 4})},
      {"add_empty",
       OpType::kAdd,
       {},
       {input({0, 3}, {}), constant({3}, {1, 2, 3})},
       Tensor({0, 3}, {})},
      {"matmul_inner_dim_zero",
       OpType::kMatMul,
       {},
       {input({2, 0}, {}), constant({0, 2}, {})},
       Tensor({2, 2}, {0, 0, 0, 0})},
      // With an empty inner dim, Gemm is beta C.
      {"gemm_inner_dim_zero",
       OpType::kGemm,
       gemm_attrs(1.0f, 2.0f),
       {input({2, 0}, {}), constant({0, 2}, {}), constant({2}, {1, -1})},
       Tensor({2, 2}, {2, -2, 2, -2})},
      {"softmax_empty_axis",
       OpType::kSoftmax,
       AxisAttrs{1},
       {input({2, 0}, {})},
       Tensor({2, 0}, {})},
      {"batch_norm_no_channels",
       OpType::kBatchNorm,
       BatchNormAttrs{},
       {input({1, 0, 2, 2}, {}), constant({0}, {}), constant({0}, {}), constant({0}, {}),
        constant({0}, {})},
       Tensor({1, 0, 2, 2}, {})},
      {"conv_no_output_channels",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}),
       {input({1, 1, 2, 2}, {1, 2, 3, 4}), constant({0, 1, 1, 1}, {})},
       Tensor({1, 0, 2, 2}, {})},
  };
}
INSTANTIATE_TEST_SUITE_P(ZeroSize, ReferenceOp, ::testing::ValuesIn(zero_size_cases()), case_name);

// window_output_size is the one place the ceil_mode rule lives; check it on its own too.
struct WindowCase {
  int64_t input, kernel, stride, dilation, pad_begin, pad_end;
  bool ceil_mode;
  int64_t expected;
};

TEST(WindowOutputSize, FollowsOnnxAndTheCeilModeRule) {
  const std::vector<WindowCase> cases = {
      {4, 3, 2, 1, 1, 1, false, 2},  // (4 + 2 - 3) / 2 + 1
      {5, 2, 2, 1, 0, 0, false, 2},  // floor drops the partial window
      {5, 2, 2, 1, 0, 0, true, 3},   // ceil keeps it: it starts at 4, inside the input
      {5, 2, 2, 1, 1, 1, true, 3},   // a 4th window would start at 6, in the end padding
      {4, 1, 3, 1, 0, 1, true, 2},   // a 3rd window would start at 6, past the input
      {5, 3, 2, 1, 0, 1, true, 3},   // starts at 4 and runs past the end padding: kept
      {4, 2, 2, 2, 0, 0, false, 1},  // dilated extent 3
      {2, 3, 1, 1, 0, 0, false, 0},  // window larger than the input
      {2, 3, 1, 1, 0, 1, false, 1},  // padding makes it fit
      {4, 2, 0, 1, 0, 0, false, 0},  // stride 0 is rejected, not divided by
      {4, 0, 1, 1, 0, 0, false, 0},  // so is kernel 0
      {224, 7, 2, 1, 3, 3, false, 112}, {112, 3, 2, 1, 1, 1, false, 56},
      {56, 2, 2, 1, 0, 0, true, 28},
  };
  for (const WindowCase& c : cases) {
    EXPECT_EQ(window_output_size(c.input, c.kernel, c.stride, c.dilation, c.pad_begin, c.pad_end,
                                 c.ceil_mode),
              c.expected)
        << "input " << c.input << " kernel " << c.kernel << " stride " << c.stride << " dilation "
        << c.dilation << " pads " << c.pad_begin << "," << c.pad_end << " ceil " << c.ceil_mode;
  }
}

// Shape errors: the kind is always kInvalidModel and the message names the node and values.
struct ShapeErrorCase {
  std::string name;
  OpType op;
  Attributes attrs;
  std::vector<Operand> operands;
  std::string message;
};

void PrintTo(const ShapeErrorCase& c, std::ostream* out) {
  *out << c.name;
}

class ReferenceShapeError : public ::testing::TestWithParam<ShapeErrorCase> {};

TEST_P(ReferenceShapeError, ReportsInvalidModel) {
  const ShapeErrorCase& c = GetParam();
  Expected<Tensor> result = run_one_node(c.op, c.attrs, c.operands, "c");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(result.status().message(), c.message);
}

std::vector<ShapeErrorCase> shape_error_cases() {
  const ConvAttrs conv1x1 = conv_attrs({.kernel = {1, 1}});
  const Operand x4 = input({1, 4, 3, 3}, std::vector<float>(36, 1.0f));
  return {
      {"conv_channels",
       OpType::kConv,
       conv1x1,
       {x4, constant({2, 3, 1, 1}, std::vector<float>(6, 1.0f))},
       R"(node "c" (Conv): src has 4 channels, weights expect 3)"},
      {"conv_group_channels",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}, 2),
       {x4, constant({2, 4, 1, 1}, std::vector<float>(8, 1.0f))},
       R"(node "c" (Conv): src has 4 channels, weights expect 8)"},
      {"conv_group_output_channels",
       OpType::kConv,
       conv_attrs({.kernel = {1, 1}}, 2),
       {x4, constant({3, 2, 1, 1}, std::vector<float>(6, 1.0f))},
       R"(node "c" (Conv): output channels 3 are not divisible by group 2)"},
      {"conv_kernel",
       OpType::kConv,
       conv1x1,
       {x4, constant({1, 4, 3, 3}, std::vector<float>(36, 1.0f))},
       R"(node "c" (Conv): weights kernel 3x3 differs from kernel_shape)"},
      {"conv_bias",
       OpType::kConv,
       conv1x1,
       {x4, constant({2, 4, 1, 1}, std::vector<float>(8, 1.0f)), constant({3}, {1, 2, 3})},
       R"(node "c" (Conv): bias has shape [3], expected [2])"},
      {"conv_src_rank",
       OpType::kConv,
       conv1x1,
       {input({4, 3, 3}, std::vector<float>(36, 1.0f)), constant({1, 4, 1, 1}, {1, 1, 1, 1})},
       R"(node "c" (Conv): src has 3 dims, expected 4)"},
      {"conv_window_too_large",
       OpType::kConv,
       conv_attrs({.kernel = {3, 3}}),
       {input({1, 1, 2, 2}, {1, 2, 3, 4}), constant({1, 1, 3, 3}, std::vector<float>(9, 1.0f))},
       R"(node "c" (Conv): window 3 does not fit spatial size 2)"},
      {"pool_src_rank",
       OpType::kMaxPool,
       PoolAttrs{.window = {.kernel = {2, 2}}},
       {input({1, 4, 4}, counting(16))},
       R"(node "c" (MaxPool): src has 3 dims, expected 4)"},
      {"batch_norm_parameter",
       OpType::kBatchNorm,
       BatchNormAttrs{},
       {input({1, 2, 1, 1}, {1, 2}), constant({3}, {1, 1, 1}), constant({2}, {0, 0}),
        constant({2}, {0, 0}), constant({2}, {1, 1})},
       R"(node "c" (BatchNormalization): parameter 1 has shape [3], expected [2])"},
      {"concat_mismatch",
       OpType::kConcat,
       AxisAttrs{1},
       {input({1, 2, 2, 2}, counting(8)), input({1, 2, 3, 2}, counting(12))},
       R"(node "c" (Concat): input 1 has shape [1,2,3,2], incompatible with [1,2,2,2] on axis 2)"},
      {"concat_rank",
       OpType::kConcat,
       AxisAttrs{1},
       {input({1, 2, 2, 2}, counting(8)), input({1, 2, 4}, counting(8))},
       R"(node "c" (Concat): input 1 has rank 3, expected 4)"},
      {"gemm_inner",
       OpType::kGemm,
       GemmAttrs{},
       {input({2, 3}, counting(6)), constant({4, 2}, counting(8))},
       R"(node "c" (Gemm): A has inner dim 3, B has 4)"},
      {"gemm_c",
       OpType::kGemm,
       GemmAttrs{},
       {input({2, 3}, counting(6)), constant({3, 2}, counting(6)), constant({3}, {1, 2, 3})},
       R"(node "c" (Gemm): C has shape [3], which does not broadcast to [2,2])"},
      {"matmul_rank",
       OpType::kMatMul,
       {},
       {input({2, 3}, counting(6)), constant({1, 3, 2}, counting(6))},
       R"(node "c" (MatMul): supports A of rank >= 2 and B of rank 2, found ranks 2 and 3)"},
      {"add_broadcast",
       OpType::kAdd,
       {},
       {input({1, 3, 1, 1}, {1, 2, 3}), constant({1, 2, 1, 1}, {1, 2})},
       R"(node "c" (Add): shapes [1,3,1,1] and [1,2,1,1] do not broadcast)"},
      {"reshape_count",
       OpType::kReshape,
       ReshapeAttrs{{4, -1}},
       {input({2, 3}, counting(6))},
       R"(node "c" (Reshape): cannot reshape [2,3] to [4,-1])"},
      {"reshape_two_infers",
       OpType::kReshape,
       ReshapeAttrs{{-1, -1}},
       {input({2, 3}, counting(6))},
       R"(node "c" (Reshape): shape has more than one -1)"},
      {"pad_too_negative",
       OpType::kPad,
       PadAttrs{{0, -3, 0, 0}, 0.0f},
       {input({2, 2}, counting(4))},
       R"(node "c" (Pad): pads make axis 1 negative)"},
      {"pad_count",
       OpType::kPad,
       PadAttrs{{1, 1}, 0.0f},
       {input({2, 2}, counting(4))},
       R"(node "c" (Pad): has 2 pads, expected 4)"},
      {"squeeze_not_one",
       OpType::kSqueeze,
       AxesAttrs{{1}},
       {input({1, 3}, counting(3))},
       R"(node "c" (Squeeze): cannot squeeze axis 1 of size 3)"},
      {"softmax_axis",
       OpType::kSoftmax,
       AxisAttrs{3},
       {input({1, 2, 2}, counting(4))},
       R"(node "c" (Softmax): axis 3 is out of range for rank 3)"},
      {"transpose_perm",
       OpType::kTranspose,
       TransposeAttrs{{0, 0}},
       {input({2, 2}, counting(4))},
       R"(node "c" (Transpose): perm is not a permutation)"},
      {"reduce_mean_axis",
       OpType::kReduceMean,
       AxesAttrs{{4}, true},
       {input({1, 2, 2, 1}, counting(4))},
       R"(node "c" (ReduceMean): axis 4 is out of range for rank 4)"},
  };
}

std::string shape_error_name(const ::testing::TestParamInfo<ShapeErrorCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, ReferenceShapeError, ::testing::ValuesIn(shape_error_cases()),
                         shape_error_name);

TEST(ReferenceShapeError, MissingRequiredInput) {
  Graph graph;
  const ValueId x = graph.add_value("x", {1, 1, 2, 2});
  const ValueId out = graph.add_value("y", {});
  graph.inputs.push_back(x);
  graph.add_node(OpType::kConv, "c", {x, kNoValue}, {out}, ConvAttrs{});
  graph.outputs.push_back(out);
  Expected<std::vector<Tensor>> result = run_reference(graph, {Tensor({1, 1, 2, 2}, {1, 2, 3, 4})});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(result.status().message(), R"(node "c" (Conv): required input 1 is missing)");
}

// Inputs that do not fit the graph are the caller's mistake, not the model's.
TEST(ReferenceArguments, RejectsInputsThatDoNotFitTheGraph) {
  Graph graph;
  const ValueId x = graph.add_value("x", {kBatchDim, 4});
  const ValueId out = graph.add_value("y", {kBatchDim, 4});
  graph.inputs.push_back(x);
  graph.add_node(OpType::kRelu, "r", {x}, {out});
  graph.outputs.push_back(out);

  struct Case {
    std::vector<Tensor> inputs;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{Tensor({1, 3}, {1, 2, 3})}, R"(input "x" has shape [1,3], expected [N,4])"},
      {{Tensor({1, 1, 4}, {1, 2, 3, 4})}, R"(input "x" has shape [1,1,4], expected [N,4])"},
      {{Tensor({0, 4}, {})}, R"(input "x" has shape [0,4], expected [N,4])"},
      {{}, "model takes 1 inputs, 0 given"},
      {{Tensor({1, 4}, {1, 2, 3})}, R"(input "x" holds 3 values for shape [1,4])"},
  };
  for (const Case& c : cases) {
    Expected<std::vector<Tensor>> result = run_reference(graph, c.inputs);
    ASSERT_FALSE(result.ok()) << c.message;
    EXPECT_EQ(result.status().kind(), ErrorKind::kBadArgument);
    EXPECT_EQ(result.status().message(), c.message);
  }
}

// Batch > 1: image i of a batch run gives exactly what running image i alone gives. Each
// case is one node whose first input carries the symbolic batch.
struct BatchCase {
  std::string name;
  OpType op;
  Attributes attrs;
  std::vector<Dims> image_dims;  // runtime inputs, without the batch axis
  std::vector<Operand> constants;
};

void PrintTo(const BatchCase& c, std::ostream* out) {
  *out << c.name;
}

class ReferenceBatch : public ::testing::TestWithParam<BatchCase> {};

TEST_P(ReferenceBatch, RowsMatchSingleImages) {
  const BatchCase& c = GetParam();
  constexpr int64_t kBatch = 3;
  Graph graph;
  std::vector<ValueId> node_inputs;
  for (size_t i = 0; i < c.image_dims.size(); ++i) {
    Dims dims = {kBatchDim};
    dims.insert(dims.end(), c.image_dims[i].begin(), c.image_dims[i].end());
    const ValueId id = graph.add_value("x" + std::to_string(i), dims);
    graph.inputs.push_back(id);
    node_inputs.push_back(id);
  }
  for (size_t i = 0; i < c.constants.size(); ++i) {
    node_inputs.push_back(graph.add_constant("k" + std::to_string(i), c.constants[i].tensor));
  }
  const ValueId out = graph.add_value("y", {});
  graph.add_node(c.op, "n", node_inputs, {out}, c.attrs);
  graph.outputs.push_back(out);

  std::vector<Tensor> batch_inputs;
  for (size_t i = 0; i < c.image_dims.size(); ++i) {
    Dims dims = {kBatch};
    dims.insert(dims.end(), c.image_dims[i].begin(), c.image_dims[i].end());
    batch_inputs.push_back(testing::random_tensor(dims, 17 + static_cast<uint32_t>(i)));
  }
  Expected<std::vector<Tensor>> batched = run_reference(graph, batch_inputs);
  ASSERT_TRUE(batched.ok()) << batched.status().to_string();
  const Tensor& batch_out = batched->at(0);
  ASSERT_EQ(batch_out.dims.at(0), kBatch);

  for (int64_t image = 0; image < kBatch; ++image) {
    std::vector<Tensor> single_inputs;
    for (const Tensor& t : batch_inputs) {
      single_inputs.push_back(testing::slice_batch(t, image, image + 1));
    }
    Expected<std::vector<Tensor>> single = run_reference(graph, single_inputs);
    ASSERT_TRUE(single.ok()) << single.status().to_string();
    const Tensor expected = testing::slice_batch(batch_out, image, image + 1);
    ASSERT_EQ(dims_to_string(single->at(0).dims), dims_to_string(expected.dims));
    // The same loops run on the same numbers, so the results are bit-identical.
    EXPECT_EQ(single->at(0).data, expected.data) << "image " << image;
  }
}

std::vector<BatchCase> batch_cases() {
  return {
      {"conv_groups_stride2_asymmetric_pads",
       OpType::kConv,
       conv_attrs({.kernel = {3, 3}, .strides = {2, 2}, .pads = {1, 0, 0, 1}}, 2,
                  Activation::relu()),
       {{4, 7, 6}},
       {{testing::random_tensor({6, 2, 3, 3}, 3), true}, {testing::random_tensor({6}, 4), true}}},
      {"conv_depthwise_dilated",
       OpType::kConv,
       conv_attrs({.kernel = {3, 3}, .dilations = {2, 2}, .pads = {2, 2, 2, 2}}, 5),
       {{5, 6, 6}},
       {{testing::random_tensor({5, 1, 3, 3}, 5), true}}},
      {"batch_norm",
       OpType::kBatchNorm,
       BatchNormAttrs{},
       {{3, 2, 2}},
       {constant({3}, {1, 2, 3}), constant({3}, {0, 1, 0}), constant({3}, {0.5f, 0, -1}),
        constant({3}, {1, 4, 0.25f})}},
      {"max_pool_ceil_pads",
       OpType::kMaxPool,
       PoolAttrs{.window = {.kernel = {3, 3}, .strides = {2, 2}, .pads = {1, 1, 0, 0}},
                 .ceil_mode = true},
       {{3, 8, 7}},
       {}},
      {"average_pool_include_pad",
       OpType::kAveragePool,
       PoolAttrs{.window = {.kernel = {2, 2}, .strides = {2, 2}, .pads = {0, 1, 1, 0}},
                 .ceil_mode = true,
                 .count_include_pad = true},
       {{3, 5, 5}},
       {}},
      {"global_average_pool", OpType::kGlobalAveragePool, {}, {{4, 3, 5}}, {}},
      {"concat_three_axis1", OpType::kConcat, AxisAttrs{1}, {{2, 3, 3}, {1, 3, 3}, {5, 3, 3}}, {}},
      {"concat_one_input", OpType::kConcat, AxisAttrs{1}, {{2, 3, 3}}, {}},
      {"add_per_channel", OpType::kAdd, {}, {{3, 2, 2}}, {constant({1, 3, 1, 1}, {1, -2, 3})}},
      {"gemm_trans_b",
       OpType::kGemm,
       gemm_attrs(0.5f, 1.0f, /*trans_a=*/false, /*trans_b=*/true),
       {{6}},
       {{testing::random_tensor({4, 6}, 8), true}, constant({4}, {1, 2, 3, 4})}},
      {"softmax_axis1", OpType::kSoftmax, AxisAttrs{1}, {{10}}, {}},
      {"reduce_mean_hw", OpType::kReduceMean, AxesAttrs{{2, 3}, false}, {{3, 4, 4}}, {}},
      {"pad", OpType::kPad, PadAttrs{{0, 0, 1, -1, 0, 0, 0, 2}, 0.5f}, {{2, 3, 3}}, {}},
      {"transpose", OpType::kTranspose, TransposeAttrs{{0, 2, 3, 1}}, {{2, 3, 4}}, {}},
  };
}

std::string batch_case_name(const ::testing::TestParamInfo<BatchCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, ReferenceBatch, ::testing::ValuesIn(batch_cases()), batch_case_name);

// A two-node graph: intermediates are freed after their last reader, and a value read twice
// must survive its first reader.
TEST(ReferenceGraph, ValueReadTwiceSurvivesItsFirstReader) {
  Graph graph;
  const ValueId x = graph.add_value("x", {kBatchDim, 2});
  const ValueId r = graph.add_value("r", {kBatchDim, 2});
  const ValueId sum = graph.add_value("sum", {kBatchDim, 2});
  const ValueId product = graph.add_value("product", {kBatchDim, 2});
  graph.inputs.push_back(x);
  graph.add_node(OpType::kRelu, "relu", {x}, {r});
  graph.add_node(OpType::kAdd, "add", {r, x}, {sum});
  graph.add_node(OpType::kMul, "mul", {sum, r}, {product});
  graph.outputs = {product, sum};
  ASSERT_TRUE(graph.validate().ok());

  Expected<std::vector<Tensor>> result = run_reference(graph, {Tensor({2, 2}, {-1, 2, 3, -4})});
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  // relu = {0, 2, 3, 0}; sum = relu + x = {-1, 4, 6, -4}; product = sum * relu.
  EXPECT_EQ(result->at(0).data, (std::vector<float>{0, 8, 18, 0}));
  EXPECT_EQ(result->at(1).data, (std::vector<float>{-1, 4, 6, -4}));
}

}  // namespace
}  // namespace densert
