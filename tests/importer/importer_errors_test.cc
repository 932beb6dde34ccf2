// The importer on a tiny valid model and on one malformed variant of it per class of defect:
// each must come back as a Status of the right kind with a message naming what is wrong,
// never as a crash, an abort or an exception.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "importer/onnx_importer.h"
#include "runtime/reference_executor.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_support.h"

namespace densert {
namespace {

// ---- Building ONNX protos ----

void set_int(onnx::NodeProto* node, const std::string& name, int64_t value) {
  auto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

void set_ints(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
  auto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values)
    attr->add_ints(v);
}

onnx::NodeProto* add_node(onnx::GraphProto* graph, const std::string& op, const std::string& name,
                          const std::vector<std::string>& inputs,
                          const std::vector<std::string>& outputs) {
  auto* node = graph->add_node();
  node->set_op_type(op);
  node->set_name(name);
  for (const auto& in : inputs)
    node->add_input(in);
  for (const auto& out : outputs)
    node->add_output(out);
  return node;
}

void fill_float_tensor(onnx::TensorProto* tensor, const std::string& name, const Dims& dims,
                       const std::vector<float>& values) {
  tensor->set_name(name);
  tensor->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims)
    tensor->add_dims(d);
  for (float v : values)
    tensor->add_float_data(v);
}

void fill_int64_tensor(onnx::TensorProto* tensor, const std::string& name, const Dims& dims,
                       const std::vector<int64_t>& values) {
  tensor->set_name(name);
  tensor->set_data_type(onnx::TensorProto::INT64);
  for (int64_t d : dims)
    tensor->add_dims(d);
  for (int64_t v : values)
    tensor->add_int64_data(v);
}

// A graph input or output of the given element type; kBatchDim becomes dim_param "N".
void set_type(onnx::ValueInfoProto* info, const std::string& name, const Dims& dims,
              int elem_type = onnx::TensorProto::FLOAT) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(elem_type);
  auto* shape = tensor_type->mutable_shape();
  for (int64_t d : dims) {
    if (d == kBatchDim) {
      shape->add_dim()->set_dim_param("N");
    } else {
      shape->add_dim()->set_dim_value(d);
    }
  }
}

onnx::NodeProto* find_node(onnx::ModelProto& model, const std::string& name) {
  for (auto& node : *model.mutable_graph()->mutable_node()) {
    if (node.name() == name) return &node;
  }
  return nullptr;
}

// Puts the graph's nodes in the order given by their names (all must be named).
void reorder(onnx::ModelProto& model, const std::vector<std::string>& names) {
  std::map<std::string, onnx::NodeProto> by_name;
  for (const auto& node : model.graph().node())
    by_name[node.name()] = node;
  auto* nodes = model.mutable_graph()->mutable_node();
  nodes->Clear();
  for (const auto& name : names)
    *nodes->Add() = by_name.at(name);
}

onnx::TensorProto* find_initializer(onnx::ModelProto& model, const std::string& name) {
  for (auto& tensor : *model.mutable_graph()->mutable_initializer()) {
    if (tensor.name() == name) return &tensor;
  }
  return nullptr;
}

// How the tiny model turns [N,2,1,1] into [N,2]: a Flatten, or the Shape -> Gather ->
// Unsqueeze -> Concat -> Reshape chain PyTorch exports for x.view(x.size(0), -1).
enum class Flattening { kFlatten, kViewChain };

// The conv weights: output channel 0 sums all 27 taps, output channel 1 subtracts the 9
// taps of input channel 0.
std::vector<float> conv_weights() {
  std::vector<float> w(54, 0.0f);
  for (int i = 0; i < 27; ++i)
    w[static_cast<size_t>(i)] = 1.0f;
  for (int i = 0; i < 9; ++i)
    w[static_cast<size_t>(27 + i)] = -1.0f;
  return w;
}

