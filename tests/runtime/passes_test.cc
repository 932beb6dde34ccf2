// Each optimizer pass run alone on a small graph built in code. A case checks how many
// rewrites the pass reports, the rewritten graph's text against a golden written here, and
// that the reference executor computes the same outputs before and after the pass.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/passes/pass.h"
#include "runtime/reference_executor.h"
#include "tests/support/graph_builder.h"
#include "tests/support/test_support.h"

namespace densert {
namespace {

using testing::GraphBuilder;
using testing::square_window;

// The passes only reorder float arithmetic (folding, pooling before a 1x1 convolution).
constexpr float kRelativeTolerance = 1e-5f;

void expect_same_outputs(const Graph& graph, const Graph& rewritten, int64_t batch) {
  const std::vector<Tensor> inputs = testing::random_inputs(graph, batch, 100);
  Expected<std::vector<Tensor>> before = run_reference(graph, inputs);
  Expected<std::vector<Tensor>> after = run_reference(rewritten, inputs);
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  ASSERT_EQ(before->size(), after->size());
  for (size_t i = 0; i < before->size(); ++i) {
    const Tensor& expected = (*before)[i];
    const Tensor& actual = (*after)[i];
    ASSERT_EQ(dims_to_string(actual.dims), dims_to_string(expected.dims)) << "output " << i;
    // A reference output that is all zeros would make the relative bound vacuous.
    ASSERT_GT(testing::max_abs(expected), 0.0f) << "output " << i;
    EXPECT_LE(testing::max_abs_diff(actual, expected),
              kRelativeTolerance * testing::max_abs(expected))
        << "output " << i;
  }
}

// Runs `pass` on a copy of `graph`, checks the rewrite count, the text and the outputs, and
// returns the rewritten copy for further checks.
Graph check_pass(PassFunction pass, const Graph& graph, int expected_rewrites,
                 const std::string& expected_text, int64_t batch = 2) {
  Graph rewritten = graph;
  Expected<PassResult> result = pass(rewritten);
  if (!result.ok()) {
    ADD_FAILURE() << result.status().to_string();
    return rewritten;
  }
  EXPECT_EQ(result->rewrites, expected_rewrites);
  const Status valid = rewritten.validate();
  EXPECT_TRUE(valid.ok()) << valid.to_string();
  EXPECT_EQ(rewritten.to_text(), expected_text);
  expect_same_outputs(graph, rewritten, batch);
  return rewritten;
}

// The BatchNormalization the builder makes, as to_text prints its operands.
std::string batch_norm_operands(const std::string& name, int64_t channels) {
  const std::string dims = ":[" + std::to_string(channels) + "]";
  return "%" + name + ".scale" + dims + ", %" + name + ".bias" + dims + ", %" + name + ".mean" +
         dims + ", %" + name + ".var" + dims;
}

// ---------------------------------------------------------------------------------------
// cleanup

TEST(CleanupPass, RemovesNoOpsAndKeepsTheGraphOutputName) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 4, 6, 6});
  const ValueId identity = b.add(OpType::kIdentity, "identity", {x});
  const ValueId conv = b.conv("conv", identity, 8, square_window(3, 1, 1));
  const ValueId dropout = b.add(OpType::kDropout, "dropout", {conv});
  const ValueId zero_pad =
      b.add(OpType::kPad, "zero_pad", {dropout}, PadAttrs{{0, 0, 0, 0, 0, 0, 0, 0}, 0.0f});
  const ValueId relu = b.relu("relu", zero_pad);
  // A Pad that pads something stays, and so does the Identity that names the graph output.
  const ValueId pad = b.add(OpType::kPad, "pad", {relu}, PadAttrs{{0, 0, 1, 0, 0, 0, 0, 1}, 0.5f});
  b.output(b.add(OpType::kIdentity, "out", {pad}));

  check_pass(run_cleanup, b.graph(), 3,
             "input %x: f32[N,4,6,6]\n"
             "%conv = Conv(%x, %conv.weights:[8,4,3,3], %conv.bias:[8]) "
             "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,8,6,6]\n"
             "%relu = Relu(%conv) -> f32[N,8,6,6]\n"
             "%pad = Pad(%relu) {pads=0,0,1,0,0,0,0,1 value=0.5} -> f32[N,8,7,7]\n"
             "%out = Identity(%pad) -> f32[N,8,7,7]\n"
             "output %out\n");
}

TEST(CleanupPass, KeepsANoOpBetweenGraphInputAndOutput) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3});
  b.output(b.add(OpType::kDropout, "y", {x}));

  check_pass(run_cleanup, b.graph(), 0,
             "input %x: f32[N,3]\n"
             "%y = Dropout(%x) -> f32[N,3]\n"
             "output %y\n");
}

// ---------------------------------------------------------------------------------------
// canonicalize

TEST(CanonicalizePass, SpatialReduceMeanBecomesGlobalAveragePool) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 8, 5, 5});
  b.output(b.add(OpType::kReduceMean, "kept", {x}, AxesAttrs{{2, 3}, true}));
  b.output(b.add(OpType::kReduceMean, "dropped", {x}, AxesAttrs{{-2, -1}, false}));
  // Reducing one spatial axis, or the channels, is not a global pool.
  b.output(b.add(OpType::kReduceMean, "rows", {x}, AxesAttrs{{2}, true}));
  b.output(b.add(OpType::kReduceMean, "channels", {x}, AxesAttrs{{1, 2}, true}));

  check_pass(run_canonicalize, b.graph(), 2,
             "input %x: f32[N,8,5,5]\n"
             "%kept = GlobalAveragePool(%x) -> f32[N,8,1,1]\n"
             "%dropped.pooled = GlobalAveragePool(%x) -> f32[N,8,1,1]\n"
             "%dropped = Flatten(%dropped.pooled) {axis=1} -> f32[N,8]\n"
             "%rows = ReduceMean(%x) {axes=2} -> f32[N,8,1,5]\n"
             "%channels = ReduceMean(%x) {axes=1,2} -> f32[N,1,1,5]\n"
             "output %kept\n"
             "output %dropped\n"
             "output %rows\n"
             "output %channels\n");
}

