// The oneDNN engine against the reference executor: one table of single-op graphs, each run
// at batch 1 and 3, then small DenseNets built in code that must run with their dense blocks
// in shared buffers, no Concat copies and no reference fallbacks.
#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/engine/norm_conv1x1.h"
#include "runtime/reference_executor.h"
#include "tests/support/graph_builder.h"
#include "tests/support/test_support.h"

namespace densert {
namespace {

using testing::GraphBuilder;
using testing::pool_attrs;
using testing::square_window;

// oneDNN sums in another order than the reference; ops that only select or copy are exact.
constexpr float kSummingTolerance = 1e-4f;
constexpr float kExactTolerance = 1e-5f;

std::string plan_text(const PlanSummary& summary) {
  std::string text;
  for (const StepInfo& step : summary.steps) {
    text += step.node + " " + step.op + " " + step.implementation + "\n";
  }
  return text;
}

std::shared_ptr<Engine> create_engine(const Graph& graph, const EngineOptions& options = {}) {
  Expected<std::shared_ptr<Engine>> engine = Engine::create(graph, options);
  if (!engine.ok()) {
    ADD_FAILURE() << engine.status().to_string();
    return nullptr;
  }
  return *engine;
}

// Options that keep the graph as built: every optimizer pass switched off.
EngineOptions without_passes() {
  EngineOptions options;
  for (const PassInfo& pass : optimizer_passes()) {
    options.optimize.disabled.insert(pass.name);
  }
  return options;
}

// Runs both executors on the same random batch and compares every output.
void expect_engine_matches_reference(const Engine& engine, const Graph& graph, int64_t batch,
                                     float tolerance) {
  SCOPED_TRACE("batch " + std::to_string(batch));
  const std::vector<Tensor> inputs = testing::random_inputs(graph, batch, 7);
  Expected<std::vector<Tensor>> expected = run_reference(graph, inputs);
  Expected<std::vector<Tensor>> actual = engine.run(inputs);
  ASSERT_TRUE(expected.ok()) << expected.status().to_string();
  ASSERT_TRUE(actual.ok()) << actual.status().to_string();
  ASSERT_EQ(actual->size(), expected->size());
  for (size_t i = 0; i < expected->size(); ++i) {
    ASSERT_GT(testing::max_abs((*expected)[i]), 0.0f) << "output " << i;
    testing::expect_close_with_same_top1((*actual)[i], (*expected)[i], tolerance,
                                         "output " + std::to_string(i));
  }
}

// Image i of a batch must come out exactly as when it runs alone.
void expect_rows_match_single_runs(const Engine& engine, const Graph& graph, int64_t batch) {
  const std::vector<Tensor> inputs = testing::random_inputs(graph, batch, 11);
  Expected<std::vector<Tensor>> batched = engine.run(inputs);
  ASSERT_TRUE(batched.ok()) << batched.status().to_string();
  for (int64_t image = 0; image < batch; ++image) {
    std::vector<Tensor> single_inputs;
    for (const Tensor& t : inputs) {
      single_inputs.push_back(testing::slice_batch(t, image, image + 1));
    }
    Expected<std::vector<Tensor>> single = engine.run(single_inputs);
    ASSERT_TRUE(single.ok()) << single.status().to_string();
    for (size_t i = 0; i < single->size(); ++i) {
      const Tensor row = testing::slice_batch((*batched)[i], image, image + 1);
      EXPECT_EQ(testing::max_abs_diff(row, (*single)[i]), 0.0f)
          << "output " << i << ", image " << image;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Single ops

struct OpCase {
  std::string name;
  Dims input;  // with kBatchDim first
  std::function<ValueId(GraphBuilder&, ValueId)> build;
  float tolerance;
  bool fast = true;  // every step runs a JIT-compiled oneDNN primitive, a view or a reorder
};

void PrintTo(const OpCase& c, std::ostream* out) {
  *out << c.name;
}

class EngineOp : public ::testing::TestWithParam<OpCase> {};

TEST_P(EngineOp, MatchesReferenceAtBatch1And3) {
  const OpCase& c = GetParam();
  GraphBuilder b(21);
  b.output(c.build(b, b.input("x", c.input)));
  // Without the passes the engine runs the op as the case wrote it: no BatchNorm folds into
  // the conv in front of it.
  EngineOptions options = without_passes();
  const std::shared_ptr<Engine> engine = create_engine(b.graph(), options);
  ASSERT_NE(engine, nullptr);
  if (c.fast) {
    EXPECT_EQ(engine->summary().reference_steps, 0) << plan_text(engine->summary());
    // Nor oneDNN's own reference kernels ("ref:any").
    for (const StepInfo& step : engine->summary().steps) {
      EXPECT_EQ(step.implementation.find("ref"), std::string::npos) << plan_text(engine->summary());
    }
  }

  expect_engine_matches_reference(*engine, b.graph(), 1, c.tolerance);
  expect_engine_matches_reference(*engine, b.graph(), 3, c.tolerance);
  expect_rows_match_single_runs(*engine, b.graph(), 3);
}

Window window(std::array<int64_t, 2> kernel, std::array<int64_t, 2> strides,
              std::array<int64_t, 4> pads, std::array<int64_t, 2> dilations = {1, 1}) {
  Window w;
  w.kernel = kernel;
  w.strides = strides;
  w.pads = pads;
  w.dilations = dilations;
  return w;
}

// A single conv; `window` decides kernel, strides, pads and dilations.
OpCase conv_case(std::string name, Dims input, int64_t out_channels, Window w, bool bias = true,
                 Activation activation = {}) {
  return {std::move(name), std::move(input),
          [=](GraphBuilder& b, ValueId x) {
            return b.conv("conv", x, out_channels, w, bias, activation);
          },
          kSummingTolerance};
}

// A conv with 12 output channels first, so the op under test reads the blocked layout with
// four padding channels, as it does inside a DenseNet.
ValueId blocked_source(GraphBuilder& b, ValueId x) {
  return b.conv("source", x, 12, square_window(1));
}

OpCase pool_case(std::string name, Dims input, OpType op, PoolAttrs attrs, bool blocked = false,
                 bool fast = true) {
  return {std::move(name), std::move(input),
          [=](GraphBuilder& b, ValueId x) {
            return b.add(op, "pool", {blocked ? blocked_source(b, x) : x}, attrs);
          },
          blocked ? kSummingTolerance : kExactTolerance, fast};
}

std::vector<OpCase> conv_cases() {
  const Dims image = {kBatchDim, 8, 9, 9};
  return {
      conv_case("conv1x1", image, 16, square_window(1)),
      conv_case("conv3x3_pad1", image, 16, square_window(3, 1, 1)),
      conv_case("conv7x7_stride2_pad3_in3", {kBatchDim, 3, 15, 15}, 16, square_window(7, 2, 3)),
      conv_case("conv_asymmetric_pads", {kBatchDim, 8, 7, 6}, 16,
                window({3, 3}, {1, 1}, {0, 1, 2, 0})),
      conv_case("conv_asymmetric_kernel_stride", image, 16, window({1, 3}, {2, 1}, {0, 1, 0, 1})),
      conv_case("conv_dilation2", image, 16, window({3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2})),
      conv_case("conv_no_bias", image, 16, square_window(3, 1, 1), false),
      conv_case("conv_fused_relu", image, 16, square_window(3, 1, 1), true, Activation::relu()),
      conv_case("conv_fused_clip", image, 16, square_window(3, 1, 1), true,
                Activation::clip(-0.25f, 0.5f)),
      conv_case("conv_out12", image, 12, square_window(3, 1, 1)),
      conv_case("conv_out20", image, 20, square_window(1)),
      // oneDNN 2.6 has JIT kernels for a plain src only below one channel block (first-layer
      // convolutions): an input of 20 channels is loaded into the blocked layout instead.
      conv_case("conv_input_in20_out20", {kBatchDim, 20, 5, 5}, 20, square_window(3, 1, 1)),
      {"conv_blocked_in20_out20",
       {kBatchDim, 8, 5, 5},
       [](GraphBuilder& b, ValueId x) {
         const ValueId src = b.conv("source", x, 20, square_window(1));
         return b.conv("conv", src, 20, square_window(3, 1, 1));
       },
       kSummingTolerance},
      // Blocked src with padding channels feeding a conv with a non-multiple-of-16 output.
      {"conv_after_conv_out12", image,
       [](GraphBuilder& b, ValueId x) {
         return b.conv("conv", blocked_source(b, x), 20, square_window(3, 2, 1));
       },
       kSummingTolerance},
  };
}

std::vector<OpCase> pool_cases() {
  const Dims image = {kBatchDim, 5, 9, 9};
  const Dims odd = {kBatchDim, 5, 7, 7};
  return {
      pool_case("maxpool3x3_stride2_pad1", image, OpType::kMaxPool,
                pool_attrs(square_window(3, 2, 1))),
      pool_case("maxpool_ceil", odd, OpType::kMaxPool, pool_attrs(square_window(2, 2), true)),
      pool_case("maxpool_floor", odd, OpType::kMaxPool, pool_attrs(square_window(2, 2), false)),
      pool_case("maxpool_asymmetric_pads", odd, OpType::kMaxPool,
                pool_attrs(window({3, 3}, {2, 2}, {1, 0, 0, 1}))),
      pool_case("maxpool_blocked", image, OpType::kMaxPool, pool_attrs(square_window(3, 2, 1)),
                true),
      pool_case("avgpool2x2_stride2", {kBatchDim, 5, 8, 8}, OpType::kAveragePool,
                pool_attrs(square_window(2, 2))),
      pool_case("avgpool_pad_excluded", image, OpType::kAveragePool,
                pool_attrs(square_window(3, 2, 1), false, false)),
      pool_case("avgpool_pad_included", image, OpType::kAveragePool,
                pool_attrs(square_window(3, 2, 1), false, true)),
      pool_case("avgpool_ceil_pad_excluded", odd, OpType::kAveragePool,
                pool_attrs(square_window(3, 2, 1), true, false)),
      pool_case("avgpool_ceil_no_pads_included", odd, OpType::kAveragePool,
                pool_attrs(square_window(2, 2), true, true), false, false),
      // oneDNN would divide the windows that hang past the end padding by the full kernel.
      pool_case("avgpool_ceil_pad_included", {kBatchDim, 5, 8, 8}, OpType::kAveragePool,
                pool_attrs(square_window(3, 2, 1), true, true), false, false),
      pool_case("avgpool_asymmetric_pads_included", odd, OpType::kAveragePool,
                pool_attrs(window({3, 3}, {2, 2}, {0, 1, 1, 0}), false, true)),
      pool_case("avgpool_asymmetric_pads_excluded", odd, OpType::kAveragePool,
                pool_attrs(window({3, 3}, {2, 2}, {0, 1, 1, 0}), false, false)),
      pool_case("avgpool_blocked", {kBatchDim, 5, 8, 8}, OpType::kAveragePool,
                pool_attrs(square_window(2, 2)), true),
      {"global_average_pool", image,
       [](GraphBuilder& b, ValueId x) { return b.add(OpType::kGlobalAveragePool, "gap", {x}); },
       kSummingTolerance},
      {"global_average_pool_blocked", image,
       [](GraphBuilder& b, ValueId x) {
         return b.add(OpType::kGlobalAveragePool, "gap", {blocked_source(b, x)});
       },
       kSummingTolerance},
  };
}

std::vector<OpCase> other_cases() {
  const Dims image = {kBatchDim, 6, 5, 5};
  const Dims features = {kBatchDim, 20};
  return {
      {"batchnorm", image, [](GraphBuilder& b, ValueId x) { return b.batch_norm("bn", x); },
       kSummingTolerance},
      {"batchnorm_relu", image,
       [](GraphBuilder& b, ValueId x) { return b.batch_norm("bn", x, Activation::relu()); },
       kSummingTolerance},
      {"batchnorm_relu_blocked", image,
       [](GraphBuilder& b, ValueId x) {
         return b.batch_norm("bn", blocked_source(b, x), Activation::relu());
       },
       kSummingTolerance},
      // oneDNN 2.6 batch normalization takes no post-ops: the engine falls back to the
      // reference, and fuse_activation never makes this node.
      {"batchnorm_fused_clip", image,
       [](GraphBuilder& b, ValueId x) {
         return b.batch_norm("bn", blocked_source(b, x), Activation::clip(0.1f, 0.6f));
       },
       kSummingTolerance, false},
      {"relu_blocked", image,
       [](GraphBuilder& b, ValueId x) { return b.relu("relu", blocked_source(b, x)); },
       kSummingTolerance},
      {"gemm_bias", features,
       [](GraphBuilder& b, ValueId x) { return b.gemm("fc", x, 10, testing::gemm_attrs()); },
       kSummingTolerance},
      {"gemm_no_bias", features,
       [](GraphBuilder& b, ValueId x) {
         return b.gemm("fc", x, 10, testing::gemm_attrs(), /*bias=*/false);
       },
       kSummingTolerance},
      {"gemm_transb_alpha_beta", features,
       [](GraphBuilder& b, ValueId x) {
         return b.gemm("fc", x, 10, testing::gemm_attrs(0.5f, 2.0f, true));
       },
       kSummingTolerance},
      {"gemm_bias_row", features,
       [](GraphBuilder& b, ValueId x) {
         const ValueId weights = b.random_constant("fc.b", {20, 10});
         return b.add(OpType::kGemm, "fc", {x, weights, b.random_constant("fc.c", {1, 10})},
                      testing::gemm_attrs(1.0f, 0.5f));
       },
       kSummingTolerance},
      {"gemm_fused_relu", features,
       [](GraphBuilder& b, ValueId x) {
         return b.gemm("fc", x, 10, testing::gemm_attrs(1.0f, 1.0f, false, Activation::relu()));
       },
       kSummingTolerance},
      {"gemm_fused_clip", features,
       [](GraphBuilder& b, ValueId x) {
         return b.gemm("fc", x, 10,
                       testing::gemm_attrs(1.0f, 1.0f, true, Activation::clip(-0.2f, 0.3f)));
       },
       kSummingTolerance},
      {"softmax", features,
       [](GraphBuilder& b, ValueId x) {
         return b.add(OpType::kSoftmax, "softmax", {x}, AxisAttrs{1});
       },
       kExactTolerance},
      {"flatten", image,
       [](GraphBuilder& b, ValueId x) {
         return b.add(OpType::kFlatten, "flat", {x}, AxisAttrs{1});
       },
       kExactTolerance},
      {"flatten_blocked", image,
       [](GraphBuilder& b, ValueId x) {
         return b.add(OpType::kFlatten, "flat", {blocked_source(b, x)}, AxisAttrs{1});
       },
       kSummingTolerance},
      // The DenseNet head: global pool, Flatten, Gemm over channels that are not a multiple of 16.
      {"classifier_head", image,
       [](GraphBuilder& b, ValueId x) {
         const ValueId pooled = b.add(OpType::kGlobalAveragePool, "gap", {blocked_source(b, x)});
         const ValueId flat = b.add(OpType::kFlatten, "flat", {pooled}, AxisAttrs{1});
         return b.add(OpType::kSoftmax, "prob",
                      {b.gemm("fc", flat, 10, testing::gemm_attrs(1.0f, 1.0f, true))},
                      AxisAttrs{1});
       },
       kSummingTolerance},
  };
}

std::string op_case_name(const ::testing::TestParamInfo<OpCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Conv, EngineOp, ::testing::ValuesIn(conv_cases()), op_case_name);
INSTANTIATE_TEST_SUITE_P(Pool, EngineOp, ::testing::ValuesIn(pool_cases()), op_case_name);
INSTANTIATE_TEST_SUITE_P(Other, EngineOp, ::testing::ValuesIn(other_cases()), op_case_name);

TEST(EngineOptimized, BatchNormThenClipStaysOnPrimitives) {
  // With the passes on, the Clip stays a separate eltwise step instead of becoming a post-op
  // that oneDNN's batch normalization cannot take.
  GraphBuilder b(3);
  const ValueId x = b.input("x", {kBatchDim, 12, 5, 5});
  const ValueId features =
      b.add(OpType::kMaxPool, "pool", {b.conv("conv", x, 12, square_window(1))},
            pool_attrs(square_window(3, 1, 1)));
  b.output(b.clip("clip", b.batch_norm("bn", features), 0.1f, 0.6f));
  const Graph graph = b.graph();

  const std::shared_ptr<Engine> engine = create_engine(graph);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->summary().reference_steps, 0) << plan_text(engine->summary());
  ASSERT_EQ(engine->summary().steps.size(), 4u) << plan_text(engine->summary());
  EXPECT_EQ(engine->summary().steps[3].op, "Clip");
  for (int64_t batch : {1, 3}) {
    expect_engine_matches_reference(*engine, graph, batch, kSummingTolerance);
  }
}

// ---------------------------------------------------------------------------------------
// Small DenseNets

// BN-ReLU-1x1 conv (4 * growth)-BN-ReLU-3x3 conv (growth): a DenseNet-BC layer.
ValueId dense_layer(GraphBuilder& b, const std::string& name, ValueId src, int64_t growth) {
  const ValueId bottleneck =
      b.conv(name + ".conv1", b.relu(name + ".relu1", b.batch_norm(name + ".norm1", src)),
             4 * growth, square_window(1), /*bias=*/false);
  return b.conv(name + ".conv2", b.relu(name + ".relu2", b.batch_norm(name + ".norm2", bottleneck)),
                growth, square_window(3, 1, 1), /*bias=*/false);
}

// Stem (7x7 conv, BN, ReLU, max pool) to 24 channels of 8x8; block 1 with 4 layers of growth
// 12 in torchvision's list form; a transition to 36 channels of 4x4; block 2 with 3 layers of
// growth 20 in the chained form; then BN, ReLU, global pool and the classifier.
Graph small_densenet() {
  GraphBuilder b(5);
  const ValueId x = b.input("x", {kBatchDim, 3, 32, 32});
  const ValueId stem = b.relu(
      "stem.relu", b.batch_norm("stem.norm", b.conv("stem.conv", x, 24, square_window(7, 2, 3),
                                                    /*bias=*/false)));
  const ValueId pooled =
      b.add(OpType::kMaxPool, "stem.pool", {stem}, pool_attrs(square_window(3, 2, 1)));

  std::vector<ValueId> features = {pooled};
  for (int layer = 1; layer <= 4; ++layer) {
    const std::string name = "block1.layer" + std::to_string(layer);
    features.push_back(dense_layer(b, name, b.concat(name + ".cat", features), 12));
  }
  const ValueId block1 = b.concat("block1.out", features);

  const ValueId transition = b.add(
      OpType::kAveragePool, "transition.pool",
      {b.conv("transition.conv", b.relu("transition.relu", b.batch_norm("transition.norm", block1)),
              36, square_window(1), /*bias=*/false)},
      pool_attrs(square_window(2, 2)));

  ValueId block2 = transition;
  for (int layer = 1; layer <= 3; ++layer) {
    const std::string name = "block2.layer" + std::to_string(layer);
    block2 = b.concat(name + ".cat", {block2, dense_layer(b, name, block2, 20)});
  }

  const ValueId head = b.relu("head.relu", b.batch_norm("head.norm", block2));
  const ValueId flat =
      b.add(OpType::kFlatten, "head.flatten",
            {b.add(OpType::kGlobalAveragePool, "head.pool", {head})}, AxisAttrs{1});
  b.output(b.gemm("classifier", flat, 10, testing::gemm_attrs(1.0f, 1.0f, true)));
  return b.graph();
}

// A plan runs image by image, so a value must keep the batch as its first dim. A reshape to
// [-1] folds it into the only dim while the declared shape still reads [N]; the reference
// executor runs such a graph, the engine refuses it.
TEST(EnginePlan, ReshapeThatFoldsTheBatchIsRefused) {
  GraphBuilder b(3);
  const ValueId x = b.input("x", {kBatchDim, 3, 4, 4});
  ReshapeAttrs flat;
  flat.shape = {-1};
  b.output(b.add(OpType::kReshape, "flat", {b.relu("relu", x)}, flat));
  Expected<std::shared_ptr<Engine>> engine = Engine::create(b.graph());
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().kind(), ErrorKind::kUnsupported);
  EXPECT_EQ(engine.status().message(),
            "value \"flat\" has shape [48] at batch 1 and [96] at batch 2: it does not keep the "
            "batch as its first dim");

  Expected<std::vector<Tensor>> reference =
      run_reference(b.graph(), {testing::random_tensor({2, 3, 4, 4}, 1)});
  ASSERT_TRUE(reference.ok()) << reference.status().to_string();
  EXPECT_EQ(dims_to_string(reference->at(0).dims), "[96]");
}

// Activations larger than the machine's memory are refused when the plan is made (or, by the
// reference executor, before it allocates), not left to fail midway.
TEST(EnginePlan, ActivationsBeyondMemoryAreRefused) {
  GraphBuilder b(3);
  const ValueId x = b.input("x", {kBatchDim, 3, 4, 4});
  PadAttrs pad;
  pad.pads = {0, 0, 1 << 20, 1 << 20, 0, 0, 1 << 20, 1 << 20};  // 2^21 + 4 a side
  b.output(b.relu("relu", b.add(OpType::kPad, "pad", {x}, pad)));
  Expected<std::shared_ptr<Engine>> engine = Engine::create(b.graph());
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().kind(), ErrorKind::kUnsupported);
  EXPECT_EQ(engine.status().message().rfind("the plan's activations take ", 0), 0u)
      << engine.status().message();
  EXPECT_NE(engine.status().message().find(" TiB per image, more than this machine's memory ("),
            std::string::npos)
      << engine.status().message();

  Expected<std::vector<Tensor>> reference =
      run_reference(b.graph(), {testing::random_tensor({1, 3, 4, 4}, 1)});
  ASSERT_FALSE(reference.ok());
  EXPECT_EQ(reference.status().kind(), ErrorKind::kUnsupported);
  EXPECT_EQ(reference.status().message().rfind(
                "value \"pad\" of shape [1,3,2097156,2097156] takes 48 TiB, more than this "
                "machine's memory (",
                0),
            0u)
      << reference.status().message();
}

TEST(EngineDenseNet, BlocksRunWithoutCopiesOrFallbacks) {
  const Graph graph = small_densenet();
  const std::shared_ptr<Engine> engine = create_engine(graph);
  ASSERT_NE(engine, nullptr);
  const PlanSummary& summary = engine->summary();

  EXPECT_EQ(summary.concat_bytes_copied, 0);
  EXPECT_EQ(summary.reference_steps, 0);
  for (const StepInfo& step : summary.steps) {
    EXPECT_EQ(step.implementation.find("ref"), std::string::npos)
        << step.node << " runs on " << step.implementation;
  }
  EXPECT_TRUE(summary.refused_blocks.empty());
  ASSERT_EQ(summary.blocks.size(), 2u);
  // Each segment is padded to the channel block on its own: 16 with AVX-512, 8 below.
  const int64_t block = summary.channel_block;
  ASSERT_TRUE(block == 16 || block == 8) << block;
  const auto padded = [&](int64_t channels) { return (channels + block - 1) / block * block; };
  // Block 1: 24 initial channels, then four segments of 12, at 8x8 (96 physical channels in
  // 16-channel blocks, 88 in 8-channel ones); five concat views (four layer inputs and the
  // block output).
  EXPECT_EQ(summary.blocks[0].channels, 72);
  EXPECT_EQ(summary.blocks[0].physical_channels, padded(24) + 4 * padded(12));
  EXPECT_EQ(summary.blocks[0].height, 8);
  EXPECT_EQ(summary.blocks[0].bytes, (padded(24) + 4 * padded(12)) * 8 * 8 * 4);
  EXPECT_EQ(summary.blocks[0].views, 5);
  // Block 2: 36 channels, three segments of 20, at 4x4 (144 or 112 physical channels).
  EXPECT_EQ(summary.blocks[1].channels, 96);
  EXPECT_EQ(summary.blocks[1].physical_channels, padded(36) + 3 * padded(20));
  EXPECT_EQ(summary.blocks[1].width, 4);
  EXPECT_EQ(summary.blocks[1].views, 3);

  for (int64_t batch : {1, 3, 8}) {
    expect_engine_matches_reference(*engine, graph, batch, kSummingTolerance);
  }
  expect_rows_match_single_runs(*engine, graph, 3);
}

// oneDNN's AVX2 and SSE4.1 kernels take 8-channel blocks only, so the plan's block follows the
// ISA oneDNN runs at (ONEDNN_MAX_CPU_ISA=AVX2 gives a CPU without AVX-512 here), and the
// kernels chosen are JIT kernels of that ISA.
TEST(EngineDenseNet, ChannelBlockFollowsTheIsa) {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  const bool has_avx512 = (isa & avx512) == avx512;
  const std::shared_ptr<Engine> engine = create_engine(small_densenet());
  ASSERT_NE(engine, nullptr);
  const PlanSummary& summary = engine->summary();
  EXPECT_EQ(summary.channel_block, has_avx512 ? 16 : 8);
  int convolutions = 0;
  for (const StepInfo& step : summary.steps) {
    if (step.op != "Conv" || step.implementation.rfind("densert_", 0) == 0) continue;
    ++convolutions;
    EXPECT_EQ(step.implementation.find("avx512") != std::string::npos, has_avx512)
        << step.node << " runs on " << step.implementation;
  }
  EXPECT_GT(convolutions, 0);
}

TEST(EngineDenseNet, WithoutDenseBlocksConcatsCopy) {
  const Graph graph = small_densenet();
  EngineOptions options;
  options.optimize.disabled = {"dense_blocks"};
  const std::shared_ptr<Engine> engine = create_engine(graph, options);
  ASSERT_NE(engine, nullptr);

  EXPECT_TRUE(engine->summary().blocks.empty());
  // Every concat copies its logical channels per image: block 1's five concats join 24, 36,
  // 48, 60 and 72 channels of 8x8; block 2's three join 56, 76 and 96 channels of 4x4.
  EXPECT_EQ(engine->summary().concat_bytes_copied,
            (24 + 36 + 48 + 60 + 72) * 8 * 8 * 4 + (56 + 76 + 96) * 4 * 4 * 4);
  EXPECT_EQ(engine->summary().reference_steps, 0) << plan_text(engine->summary());
  for (int64_t batch : {1, 3}) {
    expect_engine_matches_reference(*engine, graph, batch, kSummingTolerance);
  }
}

TEST(EngineDenseNet, WithEveryPassDisabledOutputsMatch) {
  const Graph graph = small_densenet();
  EngineOptions options = without_passes();
  const std::shared_ptr<Engine> engine = create_engine(graph, options);
  ASSERT_NE(engine, nullptr);

  for (const PassReport& report : engine->summary().passes) {
    EXPECT_FALSE(report.ran) << report.name;
  }
  EXPECT_GT(engine->summary().concat_bytes_copied, 0);
  for (int64_t batch : {1, 3}) {
    expect_engine_matches_reference(*engine, graph, batch, kSummingTolerance);
  }
}

TEST(EngineDenseNet, RefusedBlockStillRuns) {
  // The graph input cannot live in a block buffer, so the concat copies.
  GraphBuilder b(9);
  const ValueId x = b.input("x", {kBatchDim, 8, 6, 6});
  const ValueId features = b.conv("features", x, 12, square_window(3, 1, 1));
  const ValueId joined = b.concat("joined", {x, features});
  b.output(b.conv("out", b.relu("relu", b.batch_norm("norm", joined)), 16, square_window(1)));
  const Graph graph = b.graph();

  const std::shared_ptr<Engine> engine = create_engine(graph);
  ASSERT_NE(engine, nullptr);
  EXPECT_TRUE(engine->summary().blocks.empty());
  ASSERT_EQ(engine->summary().refused_blocks.size(), 1u);
  EXPECT_NE(engine->summary().refused_blocks[0].find("graph input"), std::string::npos);
  EXPECT_EQ(engine->summary().concat_bytes_copied, 20 * 6 * 6 * 4);
  EXPECT_EQ(engine->summary().reference_steps, 0) << plan_text(engine->summary());
  for (int64_t batch : {1, 3}) {
    expect_engine_matches_reference(*engine, graph, batch, kSummingTolerance);
  }
}

// ---------------------------------------------------------------------------------------
// BatchNormalization + 1x1 convolution in densert's own kernel

struct NormConvCase {
  std::string name;
  int64_t in_channels, out_channels, height, width;
  Activation norm_activation, conv_activation;
  bool pool = false;  // a 2x2 average pool with stride 2 between the two, as in transitions
  // The normalization's activation as a Relu or Clip node of its own (a Keras-style ReLU6)
  // instead of an attribute of the BatchNormalization.
  bool activation_node = false;
};

void PrintTo(const NormConvCase& c, std::ostream* out) {
  *out << c.name;
}

class EngineNormConv : public ::testing::TestWithParam<NormConvCase> {};

// A producing 3x3 conv puts the input in the blocked layout with padding channels; then
// BatchNormalization (with its activation), maybe a pool, and the 1x1 convolution the engine
// fuses.
Graph norm_conv_graph(const NormConvCase& c) {
  GraphBuilder b(17);
  const ValueId x = b.input("x", {kBatchDim, 3, c.height, c.width});
  const ValueId features = b.conv("features", x, c.in_channels, square_window(3, 1, 1));
  ValueId normalized =
      b.batch_norm("norm", features, c.activation_node ? Activation{} : c.norm_activation);
  if (c.activation_node && c.norm_activation.kind == Activation::Kind::kRelu) {
    normalized = b.relu("act", normalized);
  } else if (c.activation_node) {
    normalized = b.clip("act", normalized, c.norm_activation.min, c.norm_activation.max);
  }
  if (c.pool) {
    normalized = b.add(OpType::kAveragePool, "pool", {normalized}, pool_attrs(square_window(2, 2)));
  }
  b.output(b.conv("conv", normalized, c.out_channels, square_window(1), /*bias=*/true,
                  c.conv_activation));
  return b.graph();
}

TEST_P(EngineNormConv, FusedMatchesReferenceAndUnfused) {
  if (!NormConv1x1::supported()) GTEST_SKIP() << "densert's AVX-512 kernel does not run here";
  const NormConvCase& c = GetParam();
  const Graph graph = norm_conv_graph(c);
  // The passes would fold nothing here; keep the graph as built.
  EngineOptions options = without_passes();
  const std::shared_ptr<Engine> fused = create_engine(graph, options);
  options.fuse_norm_conv = false;
  const std::shared_ptr<Engine> unfused = create_engine(graph, options);
  ASSERT_NE(fused, nullptr);
  ASSERT_NE(unfused, nullptr);

  const size_t steps = 3 + (c.pool ? 1 : 0) + (c.activation_node ? 1 : 0);
  ASSERT_EQ(fused->summary().steps.size(), steps) << plan_text(fused->summary());
  for (size_t s = 1; s + 1 < steps; ++s) {
    EXPECT_EQ(fused->summary().steps[s].implementation, "fused");
  }
  EXPECT_EQ(fused->summary().steps.back().implementation, "densert_norm_conv1x1:avx512");
  EXPECT_NE(unfused->summary().steps[1].implementation, "fused");
  // The normalized value is never written, so it takes no arena bytes.
  EXPECT_LE(fused->summary().arena_bytes, unfused->summary().arena_bytes);

  for (int64_t batch : {1, 3}) {
    expect_engine_matches_reference(*fused, graph, batch, kSummingTolerance);
  }
  expect_rows_match_single_runs(*fused, graph, 3);
  const std::vector<Tensor> inputs = testing::random_inputs(graph, 2, 5);
  Expected<std::vector<Tensor>> a = fused->run(inputs);
  Expected<std::vector<Tensor>> b = unfused->run(inputs);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LE(testing::max_abs_diff((*a)[0], (*b)[0]), kSummingTolerance * testing::max_abs((*b)[0]));
}

std::vector<NormConvCase> norm_conv_cases() {
  const Activation relu = Activation::relu(), none;
  return {
      // A DenseNet-121 bottleneck at 7x7: 16 input blocks, two groups of four output blocks.
      {"bottleneck_7x7", 256, 128, 7, 7, relu, relu},
      // Growth-12 shapes: 36 channels padded to 48 in, 48 out (one group of three blocks).
      {"growth12_9x9", 36, 48, 9, 9, relu, relu},
      // 130 outputs: groups of 4, 4 and 1 blocks; 13x11 leaves tails in every register tile.
      {"odd_outputs_13x11", 40, 130, 13, 11, relu, none},
      // Enough pixels for several tiles per thread; a clamped input and a clipped output.
      {"clips_30x30", 64, 32, 30, 30, Activation::clip(0.1f, 0.9f), Activation::clip(-0.2f, 0.3f)},
      {"one_pixel", 20, 16, 1, 1, none, relu},
      // Transitions: the pool averages normalized pixels; odd sizes drop the last row/column.
      {"transition_28x28", 256, 128, 28, 28, relu, none, true},
      {"transition_odd_13x11", 40, 24, 13, 11, relu, relu, true},
      {"transition_2x3", 16, 16, 2, 3, Activation::clip(0.0f, 6.0f), none, true},
      // Activations as nodes of their own: ReLU6 and Relu, with and without the pool.
      {"relu6_node_9x9", 40, 48, 9, 9, Activation::clip(0.0f, 6.0f), relu, false, true},
      {"relu_node_transition_10x10", 32, 16, 10, 10, relu, none, true, true},
  };
}

INSTANTIATE_TEST_SUITE_P(Shapes, EngineNormConv, ::testing::ValuesIn(norm_conv_cases()),
                         [](const ::testing::TestParamInfo<NormConvCase>& info) {
                           return info.param.name;
                         });

TEST(EngineNormConv, NormalizedValueWithTwoReadersIsNotFused) {
  GraphBuilder b(19);
  const ValueId x = b.input("x", {kBatchDim, 3, 6, 6});
  const ValueId normalized =
      b.batch_norm("norm", b.conv("features", x, 32, square_window(3, 1, 1)), Activation::relu());
  b.output(b.conv("conv", normalized, 16, square_window(1)));
  b.output(normalized);
  const Graph graph = b.graph();
  EngineOptions options = without_passes();
  const std::shared_ptr<Engine> engine = create_engine(graph, options);
  ASSERT_NE(engine, nullptr);
  for (const StepInfo& step : engine->summary().steps) {
    EXPECT_NE(step.implementation, "fused") << plan_text(engine->summary());
    EXPECT_EQ(step.implementation.find("densert_"), std::string::npos);
  }
  expect_engine_matches_reference(*engine, graph, 2, kSummingTolerance);
}

// NaN and infinity pass through the fused kernel as through the reference: a ReLU sends NaN
// to 0 (x > 0 ? x : 0), a Clip or no activation keeps it.
TEST(EngineNormConv, NonFiniteInputsFollowTheReference) {
  if (!NormConv1x1::supported()) GTEST_SKIP() << "densert's AVX-512 kernel does not run here";
  for (const Activation& act : {Activation{}, Activation::relu(), Activation::clip(-1.0f, 1.0f)}) {
    GraphBuilder b(23);
    const ValueId x = b.input("x", {kBatchDim, 3, 5, 5});
    // 1x1 convolutions keep a non-finite pixel where it is.
    const ValueId features = b.conv("features", x, 20, square_window(1));
    b.output(b.conv("conv", b.batch_norm("norm", features, act), 24, square_window(1)));
    const Graph graph = b.graph();
    EngineOptions options = without_passes();
    const std::shared_ptr<Engine> engine = create_engine(graph, options);
    ASSERT_NE(engine, nullptr);
    ASSERT_EQ(engine->summary().steps.back().implementation, "densert_norm_conv1x1:avx512");

    std::vector<Tensor> inputs = testing::random_inputs(graph, 1, 3);
    inputs[0].data[0 * 25 + 7] = std::numeric_limits<float>::quiet_NaN();  // pixel 7
    inputs[0].data[1 * 25 + 12] = std::numeric_limits<float>::infinity();  // pixel 12
    Expected<std::vector<Tensor>> expected = run_reference(graph, inputs);
    Expected<std::vector<Tensor>> actual = engine->run(inputs);
    ASSERT_TRUE(expected.ok() && actual.ok());
    const Tensor& want = (*expected)[0];
    const Tensor& got = (*actual)[0];
    int non_finite = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
      const float w = want.data[i], g = got.data[i];
      if (std::isnan(w) || std::isnan(g)) {
        EXPECT_TRUE(std::isnan(w) && std::isnan(g)) << "element " << i << ": " << g << " vs " << w;
        ++non_finite;
      } else if (std::isinf(w) || std::isinf(g)) {
        EXPECT_EQ(g, w) << "element " << i;
        ++non_finite;
      } else {
        EXPECT_NEAR(g, w, kSummingTolerance * testing::max_abs(want) + 1e-6f) << "element " << i;
      }
    }
    // Without an activation both pixels stay non-finite in all 24 output channels; a Clip keeps
    // the NaN pixel and bounds the infinite one.
    if (act.kind == Activation::Kind::kNone) EXPECT_EQ(non_finite, 2 * 24);
    if (act.kind == Activation::Kind::kClip) EXPECT_EQ(non_finite, 24);
  }
}

// ---------------------------------------------------------------------------------------
// Dense blocks in awkward places

struct BlockCase {
  std::string name;
  std::function<void(GraphBuilder&)> build;
  size_t blocks;
  int64_t concat_bytes_copied;  // per image
  int reference_steps;
};

void PrintTo(const BlockCase& c, std::ostream* out) {
  *out << c.name;
}

class EngineBlock : public ::testing::TestWithParam<BlockCase> {};

TEST_P(EngineBlock, MatchesReference) {
  const BlockCase& c = GetParam();
  GraphBuilder b(13);
  c.build(b);
  const Graph graph = b.graph();
  const std::shared_ptr<Engine> engine = create_engine(graph);
  ASSERT_NE(engine, nullptr);

  EXPECT_EQ(engine->summary().blocks.size(), c.blocks);
  EXPECT_EQ(engine->summary().concat_bytes_copied, c.concat_bytes_copied);
  EXPECT_EQ(engine->summary().reference_steps, c.reference_steps) << plan_text(engine->summary());
  for (int64_t batch : {1, 3}) {
    expect_engine_matches_reference(*engine, graph, batch, kSummingTolerance);
  }
}

// A torchvision-form block of `layers` BN-ReLU-3x3 conv layers on `stem`; returns the concat
// of all features and, with `features`, the values it joins.
ValueId list_block(GraphBuilder& b, const std::string& name, ValueId stem, int layers,
                   int64_t growth, std::vector<ValueId>* features = nullptr) {
  std::vector<ValueId> joined = {stem};
  for (int layer = 1; layer <= layers; ++layer) {
    const std::string layer_name = name + ".layer" + std::to_string(layer);
    const ValueId src = b.concat(layer_name + ".cat", joined);
    joined.push_back(b.conv(layer_name + ".conv",
                            b.relu(layer_name + ".relu", b.batch_norm(layer_name + ".norm", src)),
                            growth, square_window(3, 1, 1)));
  }
  if (features) *features = joined;
  return b.concat(name + ".out", joined);
}

std::vector<BlockCase> block_cases() {
  return {
      {"block_output_is_graph_output",
       [](GraphBuilder& b) {
         const ValueId stem =
             b.conv("stem", b.input("x", {kBatchDim, 8, 6, 6}), 10, square_window(3, 1, 1));
         b.output(list_block(b, "block", stem, 3, 6));
       },
       1, 0, 0},
      {"segments_are_graph_outputs",
       [](GraphBuilder& b) {
         const ValueId stem =
             b.conv("stem", b.input("x", {kBatchDim, 8, 6, 6}), 10, square_window(3, 1, 1));
         std::vector<ValueId> features;
         const ValueId out = list_block(b, "block", stem, 2, 6, &features);
         for (ValueId feature : features) {
           b.output(feature);
         }
         b.output(b.relu("relu", out));
       },
       1, 0, 0},
      // Clips with a floor above zero fill the padding channels of every segment with the
      // floor; the readers of the block must ignore them.
      {"clip_floor_above_zero",
       [](GraphBuilder& b) {
         ValueId features = b.clip(
             "stem.clip", b.conv("stem", b.input("x", {kBatchDim, 8, 6, 6}), 10, square_window(1)),
             0.2f, 1.0f);
         for (int layer = 1; layer <= 3; ++layer) {
           const std::string name = "layer" + std::to_string(layer);
           const ValueId conv = b.conv(name + ".conv", b.batch_norm(name + ".norm", features), 6,
                                       square_window(3, 1, 1));
           features = b.concat(name + ".cat", {features, b.clip(name + ".clip", conv, 0.1f, 0.9f)});
         }
         const ValueId pooled =
             b.add(OpType::kMaxPool, "pool", {features}, pool_attrs(square_window(2, 2)));
         b.output(b.conv("out", pooled, 5, square_window(1)));
       },
       1, 0, 0},
      // The second block starts with a max pool of the first block's buffer: its src has the
      // first block's padded channel layout, its dst the dense layout of a new segment.
      {"segment_pooled_from_a_view",
       [](GraphBuilder& b) {
         const ValueId stem =
             b.conv("stem", b.input("x", {kBatchDim, 8, 6, 6}), 10, square_window(3, 1, 1));
         const ValueId first = list_block(b, "first", stem, 2, 6);
         const ValueId pooled =
             b.add(OpType::kMaxPool, "pool", {first}, pool_attrs(square_window(3, 1, 1)));
         b.output(list_block(b, "second", pooled, 2, 6));
       },
       2, 0, 1},
      {"one_input_concat_only",
       [](GraphBuilder& b) {
         const ValueId stem =
             b.conv("stem", b.input("x", {kBatchDim, 8, 6, 6}), 10, square_window(3, 1, 1));
         b.output(b.batch_norm("norm", b.concat("cat", {stem})));
       },
       1, 0, 0},
      // The block's first features are themselves a concat of two convs: one buffer holds all.
      {"nested_stem_concat",
       [](GraphBuilder& b) {
         const ValueId x = b.input("x", {kBatchDim, 8, 6, 6});
         const ValueId stem = b.concat("stem", {b.conv("stem.a", x, 10, square_window(1)),
                                                b.conv("stem.b", x, 7, square_window(3, 1, 1))});
         b.output(list_block(b, "block", stem, 2, 6));
       },
       1, 0, 0},
  };
}

INSTANTIATE_TEST_SUITE_P(Cases, EngineBlock, ::testing::ValuesIn(block_cases()),
                         [](const ::testing::TestParamInfo<BlockCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace densert