// x [N,3,8,8] -> Conv 3x3 (2 channels, bias) -> Relu -> GlobalAveragePool -> Flatten ->
// Gemm (transB, 3 classes) -> y [N,3], written in the form the given opset expects.
onnx::ModelProto tiny_model(int64_t opset = 13, Flattening flattening = Flattening::kFlatten) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("densert-test");
  auto* import = model.add_opset_import();
  import->set_domain("");
  import->set_version(opset);
  auto* graph = model.mutable_graph();
  graph->set_name("tiny");
  set_type(graph->add_input(), "x", {kBatchDim, 3, 8, 8});
  set_type(graph->add_output(), "y", {kBatchDim, 3});

  fill_float_tensor(graph->add_initializer(), "w", {2, 3, 3, 3}, conv_weights());
  fill_float_tensor(graph->add_initializer(), "b", {2}, {0.0f, 1.0f});
  fill_float_tensor(graph->add_initializer(), "fc_w", {3, 2}, {1, 0, 0, 1, 1, -1});
  fill_float_tensor(graph->add_initializer(), "fc_b", {3}, {1, 2, 3});

  set_ints(add_node(graph, "Conv", "conv", {"x", "w", "b"}, {"conv_out"}), "kernel_shape", {3, 3});
  add_node(graph, "Relu", "relu", {"conv_out"}, {"relu_out"});
  add_node(graph, "GlobalAveragePool", "gap", {"relu_out"}, {"pooled"});
  if (flattening == Flattening::kFlatten) {
    set_int(add_node(graph, "Flatten", "flatten", {"pooled"}, {"flat"}), "axis", 1);
  } else {
    add_node(graph, "Shape", "shape", {"pooled"}, {"pooled_shape"});
    auto* zero = add_node(graph, "Constant", "zero", {}, {"zero"});
    auto* zero_attr = zero->add_attribute();
    zero_attr->set_name("value");
    zero_attr->set_type(onnx::AttributeProto::TENSOR);
    fill_int64_tensor(zero_attr->mutable_t(), "", {}, {0});
    set_int(add_node(graph, "Gather", "gather", {"pooled_shape", "zero"}, {"batch"}), "axis", 0);
    if (opset >= 13) {
      fill_int64_tensor(graph->add_initializer(), "axes0", {1}, {0});
      add_node(graph, "Unsqueeze", "unsqueeze", {"batch", "axes0"}, {"batch_1d"});
    } else {
      set_ints(add_node(graph, "Unsqueeze", "unsqueeze", {"batch"}, {"batch_1d"}), "axes", {0});
    }
    fill_int64_tensor(graph->add_initializer(), "minus_one", {1}, {-1});
    set_int(add_node(graph, "Concat", "concat", {"batch_1d", "minus_one"}, {"target"}), "axis", 0);
    add_node(graph, "Reshape", "reshape", {"pooled", "target"}, {"flat"});
  }
  set_int(add_node(graph, "Gemm", "fc", {"flat", "fc_w", "fc_b"}, {"y"}), "transB", 1);
  return model;
}

std::string serialize(const onnx::ModelProto& model) {
  std::string bytes;
  EXPECT_TRUE(model.SerializeToString(&bytes));
  return bytes;
}

Expected<Graph> import_model(const onnx::ModelProto& model, const std::string& dir = "") {
  const std::string bytes = serialize(model);
  return import_onnx_buffer(bytes.data(), bytes.size(), dir);
}

// Image 0 has channel c filled with c + 1, image 1 with -(c + 1). By hand: image 0 gives
// conv channels {54, -8}, relu {54, 0}, fc {55, 2, 57}; image 1 gives conv {-54, 10}, relu
// {0, 10}, fc {1, 12, -7}.
Tensor two_channel_constant_images() {
  Tensor x({2, 3, 8, 8});
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t c = 0; c < 3; ++c) {
      const float value = (n == 0 ? 1.0f : -1.0f) * static_cast<float>(c + 1);
      for (int64_t i = 0; i < 64; ++i)
        x.data[static_cast<size_t>((n * 3 + c) * 64 + i)] = value;
    }
  }
  return x;
}
const std::vector<float> kExpectedLogits = {55, 2, 57, 1, 12, -7};

Tensor run_single_output(const Graph& graph, const Tensor& x) {
  Expected<std::vector<Tensor>> out = run_reference(graph, {x});
  EXPECT_TRUE(out.ok()) << out.status().to_string();
  return out.ok() ? out->at(0) : Tensor();
}

void expect_error(const Expected<Graph>& result, ErrorKind kind, const std::string& fragment) {
  ASSERT_FALSE(result.ok()) << "expected an error containing: " << fragment;
  EXPECT_EQ(error_kind_name(result.status().kind()), std::string(error_kind_name(kind)))
      << result.status().message();
  EXPECT_NE(result.status().message().find(fragment), std::string::npos)
      << "message: " << result.status().message() << "\nexpected to contain: " << fragment;
}

// ---- The valid model ----

TEST(ImporterValid, TinyModelImportsAndRuns) {
  Expected<Graph> graph = import_model(tiny_model());
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  EXPECT_EQ(graph->opset, 13);
  ASSERT_EQ(graph->inputs.size(), 1u);
  EXPECT_EQ(dims_to_string(graph->value(graph->inputs[0]).dims), "[N,3,8,8]");
  const std::map<std::string, int> census = {
      {"Conv", 1}, {"Relu", 1}, {"GlobalAveragePool", 1}, {"Flatten", 1}, {"Gemm", 1}};
  EXPECT_EQ(graph->op_census(), census);
  EXPECT_EQ(graph->parameter_count(), 54 + 2 + 6 + 3);

  const Tensor y = run_single_output(*graph, two_channel_constant_images());
  EXPECT_EQ(dims_to_string(y.dims), "[2,3]");
  EXPECT_EQ(y.data, kExpectedLogits);
}

// Older exporters list every initializer among the graph inputs too; they stay constants.
TEST(ImporterValid, InitializersListedAsInputsStayConstants) {
  onnx::ModelProto model = tiny_model();
  auto* graph = model.mutable_graph();
  set_type(graph->add_input(), "w", {2, 3, 3, 3});
  set_type(graph->add_input(), "b", {2});
  set_type(graph->add_input(), "fc_w", {3, 2});
  set_type(graph->add_input(), "fc_b", {3});

  Expected<Graph> imported = import_model(model);
  ASSERT_TRUE(imported.ok()) << imported.status().to_string();
  ASSERT_EQ(imported->inputs.size(), 1u);
  EXPECT_EQ(imported->value(imported->inputs[0]).name, "x");
  const Node& conv = imported->nodes.at(0);
  ASSERT_EQ(conv.op, OpType::kConv);
  EXPECT_TRUE(imported->value(conv.inputs.at(1)).is_constant());
  EXPECT_EQ(run_single_output(*imported, two_channel_constant_images()).data, kExpectedLogits);
}