// ---------------------------------------------------------------------------------------
// affine_to_batchnorm

TEST(AffineToBatchNormPass, PerChannelMulAndAddBecomeBatchNorms) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 6, 4, 6});
  const ValueId scaled =
      b.add(OpType::kMul, "scaled", {x, b.random_constant("gamma", {1, 6, 1, 1})});
  // The constant first: Add commutes.
  const ValueId shifted =
      b.add(OpType::kAdd, "shifted", {b.random_constant("beta", {1, 6, 1, 1}), scaled});
  // [6] broadcasts over the width (also 6 here), not the channels: it must stay a Mul.
  const ValueId by_column =
      b.add(OpType::kMul, "by_column", {shifted, b.random_constant("w", {6})});
  // Neither is [1,6,1,1] nor a scalar.
  b.output(b.add(OpType::kMul, "masked", {by_column, b.random_constant("mask", {1, 1, 4, 6})}));

  check_pass(run_affine_to_batchnorm, b.graph(), 2,
             "input %x: f32[N,6,4,6]\n"
             "%scaled = BatchNormalization(%x, %scaled.scale:[6], %scaled.shift:[6], "
             "%scaled.mean:[6], %scaled.var:[6]) {epsilon=0} -> f32[N,6,4,6]\n"
             "%shifted = BatchNormalization(%scaled, %shifted.scale:[6], %shifted.shift:[6], "
             "%shifted.mean:[6], %shifted.var:[6]) {epsilon=0} -> f32[N,6,4,6]\n"
             "%by_column = Mul(%shifted, %w:[6]) -> f32[N,6,4,6]\n"
             "%masked = Mul(%by_column, %mask:[1,1,4,6]) -> f32[N,6,4,6]\n"
             "output %masked\n");
}

TEST(AffineToBatchNormPass, SubAndDivNeedTheActivationFirst) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 2, 2});
  const ValueId centred = b.add(OpType::kSub, "centred", {x, b.random_constant("mean", {3, 1, 1})});
  const ValueId divided =
      b.add(OpType::kDiv, "divided", {centred, b.random_constant("std", {1, 3, 1, 1}, 0.5f, 2.0f)});
  // constant - x is not x * scale + shift with a positive scale of one: it stays.
  b.output(b.add(OpType::kSub, "flipped", {b.random_constant("offset", {1, 3, 1, 1}), divided}));

  check_pass(run_affine_to_batchnorm, b.graph(), 2,
             "input %x: f32[N,3,2,2]\n"
             "%centred = BatchNormalization(%x, %centred.scale:[3], %centred.shift:[3], "
             "%centred.mean:[3], %centred.var:[3]) {epsilon=0} -> f32[N,3,2,2]\n"
             "%divided = BatchNormalization(%centred, %divided.scale:[3], %divided.shift:[3], "
             "%divided.mean:[3], %divided.var:[3]) {epsilon=0} -> f32[N,3,2,2]\n"
             "%flipped = Sub(%offset:[1,3,1,1], %divided) -> f32[N,3,2,2]\n"
             "output %flipped\n");
}

// ---------------------------------------------------------------------------------------
// fold_batchnorm

TEST(FoldBatchNormPass, FoldsIntoAConvWithoutBias) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 6, 6});
  const ValueId conv = b.conv("conv", x, 8, square_window(3, 1, 1), /*bias=*/false);
  b.output(b.relu("relu", b.batch_norm("bn", conv)));

  check_pass(run_fold_batchnorm, b.graph(), 1,
             "input %x: f32[N,3,6,6]\n"
             "%conv = Conv(%x, %conv.folded_weights:[8,3,3,3], %conv.folded_bias:[8]) "
             "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,8,6,6]\n"
             "%relu = Relu(%conv) -> f32[N,8,6,6]\n"
             "output %relu\n");
}

TEST(FoldBatchNormPass, FoldsIntoAConvWithBiasAndTakesItsActivation) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 5, 7, 7});
  const ValueId conv = b.conv("conv", x, 12, square_window(1));
  // The graph output is the BatchNorm's value: the conv's output takes over its name.
  b.output(b.batch_norm("bn", conv, Activation::relu()));

  check_pass(run_fold_batchnorm, b.graph(), 1,
             "input %x: f32[N,5,7,7]\n"
             "%bn = Conv(%x, %conv.folded_weights:[12,5,1,1], %conv.folded_bias:[12]) "
             "{kernel=1x1 strides=1x1 pads=0,0,0,0 post=relu} -> f32[N,12,7,7]\n"
             "output %bn\n");
}

TEST(FoldBatchNormPass, KeepsABatchNormWhoseConvOutputHasASecondReader) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 6, 6});
  const ValueId conv = b.conv("conv", x, 4, square_window(3, 1, 1));
  b.output(b.batch_norm("bn", conv));
  b.output(b.relu("relu", conv));

  check_pass(run_fold_batchnorm, b.graph(), 0,
             "input %x: f32[N,3,6,6]\n"
             "%conv = Conv(%x, %conv.weights:[4,3,3,3], %conv.bias:[4]) "
             "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,4,6,6]\n"
             "%bn = BatchNormalization(%conv, " +
                 batch_norm_operands("bn", 4) +
                 ") {epsilon=1e-05} -> f32[N,4,6,6]\n"
                 "%relu = Relu(%conv) -> f32[N,4,6,6]\n"
                 "output %bn\n"
                 "output %relu\n");
}

