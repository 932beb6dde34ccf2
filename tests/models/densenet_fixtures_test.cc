// Every DenseNet fixture through the reference executor against PyTorch, and through the
// fast engine against the reference executor, at batch 1, 3 and 8.
#include <gtest/gtest.h>

#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/norm_conv1x1.h"
#include "runtime/npy.h"
#include "runtime/reference_executor.h"
#include "runtime/shape_inference.h"
#include "tests/support/test_support.h"

namespace densert {
namespace {

using testing::expect_close_with_same_top1;
using testing::fixture_dir;
using testing::max_abs;
using testing::max_abs_diff;
using testing::slice_batch;

constexpr float kTolerance = 1e-4f;  // max |diff| <= kTolerance * max |reference|

struct Fixture {
  const char* name;
  int resolution;
  int blocks;           // dense blocks the optimizer must find
  int layers;           // dense layers (each with a BatchNorm + ReLU + 1x1 bottleneck)
  int transitions;      // transitions whose 2x2 pool fuses (not ceil-mode over odd sizes)
  bool check_all_rows;  // small models: check every row of a batch against batch-1 runs
};

const Fixture kFixtures[] = {
    {"densenet_bc_cifar", 32, 3, 48, 2, true},  {"densenet_bc_cifar_op9", 32, 3, 48, 2, true},
    {"densenet_chained", 40, 2, 8, 0, true},    {"densenet121_op11", 224, 4, 58, 3, false},
    {"densenet121_op13", 224, 4, 58, 3, false}, {"densenet121_op17", 224, 4, 58, 3, false},
    {"densenet169_op11", 224, 4, 82, 3, false}, {"densenet169_op13", 224, 4, 82, 3, false},
    {"densenet169_op17", 224, 4, 82, 3, false}, {"densenet201_op11", 224, 4, 98, 3, false},
    {"densenet201_op13", 224, 4, 98, 3, false}, {"densenet201_op17", 224, 4, 98, 3, false},
    {"densenet161_op11", 224, 4, 78, 3, false}, {"densenet161_op13", 224, 4, 78, 3, false},
    {"densenet161_op17", 224, 4, 78, 3, false},
};

// Names the fixture in test listings instead of dumping its bytes.
void PrintTo(const Fixture& fixture, std::ostream* out) {
  *out << fixture.name;
}

class DenseNetFixture : public ::testing::TestWithParam<Fixture> {
 protected:
  std::string path(const std::string& file) const { return fixture_dir() + "/" + file; }

  Tensor load(const std::string& file) const {
    Expected<Tensor> tensor = read_npy(path(file));
    EXPECT_TRUE(tensor.ok()) << tensor.status().to_string();
    return tensor.ok() ? std::move(tensor).value() : Tensor();
  }

  static Tensor run_one(const Graph& graph, const Tensor& input) {
    Expected<std::vector<Tensor>> out = run_reference(graph, {input});
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? std::move(out->front()) : Tensor();
  }