// The same model written for older opsets converts to the canonical opset and computes the
// same function, with a Flatten or with the view chain.
TEST(ImporterValid, OlderOpsetsGiveTheSameOutput) {
  const Tensor x = testing::random_tensor({2, 3, 8, 8}, 5);
  for (Flattening flattening : {Flattening::kFlatten, Flattening::kViewChain}) {
    Expected<Graph> reference = import_model(tiny_model(13, flattening));
    ASSERT_TRUE(reference.ok()) << reference.status().to_string();
    const Tensor expected = run_single_output(*reference, x);
    for (int64_t opset : {9, 11, 17}) {
      const std::string what =
          "opset " + std::to_string(opset) +
          (flattening == Flattening::kFlatten ? " with Flatten" : " with the view chain");
      Expected<Graph> graph = import_model(tiny_model(opset, flattening));
      ASSERT_TRUE(graph.ok()) << what << ": " << graph.status().to_string();
      EXPECT_EQ(graph->opset, opset) << what;
      const Tensor y = run_single_output(*graph, x);
      EXPECT_EQ(dims_to_string(y.dims), "[2,3]") << what;
      EXPECT_EQ(y.data, expected.data) << what;
    }
  }
}

// Shape -> Gather -> Unsqueeze -> Concat -> Reshape folds at import into one Reshape that
// copies the batch and infers the rest, so it runs at any batch size.
TEST(ImporterValid, ViewChainFoldsToOneReshape) {
  Expected<Graph> graph = import_model(tiny_model(13, Flattening::kViewChain));
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  const std::map<std::string, int> census = {
      {"Conv", 1}, {"Relu", 1}, {"GlobalAveragePool", 1}, {"Reshape", 1}, {"Gemm", 1}};
  EXPECT_EQ(graph->op_census(), census);
  for (const Node& node : graph->nodes) {
    if (node.op == OpType::kReshape) {
      EXPECT_EQ(node.attrs_as<ReshapeAttrs>().shape, (Dims{0, -1}));
    }
  }

  const Tensor both = two_channel_constant_images();
  const Tensor first = testing::slice_batch(both, 0, 1);
  const Tensor y1 = run_single_output(*graph, first);
  EXPECT_EQ(dims_to_string(y1.dims), "[1,3]");
  EXPECT_EQ(y1.data, (std::vector<float>{55, 2, 57}));

  // Batch 3: images 0, 1, 0.
  Tensor three({3, 3, 8, 8});
  std::copy(both.data.begin(), both.data.end(), three.data.begin());
  std::copy(first.data.begin(), first.data.end(), three.data.begin() + both.numel());
  const Tensor y3 = run_single_output(*graph, three);
  EXPECT_EQ(dims_to_string(y3.dims), "[3,3]");
  EXPECT_EQ(y3.data, (std::vector<float>{55, 2, 57, 1, 12, -7, 55, 2, 57}));
}

// ---- Bytes that are not a model ----

TEST(ImporterBytes, EmptyBuffer) {
  expect_error(import_onnx_buffer("", 0), ErrorKind::kInvalidModel, "model is empty (0 bytes)");
  expect_error(import_onnx_buffer(nullptr, 0), ErrorKind::kInvalidModel,
               "model is empty (0 bytes)");
}

TEST(ImporterBytes, TruncatedModel) {
  const std::string bytes = serialize(tiny_model());
  const std::string half = bytes.substr(0, bytes.size() / 2);
  expect_error(import_onnx_buffer(half.data(), half.size()), ErrorKind::kInvalidModel,
               "not an ONNX model: the protobuf cannot be parsed (" + std::to_string(half.size()) +
                   " bytes; truncated or another format?)");
}

// Every prefix of the model fails cleanly (or, for a prefix that happens to be a complete
// protobuf, imports); none crashes or reports an internal error.
TEST(ImporterBytes, EveryPrefixFailsCleanly) {
  const std::string bytes = serialize(tiny_model());
  int failures = 0;
  for (size_t size = 1; size < bytes.size(); ++size) {
    Expected<Graph> result = import_onnx_buffer(bytes.data(), size);
    if (result.ok()) continue;
    ++failures;
    EXPECT_NE(result.status().kind(), ErrorKind::kInternal)
        << size << " bytes: " << result.status().message();
  }
  EXPECT_GT(failures, static_cast<int>(bytes.size()) / 2);
}

// Random byte flips: anything may come back, but only as a Status, never a crash.
TEST(ImporterBytes, CorruptedBytesNeverCrash) {
  const std::string bytes = serialize(tiny_model());
  std::mt19937 rng(2024);
  std::uniform_int_distribution<size_t> position(0, bytes.size() - 1);
  std::uniform_int_distribution<int> value(0, 255);
  for (int trial = 0; trial < 400; ++trial) {
    std::string corrupted = bytes;
    for (int flip = 0; flip < 1 + trial % 4; ++flip) {
      corrupted[position(rng)] = static_cast<char>(value(rng));
    }
    Expected<Graph> result = import_onnx_buffer(corrupted.data(), corrupted.size());
    if (!result.ok()) {
      EXPECT_NE(result.status().kind(), ErrorKind::kInternal)
          << "trial " << trial << ": " << result.status().message();
      EXPECT_FALSE(result.status().message().empty()) << "trial " << trial;
    }
  }
}