TEST(FoldBatchNormPass, KeepsABatchNormOfAConvThatIsAGraphOutput) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 4, 4});
  const ValueId conv = b.conv("conv", x, 4, square_window(1));
  b.output(conv);
  b.output(b.batch_norm("bn", conv));

  check_pass(run_fold_batchnorm, b.graph(), 0,
             "input %x: f32[N,3,4,4]\n"
             "%conv = Conv(%x, %conv.weights:[4,3,1,1], %conv.bias:[4]) "
             "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,4,4]\n"
             "%bn = BatchNormalization(%conv, " +
                 batch_norm_operands("bn", 4) +
                 ") {epsilon=1e-05} -> f32[N,4,4,4]\n"
                 "output %conv\n"
                 "output %bn\n");
}

// Folding the first BatchNorm hands its readers to the conv; the second BatchNorm must then
// see that the conv's output has two readers.
TEST(FoldBatchNormPass, KeepsASecondBatchNormOnceTheConvOutputHasTwoReaders) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 5, 5});
  const ValueId first = b.batch_norm("first", b.conv("conv", x, 4, square_window(1)));
  b.output(b.batch_norm("second", first));
  b.output(b.relu("relu", first));

  check_pass(run_fold_batchnorm, b.graph(), 1,
             "input %x: f32[N,3,5,5]\n"
             "%conv = Conv(%x, %conv.folded_weights:[4,3,1,1], %conv.folded_bias:[4]) "
             "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,5,5]\n"
             "%second = BatchNormalization(%conv, " +
                 batch_norm_operands("second", 4) +
                 ") {epsilon=1e-05} -> f32[N,4,5,5]\n"
                 "%relu = Relu(%conv) -> f32[N,4,5,5]\n"
                 "output %second\n"
                 "output %relu\n");
}

// The same with the first BatchNorm a graph output: once folded, the conv's output is one.
TEST(FoldBatchNormPass, KeepsASecondBatchNormOnceTheConvOutputIsAGraphOutput) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 5, 5});
  const ValueId first = b.batch_norm("first", b.conv("conv", x, 4, square_window(1)));
  b.output(first);
  b.output(b.batch_norm("second", first));

  check_pass(run_fold_batchnorm, b.graph(), 1,
             "input %x: f32[N,3,5,5]\n"
             "%first = Conv(%x, %conv.folded_weights:[4,3,1,1], %conv.folded_bias:[4]) "
             "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,5,5]\n"
             "%second = BatchNormalization(%first, " +
                 batch_norm_operands("second", 4) +
                 ") {epsilon=1e-05} -> f32[N,4,5,5]\n"
                 "output %first\n"
                 "output %second\n");
}

// Three BatchNorms in a row where the middle one's output has a second reader: the first two
// merge, the third stays.
TEST(FoldBatchNormPass, KeepsAThirdBatchNormOnceTheMergedOutputHasTwoReaders) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 4, 3, 3});
  const ValueId second = b.batch_norm("second", b.batch_norm("first", x));
  b.output(b.batch_norm("third", second));
  b.output(b.relu("relu", second));

  check_pass(run_fold_batchnorm, b.graph(), 1,
             "input %x: f32[N,4,3,3]\n"
             "%first = BatchNormalization(%x, %first.merged_scale:[4], %first.merged_shift:[4], "
             "%first.merged_mean:[4], %first.merged_var:[4]) {epsilon=0} -> f32[N,4,3,3]\n"
             "%third = BatchNormalization(%first, " +
                 batch_norm_operands("third", 4) +
                 ") {epsilon=1e-05} -> f32[N,4,3,3]\n"
                 "%relu = Relu(%first) -> f32[N,4,3,3]\n"
                 "output %third\n"
                 "output %relu\n");
}

TEST(FoldBatchNormPass, MergesTwoBatchNormsInARow) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 4, 3, 3});
  b.output(b.batch_norm("second", b.batch_norm("first", x), Activation::relu()));

  check_pass(run_fold_batchnorm, b.graph(), 1,
             "input %x: f32[N,4,3,3]\n"
             "%second = BatchNormalization(%x, %first.merged_scale:[4], %first.merged_shift:[4], "
             "%first.merged_mean:[4], %first.merged_var:[4]) {epsilon=0 post=relu} "
             "-> f32[N,4,3,3]\n"
             "output %second\n");
}

// ---------------------------------------------------------------------------------------
// transition_reorder

struct TransitionCase {
  std::string name;
  int64_t conv_kernel;
  PoolAttrs pool;
  int64_t size;  // input height and width
  int rewrites;
  std::string text;  // the graph after the pass, from the conv on
};

void PrintTo(const TransitionCase& c, std::ostream* out) {
  *out << c.name;
}

class TransitionReorderPass : public ::testing::TestWithParam<TransitionCase> {};