  static Tensor run_fast(const Engine& engine, const Tensor& input) {
    Expected<std::vector<Tensor>> out = engine.run({input});
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? std::move(out->front()) : Tensor();
  }
};

// Rows of `batched` equal the batch-1 runs of the same images, to float rounding.
void expect_rows_match(const Tensor& batched, const std::vector<Tensor>& singles,
                       const std::string& what) {
  for (size_t i = 0; i < singles.size(); ++i) {
    const Tensor row = slice_batch(batched, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
    EXPECT_LE(max_abs_diff(row, singles[i]), 1e-5f * max_abs(singles[i])) << what << ": row " << i;
  }
}

TEST_P(DenseNetFixture, MatchesPyTorchAndReference) {
  const Fixture& fixture = GetParam();
  const std::string name = fixture.name;
  Expected<Graph> imported = import_onnx_file(path(name + ".onnx"));
  ASSERT_TRUE(imported.ok()) << imported.status().to_string();
  const Graph& graph = *imported;
  const Tensor images = load("input_" + std::to_string(fixture.resolution) + ".npy");
  ASSERT_EQ(images.dims[0], 8);

  // Reference executor against PyTorch.
  const Tensor ref1 = run_one(graph, slice_batch(images, 0, 1));
  const Tensor ref3 = run_one(graph, slice_batch(images, 0, 3));
  expect_close_with_same_top1(ref1, load(name + ".golden_b1.npy"), kTolerance,
                              name + " reference b1");
  expect_close_with_same_top1(ref3, load(name + ".golden_b3.npy"), kTolerance,
                              name + " reference b3");
  std::vector<Tensor> ref_singles = {ref1};
  if (fixture.check_all_rows) {
    for (int64_t i = 1; i < 3; ++i)
      ref_singles.push_back(run_one(graph, slice_batch(images, i, i + 1)));
  }
  expect_rows_match(ref3, ref_singles, name + " reference b3");

  // The fast engine's plan: zero-copy blocks, no reference kernels.
  Expected<std::shared_ptr<Engine>> created = Engine::create(graph);
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  const Engine& engine = **created;
  const PlanSummary& plan = engine.summary();
  EXPECT_EQ(plan.concat_bytes_copied, 0) << name;
  EXPECT_EQ(static_cast<int>(plan.blocks.size()), fixture.blocks) << name;
  EXPECT_EQ(plan.reference_steps, 0) << name;
  for (const StepInfo& step : plan.steps) {
    EXPECT_EQ(step.implementation.find("ref"), std::string::npos)
        << name << ": " << step.node << " runs on " << step.implementation;
  }
  // Where the CPU has AVX-512, every dense layer's BatchNorm + ReLU + 1x1 convolution and every
  // transition's BatchNorm + ReLU + pool + 1x1 convolution runs in densert's fused kernel.
  if (NormConv1x1::supported()) {
    int fused_norms = 0, fused_pools = 0, fused_convs = 0;
    for (const StepInfo& step : plan.steps) {
      fused_norms += step.implementation == "fused" && step.op == "BatchNormalization";
      fused_pools += step.implementation == "fused" && step.op == "AveragePool";
      fused_convs += step.implementation == "densert_norm_conv1x1:avx512";
    }
    EXPECT_EQ(fused_norms, fused_convs) << name;
    EXPECT_EQ(fused_pools, fixture.transitions) << name;
    EXPECT_EQ(fused_convs, fixture.layers + fixture.transitions) << name;
  }
  // The arena is at least the largest block buffer and well below one buffer per value.
  Expected<std::vector<Dims>> shapes = infer_shapes(engine.graph(), 1);
  ASSERT_TRUE(shapes.ok());
  int64_t unshared = 0;
  for (size_t v = 0; v < shapes->size(); ++v) {
    if (!engine.graph().values[v].is_constant()) unshared += num_elements((*shapes)[v]) * 4;
  }
  int64_t largest_block = 0;
  for (const BlockInfo& block : plan.blocks)
    largest_block = std::max(largest_block, block.bytes);
  EXPECT_GE(plan.arena_bytes, largest_block) << name;
  EXPECT_LT(plan.arena_bytes, unshared / 2) << name;

  // Fast engine against the reference at batch 1, 3 and 8.
  const Tensor fast1 = run_fast(engine, slice_batch(images, 0, 1));
  const Tensor fast3 = run_fast(engine, slice_batch(images, 0, 3));
  const Tensor fast8 = run_fast(engine, images);
  expect_close_with_same_top1(fast1, ref1, kTolerance, name + " fast b1");
  expect_close_with_same_top1(fast3, ref3, kTolerance, name + " fast b3");
  expect_close_with_same_top1(slice_batch(fast8, 0, 3), ref3, kTolerance,
                              name + " fast b8 rows 0-2");
  const Tensor ref_rest = run_one(graph, slice_batch(images, 3, 8));
  expect_close_with_same_top1(slice_batch(fast8, 3, 8), ref_rest, kTolerance,
                              name + " fast b8 rows 3-7");
  std::vector<Tensor> fast_singles;
  for (int64_t i = 0; i < 8; ++i)
    fast_singles.push_back(run_fast(engine, slice_batch(images, i, i + 1)));
  expect_rows_match(fast8, fast_singles, name + " fast b8");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DenseNetFixture, ::testing::ValuesIn(kFixtures),
                         [](const ::testing::TestParamInfo<Fixture>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace densert