TEST(ImporterBytes, NotProtobuf) {
  static const char kPngHeader[] =
      "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0";
  const std::vector<std::string> inputs = {
      std::string(kPngHeader, sizeof(kPngHeader) - 1),
      "this is a text file, not an ONNX model\n",
      std::string(64, '\xff'),
  };
  for (const std::string& bytes : inputs) {
    expect_error(import_onnx_buffer(bytes.data(), bytes.size()), ErrorKind::kInvalidModel,
                 "not an ONNX model");
  }
}

TEST(ImporterBytes, ModelWithoutGraph) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               "not an ONNX model: it has no graph nodes");
}

TEST(ImporterFile, MissingOrDirectory) {
  testing::TempDir dir;
  expect_error(import_onnx_file(dir.file("absent.onnx")), ErrorKind::kBadArgument,
               dir.file("absent.onnx") + ": cannot open model file");
  expect_error(import_onnx_file(dir.path()), ErrorKind::kBadArgument,
               dir.path() + ": is a folder, not an .onnx file");
}

// ---- Types and tensors ----

TEST(ImporterTypes, Int32InputIntoConvIsRejectedByTypeInference) {
  onnx::ModelProto model = tiny_model();
  model.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto::INT32);
  expect_error(import_model(model), ErrorKind::kInvalidModel, "ONNX shape inference: ");
}

// A well-typed model whose input is int32 (cast to float inside) is valid ONNX that densert
// does not run.
TEST(ImporterTypes, Int32InputIsUnsupported) {
  onnx::ModelProto model = tiny_model();
  auto* graph = model.mutable_graph();
  graph->mutable_input(0)->Clear();
  set_type(graph->mutable_input(0), "x_int", {kBatchDim, 3, 8, 8}, onnx::TensorProto::INT32);
  set_int(add_node(graph, "Cast", "cast", {"x_int"}, {"x"}), "to", onnx::TensorProto::FLOAT);
  reorder(model, {"cast", "conv", "relu", "gap", "flatten", "fc"});
  expect_error(import_model(model), ErrorKind::kUnsupported,
               R"(input "x_int" has element type INT32, densert takes float inputs)");
}

TEST(ImporterTypes, UnsupportedInitializerElementType) {
  onnx::ModelProto model = tiny_model();
  auto* graph = model.mutable_graph();
  auto* scale = graph->add_initializer();
  scale->set_name("scale");
  scale->set_data_type(onnx::TensorProto::FLOAT16);
  scale->add_dims(1);
  scale->add_int32_data(0x4000);  // 2.0 in half precision
  // relu_out * Cast(scale) keeps the model well typed.
  auto* relu = find_node(model, "relu");
  relu->set_output(0, "relu_raw");
  set_int(add_node(graph, "Cast", "cast_scale", {"scale"}, {"scale_f"}), "to",
          onnx::TensorProto::FLOAT);
  add_node(graph, "Mul", "scale_mul", {"relu_raw", "scale_f"}, {"relu_out"});
  reorder(model, {"conv", "relu", "cast_scale", "scale_mul", "gap", "flatten", "fc"});
  expect_error(
      import_model(model), ErrorKind::kUnsupported,
      R"(tensor "scale" has element type FLOAT16; densert reads float, double, int32, int64,)"
      " bool and uint8 tensors");
}

TEST(ImporterTensors, RawDataSizeMismatch) {
  onnx::ModelProto model = tiny_model();
  auto* w = find_initializer(model, "w");
  w->clear_float_data();
  w->set_raw_data(std::string(10, '\0'));
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               R"(tensor "w" holds 10 bytes, shape [2,3,3,3] needs 216)");
}

// ONNX 1.12's checker does not compare float_data with dims; densert does.
TEST(ImporterTensors, FloatDataCountMismatch) {
  onnx::ModelProto model = tiny_model();
  find_initializer(model, "fc_b")->add_float_data(4.0f);
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               R"(tensor "fc_b" holds 4 values, shape [3] needs 3)");
}

// ONNX's Conv shape inference does not compare channels; densert's shape rules do.
TEST(ImporterTensors, ConvWeightsDisagreeWithInputChannels) {
  onnx::ModelProto model = tiny_model();
  auto* w = find_initializer(model, "w");
  w->set_dims(1, 4);
  w->clear_float_data();
  for (int i = 0; i < 2 * 4 * 9; ++i)
    w->add_float_data(1.0f);
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               R"(node "conv" (Conv): src has 3 channels, weights expect 4)");
}

// Initializers with impossible shapes; none is used by a node so only the tensor decoding
// sees them.
struct BadTensorCase {
  std::string name;
  Dims dims;
  bool with_data;  // the checker wants data unless the (wrapped) element count is 0
  std::string fragment;
};