TEST_P(TransitionReorderPass, MovesTheAveragePoolBeforeAPointwiseConv) {
  const TransitionCase& c = GetParam();
  GraphBuilder b;
  const std::string size = std::to_string(c.size);
  const ValueId x = b.input("x", {kBatchDim, 8, c.size, c.size});
  const ValueId relu = b.relu("relu", b.batch_norm("bn", x));
  const ValueId conv = b.conv("conv", relu, 4, square_window(c.conv_kernel, 1, c.conv_kernel / 2));
  b.output(b.add(OpType::kAveragePool, "pool", {conv}, c.pool));

  const std::string spatial = "," + size + "," + size + "]";
  check_pass(run_transition_reorder, b.graph(), c.rewrites,
             "input %x: f32[N,8" + spatial + "\n" + "%bn = BatchNormalization(%x, " +
                 batch_norm_operands("bn", 8) + ") {epsilon=1e-05} -> f32[N,8" + spatial + "\n" +
                 "%relu = Relu(%bn) -> f32[N,8" + spatial + "\n" + c.text + "output %pool\n");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TransitionReorderPass,
    ::testing::Values(
        TransitionCase{"densenet_transition", 1, testing::pool_attrs(square_window(2, 2)), 6, 1,
                       "%relu.pooled = AveragePool(%relu) {kernel=2x2 strides=2x2 pads=0,0,0,0} "
                       "-> f32[N,8,3,3]\n"
                       "%pool = Conv(%relu.pooled, %conv.weights:[4,8,1,1], %conv.bias:[4]) "
                       "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,3,3]\n"},
        // Excluded padding keeps every window a plain average of real pixels.
        TransitionCase{"pads_excluded_from_count", 1, testing::pool_attrs(square_window(3, 2, 1)),
                       7, 1,
                       "%relu.pooled = AveragePool(%relu) {kernel=3x3 strides=2x2 pads=1,1,1,1} "
                       "-> f32[N,8,4,4]\n"
                       "%pool = Conv(%relu.pooled, %conv.weights:[4,8,1,1], %conv.bias:[4]) "
                       "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,4,4]\n"},
        // The last window of each row hangs over the edge and averages what it covers.
        TransitionCase{"ceil_mode", 1, testing::pool_attrs(square_window(2, 2), true), 7, 1,
                       "%relu.pooled = AveragePool(%relu) {kernel=2x2 strides=2x2 pads=0,0,0,0 "
                       "ceil_mode} -> f32[N,8,4,4]\n"
                       "%pool = Conv(%relu.pooled, %conv.weights:[4,8,1,1], %conv.bias:[4]) "
                       "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,4,4]\n"},
        // Counted padding averages in zeros, but conv(0) is the bias: the two do not commute.
        TransitionCase{"pads_counted", 1, testing::pool_attrs(square_window(3, 2, 1), false, true),
                       7, 0,
                       "%conv = Conv(%relu, %conv.weights:[4,8,1,1], %conv.bias:[4]) "
                       "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,7,7]\n"
                       "%pool = AveragePool(%conv) {kernel=3x3 strides=2x2 pads=1,1,1,1 "
                       "count_include_pad} -> f32[N,4,4,4]\n"},
        TransitionCase{"conv3x3", 3, testing::pool_attrs(square_window(2, 2)), 6, 0,
                       "%conv = Conv(%relu, %conv.weights:[4,8,3,3], %conv.bias:[4]) "
                       "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,4,6,6]\n"
                       "%pool = AveragePool(%conv) {kernel=2x2 strides=2x2 pads=0,0,0,0} "
                       "-> f32[N,4,3,3]\n"}),
    [](const ::testing::TestParamInfo<TransitionCase>& info) { return info.param.name; });

TEST(TransitionReorderPassRefusal, KeepsAConvWhoseOutputHasASecondReader) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 8, 4, 4});
  const ValueId conv = b.conv("conv", x, 4, square_window(1));
  b.output(b.add(OpType::kAveragePool, "pool", {conv}, testing::pool_attrs(square_window(2, 2))));
  b.output(b.relu("relu", conv));

  check_pass(run_transition_reorder, b.graph(), 0,
             "input %x: f32[N,8,4,4]\n"
             "%conv = Conv(%x, %conv.weights:[4,8,1,1], %conv.bias:[4]) "
             "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,4,4,4]\n"
             "%pool = AveragePool(%conv) {kernel=2x2 strides=2x2 pads=0,0,0,0} -> f32[N,4,2,2]\n"
             "%relu = Relu(%conv) -> f32[N,4,4,4]\n"
             "output %pool\n"
             "output %relu\n");
}

// ---------------------------------------------------------------------------------------
// fuse_activation

struct FuseCase {
  std::string name;
  OpType producer;     // kConv, kGemm or kBatchNorm
  OpType activation;   // kRelu or kClip
  bool second_reader;  // the producer's output also feeds a Softmax
  int rewrites;
  std::string text;  // the graph after the pass, without the input line
};

void PrintTo(const FuseCase& c, std::ostream* out) {
  *out << c.name;
}

class FuseActivationPass : public ::testing::TestWithParam<FuseCase> {};

TEST_P(FuseActivationPass, FusesWhereTheProducerTakesThePostOp) {
  const FuseCase& c = GetParam();
  GraphBuilder b;
  const bool image = c.producer != OpType::kGemm;
  const ValueId x = b.input("x", image ? Dims{kBatchDim, 4, 5, 5} : Dims{kBatchDim, 10});
  ValueId produced = kNoValue;
  switch (c.producer) {
    case OpType::kConv:
      produced = b.conv("producer", x, 6, square_window(3, 1, 1));
      break;
    case OpType::kGemm:
      produced = b.gemm("producer", x, 7, testing::gemm_attrs());
      break;
    default:
      produced = b.batch_norm("producer", x);
      break;
  }
  b.output(c.activation == OpType::kRelu ? b.relu("act", produced)
                                         : b.clip("act", produced, 0.0f, 0.25f));
  if (c.second_reader) {
    b.output(b.add(OpType::kSoftmax, "other", {produced}, AxisAttrs{1}));
  }

  check_pass(run_fuse_activation, b.graph(), c.rewrites,
             (image ? "input %x: f32[N,4,5,5]\n" : "input %x: f32[N,10]\n") + c.text);
}

const char kConvOperands[] =
    "Conv(%x, %producer.weights:[6,4,3,3], %producer.bias:[6]) "
    "{kernel=3x3 strides=1x1 pads=1,1,1,1";
const char kGemmOperands[] = "Gemm(%x, %producer.b:[10,7], %producer.c:[7]) {alpha=1 beta=1";
const char kBatchNormOperands[] =
    "BatchNormalization(%x, %producer.scale:[4], %producer.bias:[4], %producer.mean:[4], "
    "%producer.var:[4]) {epsilon=1e-05";

INSTANTIATE_TEST_SUITE_P(
    Cases, FuseActivationPass,
    ::testing::Values(
        FuseCase{"conv_relu", OpType::kConv, OpType::kRelu, false, 1,
                 std::string("%act = ") + kConvOperands + " post=relu} -> f32[N,6,5,5]\n" +
                     "output %act\n"},
        FuseCase{"conv_clip", OpType::kConv, OpType::kClip, false, 1,
                 std::string("%act = ") + kConvOperands + " post=clip(0,0.25)} -> f32[N,6,5,5]\n" +
                     "output %act\n"},
        FuseCase{
            "gemm_relu", OpType::kGemm, OpType::kRelu, false, 1,
            std::string("%act = ") + kGemmOperands + " post=relu} -> f32[N,7]\n" + "output %act\n"},
        FuseCase{"gemm_clip", OpType::kGemm, OpType::kClip, false, 1,
                 std::string("%act = ") + kGemmOperands + " post=clip(0,0.25)} -> f32[N,7]\n" +
                     "output %act\n"},
        FuseCase{"batchnorm_relu", OpType::kBatchNorm, OpType::kRelu, false, 1,
                 std::string("%act = ") + kBatchNormOperands + " post=relu} -> f32[N,4,5,5]\n" +
                     "output %act\n"},
        // oneDNN's batch normalization has a ReLU flag but takes no post-ops.
        FuseCase{"batchnorm_clip_stays", OpType::kBatchNorm, OpType::kClip, false, 0,
                 std::string("%producer = ") + kBatchNormOperands + "} -> f32[N,4,5,5]\n" +
                     "%act = Clip(%producer) {min=0 max=0.25} -> f32[N,4,5,5]\n"
                     "output %act\n"},
        FuseCase{"conv_two_readers", OpType::kConv, OpType::kRelu, true, 0,
                 std::string("%producer = ") + kConvOperands + "} -> f32[N,6,5,5]\n" +
                     "%act = Relu(%producer) -> f32[N,6,5,5]\n"
                     "%other = Softmax(%producer) {axis=1} -> f32[N,6,5,5]\n"
                     "output %act\n"
                     "output %other\n"},
        FuseCase{"gemm_two_readers", OpType::kGemm, OpType::kClip, true, 0,
                 std::string("%producer = ") + kGemmOperands + "} -> f32[N,7]\n" +
                     "%act = Clip(%producer) {min=0 max=0.25} -> f32[N,7]\n"
                     "%other = Softmax(%producer) {axis=1} -> f32[N,7]\n"
                     "output %act\n"
                     "output %other\n"},
        FuseCase{"batchnorm_two_readers", OpType::kBatchNorm, OpType::kRelu, true, 0,
                 std::string("%producer = ") + kBatchNormOperands + "} -> f32[N,4,5,5]\n" +
                     "%act = Relu(%producer) -> f32[N,4,5,5]\n"
                     "%other = Softmax(%producer) {axis=1} -> f32[N,4,5,5]\n"
                     "output %act\n"
                     "output %other\n"}),
    [](const ::testing::TestParamInfo<FuseCase>& info) { return info.param.name; });

TEST(FuseActivationPassRefusal, KeepsTheSecondActivationAfterAFusedOne) {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 2, 3, 3});
  const ValueId conv = b.conv("conv", x, 3, square_window(1));
  b.output(b.clip("clip", b.relu("relu", conv), -1.0f, 0.5f));

  check_pass(run_fuse_activation, b.graph(), 1,
             "input %x: f32[N,2,3,3]\n"
             "%conv = Conv(%x, %conv.weights:[3,2,1,1], %conv.bias:[3]) "
             "{kernel=1x1 strides=1x1 pads=0,0,0,0 post=relu} -> f32[N,3,3,3]\n"
             "%clip = Clip(%conv) {min=-1 max=0.5} -> f32[N,3,3,3]\n"
             "output %clip\n");
}

// ---------------------------------------------------------------------------------------
// dense_blocks

// BatchNorm, ReLU and a 3x3 convolution producing `growth` new channels; the conv's output
// is named `name`.
ValueId dense_layer(GraphBuilder& b, const std::string& name, ValueId src, int64_t growth) {
  const ValueId relu = b.relu(name + ".relu", b.batch_norm(name + ".bn", src));
  return b.conv(name, relu, growth, square_window(3, 1, 1));
}

// The text of a dense_layer reading `src` with `channels` channels of 6x6.
std::string dense_layer_text(const std::string& name, const std::string& src, int64_t channels,
                             const std::string& placement) {
  const std::string c = std::to_string(channels);
  return "%" + name + ".bn = BatchNormalization(%" + src + ", " +
         batch_norm_operands(name + ".bn", channels) + ") {epsilon=1e-05} -> f32[N," + c +
         ",6,6]\n" + "%" + name + ".relu = Relu(%" + name + ".bn) -> f32[N," + c + ",6,6]\n" + "%" +
         name + " = Conv(%" + name + ".relu, %" + name + ".weights:[4," + c + ",3,3], %" + name +
         ".bias:[4]) {kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,4,6,6]" + placement + "\n";
}