TEST(ImporterTensors, ImpossibleInitializerShapes) {
  const std::vector<BadTensorCase> cases = {
      {"negative_dim", {2, -3}, true, R"(tensor "bad" has negative dim -3)"},
      {"only_negative", {-1}, true, R"(tensor "bad" has negative dim -1)"},
      // 2^40 * 2^40 wraps to 0 in int64, so the ONNX checker takes it for an empty tensor.
      {"overflow_to_zero",
       {int64_t{1} << 40, int64_t{1} << 40},
       false,
       R"(tensor "bad" has shape [1099511627776,1099511627776], too many elements)"},
      {"overflow_wraps_negative",
       {int64_t{1} << 31, int64_t{1} << 31, 3},
       true,
       R"(tensor "bad" has shape [2147483648,2147483648,3], too many elements)"},
      {"overflow_in_last_dim",
       {3, int64_t{1} << 62},
       true,
       R"(tensor "bad" has shape [3,4611686018427387904], too many elements)"},
  };
  for (const BadTensorCase& c : cases) {
    SCOPED_TRACE(c.name);
    onnx::ModelProto model = tiny_model();
    auto* bad = model.mutable_graph()->add_initializer();
    bad->set_name("bad");
    bad->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : c.dims)
      bad->add_dims(d);
    if (c.with_data) bad->set_raw_data(std::string(8, '\0'));
    expect_error(import_model(model), ErrorKind::kInvalidModel, c.fragment);
  }
}

// ---- Graph structure ----

TEST(ImporterGraph, MissingInitializer) {
  onnx::ModelProto model = tiny_model();
  model.mutable_graph()->mutable_initializer()->DeleteSubrange(0, 1);  // "w"
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               "ONNX checker: Nodes in a graph must be topologically sorted, however input 'w' of "
               "node: name: conv OpType: Conv is not output of any previous nodes.");
}

TEST(ImporterGraph, DanglingNodeInput) {
  onnx::ModelProto model = tiny_model();
  find_node(model, "relu")->set_input(0, "ghost");
  expect_error(
      import_model(model), ErrorKind::kInvalidModel,
      "input 'ghost' of node: name: relu OpType: Relu is not output of any previous nodes");
}

// The ONNX checker accepts this; converting the opset would then crash inside ONNX, so
// both a model that needs converting (13) and one that does not (17) are checked.
TEST(ImporterGraph, OutputNobodyProduces) {
  for (int64_t opset : {13, 17}) {
    onnx::ModelProto model = tiny_model(opset);
    set_type(model.mutable_graph()->add_output(), "phantom", {kBatchDim, 3});
    expect_error(import_model(model), ErrorKind::kInvalidModel,
                 R"(graph output "phantom" is not produced by any node, input or initializer)");
  }
}

TEST(ImporterGraph, NoOutputs) {
  onnx::ModelProto model = tiny_model();
  model.mutable_graph()->mutable_output()->Clear();
  expect_error(import_model(model), ErrorKind::kInvalidModel, "graph has no outputs");
}

// ONNX 1.12's shape inference divides by strides and indexes dims by the kernel's rank
// unchecked: these would crash it, so densert refuses them first.
TEST(ImporterGraph, WindowAttributesONNXWouldTrustAreChecked) {
  struct Case {
    const char* name;
    std::function<void(onnx::ModelProto&)> corrupt;
    const char* message;
  };
  const Case cases[] = {
      {"zero conv stride",
       [](onnx::ModelProto& m) {
         set_ints(find_node(m, "conv"), "strides", {0, 0});
       },
       R"(node "conv" (Conv): attribute strides holds 0, expected a positive value)"},
      {"negative dilation",
       [](onnx::ModelProto& m) {
         set_ints(find_node(m, "conv"), "dilations", {1, -1});
       },
       R"(node "conv" (Conv): attribute dilations holds -1, expected a positive value)"},
      {"three strides for two spatial dims",
       [](onnx::ModelProto& m) {
         set_ints(find_node(m, "conv"), "strides", {1, 1, 1});
       },
       R"(node "conv" (Conv): attribute strides has 3 values, expected 2)"},
      {"pads of the wrong length",
       [](onnx::ModelProto& m) {
         set_ints(find_node(m, "conv"), "pads", {1, 1});
       },
       R"(node "conv" (Conv): attribute pads has 2 values, expected 4)"},
      {"weights of rank 5", [](onnx::ModelProto& m) { find_initializer(m, "w")->add_dims(1); },
       R"(node "conv" (Conv): weights "w" have 5 dims, expected 4)"},
      {"zero pool stride",
       [](onnx::ModelProto& m) {
         find_node(m, "relu")->set_output(0, "relu_raw");
         auto* pool =
             add_node(m.mutable_graph(), "AveragePool", "pool", {"relu_raw"}, {"relu_out"});
         set_ints(pool, "kernel_shape", {1, 1});
         set_ints(pool, "strides", {0, 1});
         reorder(m, {"conv", "relu", "pool", "gap", "flatten", "fc"});
       },
       R"(node "pool" (AveragePool): attribute strides holds 0, expected a positive value)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    onnx::ModelProto model = tiny_model();
    c.corrupt(model);
    expect_error(import_model(model), ErrorKind::kInvalidModel, c.message);
  }
}

// Without kernel_shape, ONNX's inference takes the kernel's rank from the weights and indexes the
// input's dims by it: an input rank that only follows from earlier ops must be checked too.
TEST(ImporterGraph, ConvInputRanksThatFollowFromEarlierOpsAreChecked) {
  struct Case {
    const char* name;
    std::function<void(onnx::GraphProto*)> feed;  // writes "fed" from "x"
    const char* message;
  };
  const Case cases[] = {
      {"reshape to rank 2",
       [](onnx::GraphProto* g) {
         fill_int64_tensor(g->add_initializer(), "shape", {2}, {1, 192});
         add_node(g, "Reshape", "feed", {"x", "shape"}, {"fed"});
       },
       R"(node "conv" (Conv): input "fed" has 2 dims, expected at least 3)"},
      {"flatten", [](onnx::GraphProto* g) { add_node(g, "Flatten", "feed", {"x"}, {"fed"}); },
       R"(node "conv" (Conv): input "fed" has 2 dims, expected at least 3)"},
      {"unsqueeze to rank 5",
       [](onnx::GraphProto* g) {
         fill_int64_tensor(g->add_initializer(), "axes", {1}, {0});
         add_node(g, "Unsqueeze", "feed", {"x", "axes"}, {"fed"});
       },
       R"(node "conv" (Conv): weights "w" have 4 dims, expected 5)"},
      {"relu after a reshape to rank 2",
       [](onnx::GraphProto* g) {
         fill_int64_tensor(g->add_initializer(), "shape", {2}, {1, 192});
         add_node(g, "Reshape", "reshape", {"x", "shape"}, {"flat_x"});
         add_node(g, "Relu", "feed", {"flat_x"}, {"fed"});
       },
       R"(node "conv" (Conv): input "fed" has 2 dims, expected at least 3)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    onnx::ModelProto model = tiny_model();
    onnx::NodeProto* conv = find_node(model, "conv");
    conv->clear_attribute();
    conv->set_input(0, "fed");
    c.feed(model.mutable_graph());
    // The nodes the case added come first, in the order it added them.
    std::vector<std::string> order;
    for (const auto& node : model.graph().node()) {
      if (node.name() == "feed" || node.name() == "reshape") order.push_back(node.name());
    }
    order.insert(order.end(), {"conv", "relu", "gap", "flatten", "fc"});
    reorder(model, order);
    expect_error(import_model(model), ErrorKind::kInvalidModel, c.message);
  }
}

TEST(ImporterGraph, EmptyActivationsAndPoolsOfPaddingAreRefused) {
  onnx::ModelProto model = tiny_model();
  onnx::TensorProto* w = find_initializer(model, "w");
  w->set_dims(0, 0);
  w->clear_float_data();
  find_initializer(model, "b")->set_dims(0, 0);
  find_initializer(model, "b")->clear_float_data();
  find_initializer(model, "fc_w")->set_dims(1, 0);
  find_initializer(model, "fc_w")->clear_float_data();
  expect_error(import_model(model), ErrorKind::kUnsupported,
               R"(node "conv" (Conv): output "conv_out" has shape [N,0,6,6], with no elements)");

  model = tiny_model();
  find_node(model, "relu")->set_output(0, "relu_raw");
  auto* pool = add_node(model.mutable_graph(), "MaxPool", "pool", {"relu_raw"}, {"relu_out"});
  set_ints(pool, "kernel_shape", {2, 2});
  set_ints(pool, "pads", {0, 0, 2, 0});
  reorder(model, {"conv", "relu", "pool", "gap", "flatten", "fc"});
  expect_error(import_model(model), ErrorKind::kUnsupported,
               R"(node "pool" (MaxPool): pad 2 is not smaller than the kernel (2), so some )"
               "windows hold only padding");
}

// ONNX's inference would wrap a dim above 2^31 - 1 (4294967304 comes out as 8).
TEST(ImporterGraph, DimsAboveInt32AreRefused) {
  onnx::ModelProto model = tiny_model();
  model.mutable_graph()
      ->mutable_input(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(2)
      ->set_dim_value(4294967304);
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               R"(tensor "x" has dim 2 of size 4294967304, more than densert supports)"
               " (2147483647)");
}

// A NaN in a small weight tensor is a value like any other, not a shape that depends on the
// batch (which the importer marks with NaN inside folded shapes).
TEST(ImporterTensors, NaNWeightsLoadAndPropagate) {
  onnx::ModelProto model = tiny_model();
  find_initializer(model, "fc_b")->set_float_data(1, std::numeric_limits<float>::quiet_NaN());
  Expected<Graph> graph = import_model(model);
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  const Tensor y = run_single_output(*graph, two_channel_constant_images());
  ASSERT_EQ(y.data.size(), 6u);
  // Class 1 of both images adds the NaN bias; the other classes keep their values.
  for (size_t i : {0u, 2u, 3u, 5u})
    EXPECT_EQ(y.data[i], kExpectedLogits[i]) << i;
  EXPECT_TRUE(std::isnan(y.data[1]) && std::isnan(y.data[4]));
}

// The checker names the node on a later line of its message; it must survive.
TEST(ImporterGraph, MisspelledAttributeNamesTheNode) {
  onnx::ModelProto model = tiny_model();
  find_node(model, "conv")->mutable_attribute(0)->set_name("kernel");
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               "ONNX checker: Unrecognized attribute: kernel for operator Conv ==> Context: Bad "
               "node spec for node. Name: conv OpType: Conv");
}

// relu reads add's output and add reads relu's: no order can run them.
TEST(ImporterGraph, Cycle) {
  onnx::ModelProto model = tiny_model();
  auto* graph = model.mutable_graph();
  find_node(model, "relu")->set_input(0, "loop");
  add_node(graph, "Add", "add", {"conv_out", "relu_out"}, {"loop"});
  reorder(model, {"conv", "add", "relu", "gap", "flatten", "fc"});
  expect_error(import_model(model), ErrorKind::kInvalidModel, "topologically sorted");
}

TEST(ImporterGraph, DuplicateOutputNames) {
  onnx::ModelProto model = tiny_model();
  find_node(model, "relu")->set_output(0, "conv_out");
  find_node(model, "gap")->set_input(0, "conv_out");
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               "'conv_out' has been used as output names multiple times");
}