TEST(DenseBlocksPass, TorchvisionListConcatsShareOneBuffer) {
  // Each layer concatenates the list of all earlier outputs; the first list has one entry.
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 6, 6});
  const ValueId stem = b.conv("stem", x, 8, square_window(3, 1, 1));
  std::vector<ValueId> features = {stem};
  std::vector<ValueId> concats;
  for (int layer = 1; layer <= 3; ++layer) {
    const std::string name = "layer" + std::to_string(layer);
    concats.push_back(b.concat(name + ".cat", features));
    features.push_back(dense_layer(b, name, concats.back(), 4));
  }
  concats.push_back(b.concat("out", features));
  b.output(concats.back());

  const Graph rewritten = check_pass(
      run_dense_blocks, b.graph(), 4,
      "input %x: f32[N,3,6,6]\n"
      "%stem = Conv(%x, %stem.weights:[8,3,3,3], %stem.bias:[8]) "
      "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,8,6,6] in block0@0\n"
      "%layer1.cat = Concat(%stem) {axis=1} -> f32[N,8,6,6] in block0@0\n" +
          dense_layer_text("layer1", "layer1.cat", 8, " in block0@8") +
          "%layer2.cat = Concat(%stem, %layer1) {axis=1} -> f32[N,12,6,6] in block0@0\n" +
          dense_layer_text("layer2", "layer2.cat", 12, " in block0@12") +
          "%layer3.cat = Concat(%stem, %layer1, %layer2) {axis=1} -> f32[N,16,6,6] in block0@0\n" +
          dense_layer_text("layer3", "layer3.cat", 16, " in block0@16") +
          "%out = Concat(%stem, %layer1, %layer2, %layer3) {axis=1} -> f32[N,20,6,6] in block0@0\n"
          "block block0: 20 channels, 4 segments, 4 concat views\n"
          "output %out\n");

  ASSERT_EQ(rewritten.blocks.size(), 1u);
  EXPECT_EQ(rewritten.blocks[0].segments, features);
  EXPECT_EQ(rewritten.blocks[0].views, concats);
  EXPECT_EQ(rewritten.blocks[0].channels, 20);
  EXPECT_TRUE(rewritten.refused_blocks.empty());
}

TEST(DenseBlocksPass, ChainedConcatsShareOneBuffer) {
  // x = concat(x, layer(x)), as Keras and Caffe2 exports write a dense block.
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 6, 6});
  const ValueId stem = b.conv("stem", x, 8, square_window(3, 1, 1));
  std::vector<ValueId> segments = {stem};
  std::vector<ValueId> concats;
  ValueId features = stem;
  for (int layer = 1; layer <= 3; ++layer) {
    const std::string name = "layer" + std::to_string(layer);
    segments.push_back(dense_layer(b, name, features, 4));
    features = b.concat(name + ".cat", {features, segments.back()});
    concats.push_back(features);
  }
  b.output(features);

  const Graph rewritten = check_pass(
      run_dense_blocks, b.graph(), 3,
      "input %x: f32[N,3,6,6]\n"
      "%stem = Conv(%x, %stem.weights:[8,3,3,3], %stem.bias:[8]) "
      "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,8,6,6] in block0@0\n" +
          dense_layer_text("layer1", "stem", 8, " in block0@8") +
          "%layer1.cat = Concat(%stem, %layer1) {axis=1} -> f32[N,12,6,6] in block0@0\n" +
          dense_layer_text("layer2", "layer1.cat", 12, " in block0@12") +
          "%layer2.cat = Concat(%layer1.cat, %layer2) {axis=1} -> f32[N,16,6,6] in block0@0\n" +
          dense_layer_text("layer3", "layer2.cat", 16, " in block0@16") +
          "%layer3.cat = Concat(%layer2.cat, %layer3) {axis=1} -> f32[N,20,6,6] in block0@0\n"
          "block block0: 20 channels, 4 segments, 3 concat views\n"
          "output %layer3.cat\n");

  ASSERT_EQ(rewritten.blocks.size(), 1u);
  EXPECT_EQ(rewritten.blocks[0].segments, segments);
  EXPECT_EQ(rewritten.blocks[0].views, concats);
  EXPECT_EQ(rewritten.blocks[0].channels, 20);
  EXPECT_TRUE(rewritten.refused_blocks.empty());
}

// A graph whose concats cannot all share a buffer. build() returns the values that must stay
// in their own memory.
struct RefusalCase {
  std::string name;
  std::function<std::vector<ValueId>(GraphBuilder&)> build;
  std::string reason;  // a part of the one refusal the pass must record
  int rewrites;
  std::string text;
};

void PrintTo(const RefusalCase& c, std::ostream* out) {
  *out << c.name;
}

class DenseBlocksRefusal : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(DenseBlocksRefusal, LeavesTheConcatCopying) {
  const RefusalCase& c = GetParam();
  GraphBuilder b;
  const std::vector<ValueId> unplaced = c.build(b);

  const Graph rewritten = check_pass(run_dense_blocks, b.graph(), c.rewrites, c.text, 1);
  ASSERT_EQ(rewritten.refused_blocks.size(), 1u);
  EXPECT_NE(rewritten.refused_blocks[0].find(c.reason), std::string::npos)
      << rewritten.refused_blocks[0];
  for (ValueId v : unplaced) {
    EXPECT_EQ(rewritten.value(v).slot.block, -1) << rewritten.value(v).name;
  }
}

// The images of the refusal cases have a fixed batch of 1, so a constant can join them.
const char kRefusalStem[] =
    "input %x: f32[1,3,6,6]\n"
    "%x0 = Conv(%x, %x0.weights:[4,3,1,1], %x0.bias:[4]) "
    "{kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[1,4,6,6]";