TEST(ImporterGraph, UnsupportedDefaultDomainOp) {
  onnx::ModelProto model = tiny_model();
  find_node(model, "relu")->set_op_type("Softplus");
  expect_error(
      import_model(model), ErrorKind::kUnsupported,
      R"(node "relu" (Softplus): op Softplus of domain "ai.onnx" is not supported (opset 13))");
}

TEST(ImporterGraph, UnsupportedRecurrentOp) {
  // x [T=4, 1, 3] -> LSTM (hidden 2) -> y; all the weights are constants.
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  auto* graph = model.mutable_graph();
  graph->set_name("recurrent");
  set_type(graph->add_input(), "x", {4, 1, 3});
  set_type(graph->add_output(), "y", {4, 1, 1, 2});
  fill_float_tensor(graph->add_initializer(), "w", {1, 8, 3}, std::vector<float>(24, 0.1f));
  fill_float_tensor(graph->add_initializer(), "r", {1, 8, 2}, std::vector<float>(16, 0.1f));
  set_int(add_node(graph, "LSTM", "lstm", {"x", "w", "r"}, {"y"}), "hidden_size", 2);
  expect_error(import_model(model), ErrorKind::kUnsupported,
               R"(node "lstm" (LSTM): op LSTM of domain "ai.onnx" is not supported (opset 13))");
}

// The opset in the message is the custom domain's, not the default domain's. Both a model
// that needs converting (13) and one that does not (17) report it the same way.
TEST(ImporterGraph, CustomDomainOp) {
  for (int64_t opset : {13, 17}) {
    onnx::ModelProto model = tiny_model(opset);
    auto* custom = model.add_opset_import();
    custom->set_domain("com.example");
    custom->set_version(2);
    auto* relu = find_node(model, "relu");
    relu->set_op_type("Foo");
    relu->set_domain("com.example");
    relu->set_name("foo");
    expect_error(import_model(model), ErrorKind::kUnsupported,
                 R"(node "foo" (Foo): op Foo of domain "com.example" is not supported (opset 2))");
  }
}

TEST(ImporterGraph, CustomDomainWithoutOpsetImport) {
  onnx::ModelProto model = tiny_model();
  find_node(model, "relu")->set_domain("com.example");
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               "ONNX checker: No opset import for domain 'com.example'");
}

TEST(ImporterGraph, OpsetOutsideTheSupportedRange) {
  for (int64_t opset : {1, 6, 19, 21}) {
    expect_error(import_model(tiny_model(opset)), ErrorKind::kUnsupported,
                 "opset " + std::to_string(opset) + " is outside the supported range 7 to 18");
  }
}

// Opset 18, which Debian's ONNX library predates, is rewritten to 17 by densert: a
// reduction reads its axes from an input there.
TEST(ImporterOpset18, ReductionAxesFromAnInput) {
  for (bool reduce_mean : {false, true}) {
    onnx::ModelProto model = tiny_model(18);
    if (reduce_mean) {
      auto* graph = model.mutable_graph();
      fill_int64_tensor(graph->add_initializer(), "spatial", {2}, {2, 3});
      auto* mean = add_node(graph, "ReduceMean", "mean", {"relu_out", "spatial"}, {"flat"});
      set_int(mean, "keepdims", 0);
      reorder(model, {"conv", "relu", "mean", "fc"});
    }
    Expected<Graph> graph = import_model(model);
    ASSERT_TRUE(graph.ok()) << graph.status().to_string();
    EXPECT_EQ(graph->opset, 18);
    const Tensor y = run_single_output(*graph, two_channel_constant_images());
    EXPECT_EQ(y.data, kExpectedLogits) << (reduce_mean ? "ReduceMean" : "GlobalAveragePool");
  }
}

TEST(ImporterOpset18, OpsChangedInOpset18AreRefused) {
  onnx::ModelProto model = tiny_model(18);
  find_node(model, "relu")->set_op_type("BitwiseNot");
  expect_error(import_model(model), ErrorKind::kUnsupported,
               R"(node "relu" (BitwiseNot): the opset-18 form of BitwiseNot is not supported)");
}

TEST(ImporterGraph, NoDefaultDomainOpset) {
  onnx::ModelProto model = tiny_model();
  model.mutable_opset_import(0)->set_domain("com.example");
  expect_error(import_model(model), ErrorKind::kInvalidModel,
               "model imports no opset of the default ONNX domain");
}

TEST(ImporterGraph, BatchNormInTrainingMode) {
  onnx::ModelProto model = tiny_model(15);
  auto* graph = model.mutable_graph();
  for (const char* name : {"bn_scale", "bn_bias", "bn_mean", "bn_var"}) {
    fill_float_tensor(graph->add_initializer(), name, {2}, {1.0f, 1.0f});
  }
  find_node(model, "relu")->set_input(0, "bn_out");
  // In training mode ONNX requires the running mean and variance outputs as well.
  set_int(add_node(graph, "BatchNormalization", "bn",
                   {"conv_out", "bn_scale", "bn_bias", "bn_mean", "bn_var"},
                   {"bn_out", "running_mean", "running_var"}),
          "training_mode", 1);
  reorder(model, {"conv", "bn", "relu", "gap", "flatten", "fc"});
  expect_error(import_model(model), ErrorKind::kUnsupported,
               R"(node "bn" (BatchNormalization): training_mode=1 computes batch statistics)");
}

// ---- External data ----

// The tiny model with the conv weights moved to `location`, at `offset` bytes into it.
onnx::ModelProto model_with_external_weights(const std::string& location, int64_t offset) {
  onnx::ModelProto model = tiny_model();
  auto* w = find_initializer(model, "w");
  w->clear_float_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  const auto add_entry = [&](const std::string& key, const std::string& value) {
    auto* entry = w->add_external_data();
    entry->set_key(key);
    entry->set_value(value);
  };
  add_entry("location", location);
  add_entry("offset", std::to_string(offset));
  add_entry("length", std::to_string(54 * sizeof(float)));
  return model;
}

// The weights file: `offset` bytes of filler, then the conv weights as little-endian floats.
std::string weights_file_bytes(int64_t offset) {
  const std::vector<float> w = conv_weights();
  std::string bytes(static_cast<size_t>(offset), '\x7f');
  bytes.append(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
  return bytes;
}

TEST(ImporterExternalData, WeightsNextToTheModelMatchInlineWeights) {
  testing::TempDir dir;
  ASSERT_TRUE(testing::write_file(dir.file("weights.bin"), weights_file_bytes(16)));
  ASSERT_TRUE(testing::write_file(dir.file("model.onnx"),
                                  serialize(model_with_external_weights("weights.bin", 16))));

  Expected<Graph> external = import_onnx_file(dir.file("model.onnx"));
  ASSERT_TRUE(external.ok()) << external.status().to_string();
  Expected<Graph> inline_weights = import_model(tiny_model());
  ASSERT_TRUE(inline_weights.ok()) << inline_weights.status().to_string();

  const Tensor x = testing::random_tensor({2, 3, 8, 8}, 11);
  EXPECT_EQ(run_single_output(*external, x).data, run_single_output(*inline_weights, x).data);
  EXPECT_EQ(run_single_output(*external, two_channel_constant_images()).data, kExpectedLogits);
}

TEST(ImporterExternalData, SubfolderLocationIsAllowed) {
  testing::TempDir dir;
  std::filesystem::create_directory(dir.file("data"));
  ASSERT_TRUE(testing::write_file(dir.file("data/w.bin"), weights_file_bytes(0)));
  const std::string bytes = serialize(model_with_external_weights("data/w.bin", 0));
  Expected<Graph> graph = import_onnx_buffer(bytes.data(), bytes.size(), dir.path());
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  EXPECT_EQ(run_single_output(*graph, two_channel_constant_images()).data, kExpectedLogits);
}

TEST(ImporterExternalData, LocationOutsideTheModelFolder) {
  testing::TempDir dir;
  for (const std::string location : {"../weights.bin", "data/../../weights.bin", "/etc/passwd"}) {
    expect_error(import_model(model_with_external_weights(location, 0), dir.path()),
                 ErrorKind::kInvalidModel,
                 R"(initializer "w": external data location ")" + location +
                     R"(" must be a relative path inside the model's folder)");
  }
}

TEST(ImporterExternalData, MissingFile) {
  testing::TempDir dir;
  const std::string model_path = dir.file("model.onnx");
  ASSERT_TRUE(
      testing::write_file(model_path, serialize(model_with_external_weights("gone.bin", 0))));
  expect_error(
      import_onnx_file(model_path), ErrorKind::kInvalidModel,
      R"(initializer "w": external data file )" + dir.file("gone.bin") + " cannot be opened");
}

TEST(ImporterExternalData, FileTooShort) {
  testing::TempDir dir;
  ASSERT_TRUE(testing::write_file(dir.file("weights.bin"), weights_file_bytes(0).substr(0, 100)));
  expect_error(import_model(model_with_external_weights("weights.bin", 0), dir.path()),
               ErrorKind::kInvalidModel,
               R"(initializer "w": external data range [0, +216) exceeds )" +
                   dir.file("weights.bin") + " of 100 bytes");
}

TEST(ImporterExternalData, LocationIsAFolder) {
  testing::TempDir dir;
  std::filesystem::create_directory(dir.file("data"));
  expect_error(import_model(model_with_external_weights("data", 0), dir.path()),
               ErrorKind::kInvalidModel,
               R"(initializer "w": external data )" + dir.file("data") + " is not a file");
}

TEST(ImporterExternalData, MalformedOffset) {
  testing::TempDir dir;
  onnx::ModelProto model = model_with_external_weights("weights.bin", 0);
  find_initializer(model, "w")->mutable_external_data(1)->set_value("sixteen");
  expect_error(import_model(model, dir.path()), ErrorKind::kInvalidModel,
               R"(initializer "w": external data offset "sixteen" is not a number)");
}

TEST(ImporterExternalData, FromMemoryWithoutAFolder) {
  expect_error(
      import_model(model_with_external_weights("weights.bin", 0)), ErrorKind::kBadArgument,
      R"(initializer "w": external data "weights.bin" needs the model's folder, but the model)"
      " came from memory");
}

}  // namespace
}  // namespace densert