std::string new_features_text(const std::string& name, const std::string& src, int64_t channels,
                              const std::string& placement = "") {
  const std::string c = std::to_string(channels);
  return "%" + name + " = Conv(%" + src + ", %" + name + ".weights:[2," + c + ",1,1], %" + name +
         ".bias:[2]) {kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[1,2,6,6]" + placement + "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DenseBlocksRefusal,
    ::testing::Values(
        RefusalCase{
            "value_joined_twice",
            [](GraphBuilder& b) {
              const ValueId x0 = b.conv("x0", b.input("x", {1, 3, 6, 6}), 4, square_window(1));
              const ValueId a = b.conv("a", x0, 2, square_window(1));
              const ValueId cat = b.concat("cat", {x0, a, a});
              b.output(cat);
              return std::vector<ValueId>{x0, a, cat};
            },
            "input \"a\" is used twice", 0,
            std::string(kRefusalStem) + "\n" + new_features_text("a", "x0", 4) +
                "%cat = Concat(%x0, %a, %a) {axis=1} -> f32[1,8,6,6]\n"
                "output %cat\n"},
        RefusalCase{"graph_input_first",
                    [](GraphBuilder& b) {
                      const ValueId x = b.input("x", {1, 3, 6, 6});
                      const ValueId a = b.conv("a", x, 2, square_window(1));
                      const ValueId cat = b.concat("cat", {x, a});
                      b.output(cat);
                      return std::vector<ValueId>{a, cat};
                    },
                    "input \"x\" is a graph input", 0,
                    "input %x: f32[1,3,6,6]\n" + new_features_text("a", "x", 3) +
                        "%cat = Concat(%x, %a) {axis=1} -> f32[1,5,6,6]\n"
                        "output %cat\n"},
        RefusalCase{
            "constant_input",
            [](GraphBuilder& b) {
              const ValueId x0 = b.conv("x0", b.input("x", {1, 3, 6, 6}), 4, square_window(1));
              const ValueId cat = b.concat("cat", {x0, b.random_constant("k", {1, 2, 6, 6})});
              b.output(cat);
              return std::vector<ValueId>{x0, cat};
            },
            "input \"k\" is a constant", 0,
            std::string(kRefusalStem) + "\n" +
                "%cat = Concat(%x0, %k:[1,2,6,6]) {axis=1} -> f32[1,6,6,6]\n"
                "output %cat\n"},
        RefusalCase{
            "branches_not_prefixes",
            [](GraphBuilder& b) {
              const ValueId x0 = b.conv("x0", b.input("x", {1, 3, 6, 6}), 4, square_window(1));
              const ValueId a = b.conv("a", x0, 2, square_window(1));
              const ValueId c = b.conv("c", x0, 2, square_window(1));
              const ValueId with_a = b.concat("with_a", {x0, a});
              const ValueId with_c = b.concat("with_c", {x0, c});
              b.output(with_a);
              b.output(with_c);
              return std::vector<ValueId>{x0, a, c, with_a, with_c};
            },
            "join values that are not prefixes of one another", 0,
            std::string(kRefusalStem) + "\n" + new_features_text("a", "x0", 4) +
                new_features_text("c", "x0", 4) +
                "%with_a = Concat(%x0, %a) {axis=1} -> f32[1,6,6,6]\n"
                "%with_c = Concat(%x0, %c) {axis=1} -> f32[1,6,6,6]\n"
                "output %with_a\n"
                "output %with_c\n"},
        // The first concat still gets its block; the one behind the Reshape cannot join it.
        RefusalCase{
            "reshape_between_concats",
            [](GraphBuilder& b) {
              const ValueId x0 = b.conv("x0", b.input("x", {1, 3, 6, 6}), 4, square_window(1));
              const ValueId a = b.conv("a", x0, 2, square_window(1));
              const ValueId first = b.concat("first", {x0, a});
              const ValueId reshaped =
                  b.add(OpType::kReshape, "reshaped", {first}, ReshapeAttrs{{0, 6, 6, 6}});
              const ValueId c = b.conv("c", reshaped, 2, square_window(1));
              const ValueId second = b.concat("second", {reshaped, c});
              b.output(second);
              return std::vector<ValueId>{reshaped, c, second};
            },
            "input \"reshaped\" comes from node \"reshaped\" (Reshape), which cannot write "
            "into a buffer slice",
            1,
            std::string(kRefusalStem) + " in block0@0\n" +
                new_features_text("a", "x0", 4, " in block0@4") +
                "%first = Concat(%x0, %a) {axis=1} -> f32[1,6,6,6] in block0@0\n"
                "%reshaped = Reshape(%first) {shape=0,6,6,6} -> f32[1,6,6,6]\n" +
                new_features_text("c", "reshaped", 6) +
                "%second = Concat(%reshaped, %c) {axis=1} -> f32[1,8,6,6]\n"
                "block block0: 6 channels, 2 segments, 1 concat views\n"
                "output %second\n"}),
    [](const ::testing::TestParamInfo<RefusalCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// The pipeline

// A graph that gives every pass something to do: an Identity, a Caffe2-style Mul/Add
// BatchNorm after the stem, a chained dense block, a transition and a ReduceMean head.
Graph pipeline_graph() {
  GraphBuilder b;
  const ValueId x = b.input("x", {kBatchDim, 3, 8, 8});
  const ValueId stem =
      b.conv("stem", b.add(OpType::kIdentity, "identity", {x}), 8, square_window(3, 1, 1));
  const ValueId scaled =
      b.add(OpType::kMul, "scaled", {stem, b.random_constant("gamma", {1, 8, 1, 1})});
  const ValueId shifted =
      b.add(OpType::kAdd, "shifted", {scaled, b.random_constant("beta", {1, 8, 1, 1})});
  ValueId features = b.relu("stem.relu", shifted);
  for (int layer = 1; layer <= 2; ++layer) {
    const std::string name = "layer" + std::to_string(layer);
    features = b.concat(name + ".cat", {features, dense_layer(b, name, features, 4)});
  }
  const ValueId relu = b.relu("transition.relu", b.batch_norm("transition.bn", features));
  const ValueId conv = b.conv("transition.conv", relu, 8, square_window(1));
  const ValueId pool = b.add(OpType::kAveragePool, "transition.pool", {conv},
                             testing::pool_attrs(square_window(2, 2)));
  const ValueId mean = b.add(OpType::kReduceMean, "mean", {pool}, AxesAttrs{{2, 3}, false});
  b.output(b.gemm("classifier", mean, 5, testing::gemm_attrs(1.0f, 1.0f, true)));
  return b.graph();
}

TEST(Optimize, RunsEveryPassInOrder) {
  const Graph graph = pipeline_graph();
  Graph optimized = graph;
  Expected<std::vector<PassReport>> reports = optimize(optimized);
  ASSERT_TRUE(reports.ok()) << reports.status().to_string();

  const std::vector<std::string> names = {
      "cleanup",        "canonicalize",       "affine_to_batchnorm",
      "fold_batchnorm", "transition_reorder", "fuse_activation",
      "dense_blocks"};
  // The Identity; the ReduceMean; Mul and Add; both affine BatchNorms into the stem; the
  // transition; the ReLUs of the stem, both layers and the transition; both concat views.
  const std::vector<int> rewrites = {1, 1, 2, 2, 1, 4, 2};
  ASSERT_EQ(reports->size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ((*reports)[i].name, names[i]);
    EXPECT_TRUE((*reports)[i].ran) << names[i];
    EXPECT_EQ((*reports)[i].rewrites, rewrites[i]) << names[i];
  }

  EXPECT_EQ(
      optimized.to_text(),
      "input %x: f32[N,3,8,8]\n"
      "%stem = Conv(%x, %stem.folded_weights:[8,3,3,3], %stem.folded_bias:[8]) "
      "{kernel=3x3 strides=1x1 pads=1,1,1,1 post=relu} -> f32[N,8,8,8] in block0@0\n"
      "%layer1.bn = BatchNormalization(%stem, " +
          batch_norm_operands("layer1.bn", 8) +
          ") {epsilon=1e-05 post=relu} -> f32[N,8,8,8]\n"
          "%layer1 = Conv(%layer1.bn, %layer1.weights:[4,8,3,3], %layer1.bias:[4]) "
          "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,4,8,8] in block0@8\n"
          "%layer1.cat = Concat(%stem, %layer1) {axis=1} -> f32[N,12,8,8] in block0@0\n"
          "%layer2.bn = BatchNormalization(%layer1.cat, " +
          batch_norm_operands("layer2.bn", 12) +
          ") {epsilon=1e-05 post=relu} -> f32[N,12,8,8]\n"
          "%layer2 = Conv(%layer2.bn, %layer2.weights:[4,12,3,3], %layer2.bias:[4]) "
          "{kernel=3x3 strides=1x1 pads=1,1,1,1} -> f32[N,4,8,8] in block0@12\n"
          "%layer2.cat = Concat(%layer1.cat, %layer2) {axis=1} -> f32[N,16,8,8] in block0@0\n"
          "%transition.bn = BatchNormalization(%layer2.cat, " +
          batch_norm_operands("transition.bn", 16) +
          ") {epsilon=1e-05 post=relu} -> f32[N,16,8,8]\n"
          "%transition.relu.pooled = AveragePool(%transition.bn) "
          "{kernel=2x2 strides=2x2 pads=0,0,0,0} -> f32[N,16,4,4]\n"
          "%transition.pool = Conv(%transition.relu.pooled, %transition.conv.weights:[8,16,1,1], "
          "%transition.conv.bias:[8]) {kernel=1x1 strides=1x1 pads=0,0,0,0} -> f32[N,8,4,4]\n"
          "%mean.pooled = GlobalAveragePool(%transition.pool) -> f32[N,8,1,1]\n"
          "%mean = Flatten(%mean.pooled) {axis=1} -> f32[N,8]\n"
          "%classifier = Gemm(%mean, %classifier.b:[5,8], %classifier.c:[5]) "
          "{alpha=1 beta=1 transB} -> f32[N,5]\n"
          "block block0: 16 channels, 3 segments, 2 concat views\n"
          "output %classifier\n");
  expect_same_outputs(graph, optimized, 3);
}

TEST(Optimize, SkipsDisabledPasses) {
  const Graph graph = pipeline_graph();
  Graph optimized = graph;
  OptimizeOptions options;
  options.disabled = {"fold_batchnorm", "transition_reorder"};
  Expected<std::vector<PassReport>> reports = optimize(optimized, options);
  ASSERT_TRUE(reports.ok()) << reports.status().to_string();

  ASSERT_EQ(reports->size(), 7u);
  for (const PassReport& report : *reports) {
    const bool disabled = options.disabled.count(report.name) > 0;
    EXPECT_EQ(report.ran, !disabled) << report.name;
    if (disabled) {
      EXPECT_EQ(report.rewrites, 0) << report.name;
    }
  }
  // The affine BatchNorms stay unfolded (the ReLU fuses into the second), the transition
  // keeps its conv before its pool.
  const std::map<std::string, int> census = optimized.op_census();
  EXPECT_EQ(census.at("BatchNormalization"), 5);
  EXPECT_EQ(census.count("Relu"), 0u);
  const auto position = [&](const std::string& name) {
    for (size_t n = 0; n < optimized.nodes.size(); ++n) {
      if (optimized.nodes[n].name == name) return static_cast<int>(n);
    }
    return -1;
  };
  ASSERT_GE(position("transition.conv"), 0);
  EXPECT_LT(position("transition.conv"), position("transition.pool"));
  expect_same_outputs(graph, optimized, 3);
}

TEST(Optimize, RefusesUnknownPassNames) {
  Graph graph = pipeline_graph();
  OptimizeOptions options;
  options.disabled = {"fold_batchnrom"};
  Expected<std::vector<PassReport>> reports = optimize(graph, options);
  ASSERT_FALSE(reports.ok());
  EXPECT_EQ(reports.status().kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(reports.status().message(), "no optimizer pass is named \"fold_batchnrom\"");
}

}  // namespace
}  // namespace densert
