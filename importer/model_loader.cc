// Parsing, validation and opset conversion, all through ONNX's library. Every exception the
// library throws is caught here and turned into a Status.
#include "importer/model_loader.h"

#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>
#include <onnx/version_converter/convert.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "importer/onnx_importer.h"
#include "importer/opset18.h"
#include "runtime/log.h"

namespace densert {
namespace {

// A library message as one line. ONNX's messages run over several lines and the later ones
// often name the node ("name: conv OpType: Conv"), so the lines are joined, not dropped.
std::string one_line(const std::string& text) {
  constexpr size_t kMaxLength = 400;
  std::istringstream lines(text);
  std::string line;
  std::string joined;
  while (std::getline(lines, line)) {
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    const size_t last = line.find_last_not_of(" \t\r");
    if (!joined.empty()) joined += ' ';
    joined += line.substr(first, last - first + 1);
  }
  if (joined.size() > kMaxLength) joined = joined.substr(0, kMaxLength) + "...";
  return joined;
}

Expected<int64_t> default_domain_opset(const onnx::ModelProto& model) {
  int64_t opset = -1;
  for (const auto& entry : model.opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") opset = entry.version();
  }
  if (opset < 0) return Status::invalid_model("model imports no opset of the default ONNX domain");
  return opset;
}

// Reads one initializer's external data into raw_data, refusing paths outside the folder.
Status inline_external_data(onnx::TensorProto& tensor, const std::string& dir) {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;
  for (const auto& entry : tensor.external_data()) {
    try {
      if (entry.key() == "location") location = entry.value();
      if (entry.key() == "offset") offset = std::stoll(entry.value());
      if (entry.key() == "length") length = std::stoll(entry.value());
    } catch (const std::exception&) {
      return Status::invalid_model("initializer \"" + tensor.name() + "\": external data " +
                                   entry.key() + " \"" + entry.value() + "\" is not a number");
    }
  }
  const std::string what = "initializer \"" + tensor.name() + "\": external data";
  if (location.empty()) return Status::invalid_model(what + " has no location");
  const std::filesystem::path relative(location);
  if (relative.is_absolute() || location.find("..") != std::string::npos) {
    return Status::invalid_model(what + " location \"" + location +
                                 "\" must be a relative path inside the model's folder");
  }
  if (dir.empty()) {
    return Status::bad_argument(what + " \"" + location +
                                "\" needs the model's folder, but the model came from memory");
  }
  const std::filesystem::path path = std::filesystem::path(dir) / relative;
  std::error_code error;
  if (std::filesystem::exists(path, error) && !std::filesystem::is_regular_file(path, error)) {
    return Status::invalid_model(what + " " + path.string() + " is not a file");
  }
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) return Status::invalid_model(what + " file " + path.string() + " cannot be opened");
  const int64_t file_size = static_cast<int64_t>(file.tellg());
  if (offset > file_size) {
    return Status::invalid_model(what + " offset " + std::to_string(offset) +
                                 " is past the end of " + path.string() + " (" +
                                 std::to_string(file_size) + " bytes)");
  }
  if (length < 0) length = file_size - offset;
  if (offset < 0 || length < 0 || length > file_size - offset) {
    return Status::invalid_model(what + " range [" + std::to_string(offset) + ", +" +
                                 std::to_string(length) + ") exceeds " + path.string() + " of " +
                                 std::to_string(file_size) + " bytes");
  }
  std::string bytes(static_cast<size_t>(length), '\0');
  file.seekg(offset);
  file.read(bytes.data(), length);
  if (!file) return Status::invalid_model(what + " could not be read from " + path.string());
  tensor.set_raw_data(std::move(bytes));
  tensor.clear_external_data();
  tensor.set_data_location(onnx::TensorProto::DEFAULT);
  return {};
}

// ONNX 1.12's checker lets a graph output name a value that nothing defines, and its version
// converter then dereferences a null value for it, so this is checked before converting.
Status check_graph_outputs(const onnx::GraphProto& graph) {
  std::set<std::string> defined;
  for (const auto& input : graph.input())
    defined.insert(input.name());
  for (const auto& init : graph.initializer())
    defined.insert(init.name());
  for (const auto& node : graph.node())
    defined.insert(node.output().begin(), node.output().end());
  if (graph.output_size() == 0) return Status::invalid_model("graph has no outputs");
  for (const auto& output : graph.output()) {
    if (!defined.count(output.name())) {
      return Status::invalid_model("graph output \"" + output.name() +
                                   "\" is not produced by any node, input or initializer");
    }
  }
  return {};
}

// `node "conv_1" (Conv)` for nodes of the ONNX graph, named by position when unnamed.
std::string describe_onnx_node(const onnx::NodeProto& node, int index) {
  const std::string name =
      node.name().empty() ? node.op_type() + "_" + std::to_string(index) : node.name();
  return "node \"" + name + "\" (" + node.op_type() + ")";
}

// ONNX 1.12's shape inference keeps dims in 32 bits in places: larger declared dims come out
// wrapped (4294967304 as 8). densert refuses them before they reach it.
Status check_declared_dims(const onnx::GraphProto& graph) {
  constexpr int64_t kLargestDim = std::numeric_limits<int32_t>::max();
  const auto check = [&](const onnx::ValueInfoProto& info) -> Status {
    if (!info.type().tensor_type().has_shape()) return {};
    const auto& shape = info.type().tensor_type().shape();
    for (int d = 0; d < shape.dim_size(); ++d) {
      if (shape.dim(d).has_dim_value() && shape.dim(d).dim_value() > kLargestDim) {
        return Status::invalid_model("tensor \"" + info.name() + "\" has dim " + std::to_string(d) +
                                     " of size " + std::to_string(shape.dim(d).dim_value()) +
                                     ", more than densert supports (" +
                                     std::to_string(kLargestDim) + ")");
      }
    }
    return {};
  };
  for (const auto& info : graph.input())
    DENSERT_RETURN_IF_ERROR(check(info));
  for (const auto& info : graph.output())
    DENSERT_RETURN_IF_ERROR(check(info));
  for (const auto& info : graph.value_info())
    DENSERT_RETURN_IF_ERROR(check(info));
  return {};
}

// densert runs only the default ONNX domain. Ops of other domains are refused before the
// version converter sees them: it fails on them with an unhelpful "unordered_map::at".
Status check_op_domains(const onnx::ModelProto& model) {
  int index = 0;
  for (const auto& node : model.graph().node()) {
    const std::string& domain = node.domain();
    if (!domain.empty() && domain != "ai.onnx") {
      int64_t domain_opset = 0;
      for (const auto& entry : model.opset_import()) {
        if (entry.domain() == domain) domain_opset = entry.version();
      }
      return Status::unsupported(describe_onnx_node(node, index) + ": op " + node.op_type() +
                                 " of domain \"" + domain + "\" is not supported (opset " +
                                 std::to_string(domain_opset) + ")");
    }
    ++index;
  }
  return {};
}

// Ranks of a graph's values as far as they follow from the declared ones without ONNX's shape
// inference: through the ops that keep, broadcast or fix their input's rank, and reshapes and
// axis lists given as constants. Values it cannot tell are absent.
class RankTracker {
 public:
  explicit RankTracker(const onnx::GraphProto& graph) {
    const auto declare = [&](const onnx::ValueInfoProto& info) {
      if (info.type().tensor_type().has_shape())
        ranks_[info.name()] = info.type().tensor_type().shape().dim_size();
    };
    for (const auto& input : graph.input())
      declare(input);
    for (const auto& info : graph.value_info())
      declare(info);
    for (const auto& init : graph.initializer()) {
      ranks_[init.name()] = init.dims_size();
      constants_[init.name()] = &init;
    }
  }

  // The rank of `name`, or -1.
  int rank(const std::string& name) const {
    auto it = ranks_.find(name);
    return it == ranks_.end() ? -1 : it->second;
  }

  // Learns the rank of the node's first output; ranks the graph declares stay as they are.
  void learn(const onnx::NodeProto& node) {
    if (node.output_size() == 0 || ranks_.count(node.output(0))) return;
    if (node.op_type() == "Constant") {
      for (const auto& attr : node.attribute()) {
        if (attr.name() == "value" && attr.has_t()) {
          ranks_[node.output(0)] = attr.t().dims_size();
          constants_[node.output(0)] = &attr.t();
        }
      }
      return;
    }
    const int r = output_rank(node);
    if (r >= 0) ranks_[node.output(0)] = r;
  }

 private:
  // Elements of a 1-D constant input (a shape or an axis list), or -1.
  int64_t constant_length(const onnx::NodeProto& node, int input) const {
    if (node.input_size() <= input) return -1;
    auto it = constants_.find(node.input(input));
    if (it == constants_.end() || it->second->dims_size() != 1) return -1;
    return it->second->dims(0);
  }

  // Length of the axes attribute, or else of the constant axes input, or -1.
  int64_t axes_count(const onnx::NodeProto& node, int axes_input) const {
    for (const auto& attr : node.attribute()) {
      if (attr.name() == "axes") return attr.ints_size();
    }
    return constant_length(node, axes_input);
  }

  int64_t int_attribute(const onnx::NodeProto& node, const std::string& name,
                        int64_t fallback) const {
    for (const auto& attr : node.attribute()) {
      if (attr.name() == name) return attr.i();
    }
    return fallback;
  }

  int output_rank(const onnx::NodeProto& node) const {
    static const std::set<std::string> kKeepRank = {"Relu",
                                                    "LeakyRelu",
                                                    "PRelu",
                                                    "Sigmoid",
                                                    "Tanh",
                                                    "Clip",
                                                    "Elu",
                                                    "Selu",
                                                    "HardSigmoid",
                                                    "Softplus",
                                                    "BatchNormalization",
                                                    "InstanceNormalization",
                                                    "LRN",
                                                    "Identity",
                                                    "Dropout",
                                                    "Softmax",
                                                    "LogSoftmax",
                                                    "Cast",
                                                    "Pad",
                                                    "Conv",
                                                    "ConvTranspose",
                                                    "MaxPool",
                                                    "AveragePool",
                                                    "LpPool",
                                                    "GlobalAveragePool",
                                                    "GlobalMaxPool",
                                                    "Transpose",
                                                    "Sqrt",
                                                    "Exp",
                                                    "Log",
                                                    "Neg",
                                                    "Abs",
                                                    "Reciprocal",
                                                    "Floor",
                                                    "Ceil",
                                                    "Erf"};
    static const std::set<std::string> kBroadcast = {"Add", "Sub", "Mul", "Div",  "Pow",
                                                     "Max", "Min", "Sum", "Mean", "Concat"};
    static const std::set<std::string> kReduce = {"ReduceMean", "ReduceSum",  "ReduceMax",
                                                  "ReduceMin",  "ReduceProd", "ReduceL2"};
    const std::string& op = node.op_type();
    const int first = node.input_size() > 0 ? rank(node.input(0)) : -1;
    if (kKeepRank.count(op)) return first;
    if (kBroadcast.count(op)) {
      int widest = -1;
      for (const auto& input : node.input()) {
        const int r = rank(input);
        if (r < 0) return -1;
        widest = std::max(widest, r);
      }
      return widest;
    }
    if (op == "Flatten" || op == "Gemm") return 2;
    if (op == "Shape") return 1;
    if (op == "Reshape") return static_cast<int>(constant_length(node, 1));
    if (op == "MatMul") {
      const int second = node.input_size() > 1 ? rank(node.input(1)) : -1;
      return first >= 2 && second >= 2 ? std::max(first, second) : -1;
    }
    if (first < 0) return -1;
    if (op == "Unsqueeze") {
      const int64_t axes = axes_count(node, 1);
      return axes < 0 ? -1 : first + static_cast<int>(axes);
    }
    if (op == "Squeeze") {
      const int64_t axes = axes_count(node, 1);
      return axes < 0 || axes > first ? -1 : first - static_cast<int>(axes);
    }
    if (kReduce.count(op)) {
      if (int_attribute(node, "keepdims", 1) != 0) return first;
      const int64_t axes = axes_count(node, 1);
      if (axes < 0) return node.input_size() > 1 ? -1 : 0;  // no axes: every one is reduced
      return axes > first ? -1 : first - static_cast<int>(axes);
    }
    return -1;
  }

  std::map<std::string, int> ranks_;
  std::map<std::string, const onnx::TensorProto*> constants_;
};

// ONNX 1.12's shape inference for convolutions and pools divides by the strides and indexes
// the input's dims by the kernel's rank without checking either, so a malformed model would
// crash it. What it takes on trust is checked here first, from the attributes and from every
// rank the graph declares or that follows from them (RankTracker).
Status check_window_op(const onnx::NodeProto& node, int index, const RankTracker& ranks) {
  const std::string& op = node.op_type();
  const bool conv = op == "Conv" || op == "ConvTranspose";
  if (!conv && op != "MaxPool" && op != "AveragePool" && op != "LpPool") return {};
  const std::string where = describe_onnx_node(node, index);

  // Spatial dims, from the input or else the weights; -1 where the graph does not say.
  int64_t spatial = -1;
  if (const int rank = node.input_size() > 0 ? ranks.rank(node.input(0)) : -1; rank >= 0) {
    if (rank < 3) {
      return Status::invalid_model(where + ": input \"" + node.input(0) + "\" has " +
                                   std::to_string(rank) + " dims, expected at least 3");
    }
    spatial = rank - 2;
  }
  if (const int rank = conv && node.input_size() > 1 ? ranks.rank(node.input(1)) : -1; rank >= 0) {
    if (rank < 3 || (spatial >= 0 && rank - 2 != spatial)) {
      return Status::invalid_model(where + ": weights \"" + node.input(1) + "\" have " +
                                   std::to_string(rank) + " dims, expected " +
                                   (spatial >= 0 ? std::to_string(spatial + 2) : "at least 3"));
    }
    spatial = rank - 2;
  }
  for (const auto& attr : node.attribute()) {
    const std::string& name = attr.name();
    const bool window = name == "strides" || name == "dilations" || name == "kernel_shape";
    if (!window && name != "pads") continue;
    if (spatial < 0 && name == "kernel_shape") spatial = attr.ints_size();
    const int64_t expected = name == "pads" ? 2 * spatial : spatial;
    if (spatial >= 0 && attr.ints_size() != expected) {
      return Status::invalid_model(where + ": attribute " + name + " has " +
                                   std::to_string(attr.ints_size()) + " values, expected " +
                                   std::to_string(expected));
    }
    for (int64_t value : attr.ints()) {
      if (window && value <= 0) {
        return Status::invalid_model(where + ": attribute " + name + " holds " +
                                     std::to_string(value) + ", expected a positive value");
      }
    }
  }
  // A pooling window that can lie wholly in the padding has no defined value (PyTorch refuses
  // such pads; runtimes disagree on what they give).
  if (!conv) {
    const onnx::AttributeProto* kernel = nullptr;
    const onnx::AttributeProto* pads = nullptr;
    for (const auto& attr : node.attribute()) {
      if (attr.name() == "kernel_shape") kernel = &attr;
      if (attr.name() == "pads") pads = &attr;
    }
    if (kernel && pads && pads->ints_size() == 2 * kernel->ints_size()) {
      for (int i = 0; i < pads->ints_size(); ++i) {
        const int64_t k = kernel->ints(i % kernel->ints_size());
        if (pads->ints(i) >= k) {
          return Status::unsupported(where + ": pad " + std::to_string(pads->ints(i)) +
                                     " is not smaller than the kernel (" + std::to_string(k) +
                                     "), so some windows hold only padding");
        }
      }
    }
  }
  return {};
}

Status check_window_ops(const onnx::GraphProto& graph) {
  RankTracker ranks(graph);
  int index = 0;
  for (const auto& node : graph.node()) {
    DENSERT_RETURN_IF_ERROR(check_window_op(node, index++, ranks));
    ranks.learn(node);
  }
  return {};
}

}  // namespace

// Large weights take no part in opset conversion or shape inference; setting their bytes
// aside spares the copies of the whole model that ONNX's converter makes.
class WeightsSetAside {
 public:
  explicit WeightsSetAside(onnx::ModelProto& model) {
    for (auto& tensor : *model.mutable_graph()->mutable_initializer()) {
      if (tensor.raw_data().size() < kSmallestSetAside) continue;
      std::string bytes;
      bytes.swap(*tensor.mutable_raw_data());
      tensor.clear_raw_data();
      bytes_[tensor.name()] = std::move(bytes);
    }
  }
  // Puts the bytes back into the (possibly converted) model, matching tensors by name.
  Status restore(onnx::ModelProto& model) {
    for (auto& tensor : *model.mutable_graph()->mutable_initializer()) {
      auto it = bytes_.find(tensor.name());
      if (it == bytes_.end()) continue;
      tensor.clear_float_data();
      tensor.mutable_raw_data()->swap(it->second);
      bytes_.erase(it);
    }
    if (!bytes_.empty()) {
      return Status::internal("opset conversion lost initializer \"" + bytes_.begin()->first +
                              "\"");
    }
    return {};
  }

 private:
  static constexpr size_t kSmallestSetAside = 4096;
  std::map<std::string, std::string> bytes_;
};

// What both parsers check once the protobuf is read.
Expected<LoadedModel> check_parsed(LoadedModel loaded) {
  const onnx::ModelProto& model = loaded.proto;
  if (!model.has_graph() || model.graph().node_size() == 0) {
    return Status::invalid_model("not an ONNX model: it has no graph nodes");
  }
  DENSERT_ASSIGN_OR_RETURN(loaded.original_opset, default_domain_opset(model));
  if (loaded.original_opset < kOldestOpset || loaded.original_opset > kNewestOpset) {
    return Status::unsupported("opset " + std::to_string(loaded.original_opset) +
                               " is outside the supported range " + std::to_string(kOldestOpset) +
                               " to " + std::to_string(kNewestOpset));
  }
  return loaded;
}

Status unparsable(int64_t size) {
  return Status::invalid_model("not an ONNX model: the protobuf cannot be parsed (" +
                               std::to_string(size) + " bytes; truncated or another format?)");
}

Expected<LoadedModel> parse_onnx_model(const void* data, size_t size) {
  if (data == nullptr || size == 0) return Status::invalid_model("model is empty (0 bytes)");
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Status::unsupported("model of " + std::to_string(size) +
                               " bytes exceeds protobuf's 2 GiB limit; use external data");
  }
  LoadedModel loaded;
  if (!loaded.proto.ParseFromArray(data, static_cast<int>(size)))
    return unparsable(static_cast<int64_t>(size));
  return check_parsed(std::move(loaded));
}

Expected<LoadedModel> parse_onnx_model(std::istream& stream) {
  const std::streampos start = stream.tellg();
  stream.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(stream.tellg() - start);
  stream.seekg(start);
  if (size <= 0) return Status::invalid_model("model is empty (0 bytes)");
  if (size > std::numeric_limits<int>::max()) {
    return Status::unsupported("model of " + std::to_string(size) +
                               " bytes exceeds protobuf's 2 GiB limit; use external data");
  }
  LoadedModel loaded;
  if (!loaded.proto.ParseFromIstream(&stream)) return unparsable(size);
  return check_parsed(std::move(loaded));
}

Status prepare_onnx_model(LoadedModel& loaded, const std::string& external_data_dir) {
  onnx::ModelProto& model = loaded.proto;
  for (auto& tensor : *model.mutable_graph()->mutable_initializer()) {
    if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
      DENSERT_RETURN_IF_ERROR(inline_external_data(tensor, external_data_dir));
    }
  }

  if (loaded.original_opset == 18) DENSERT_RETURN_IF_ERROR(downgrade_opset_18(model));

  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return Status::invalid_model("ONNX checker: " + one_line(e.what()));
  }
  DENSERT_RETURN_IF_ERROR(check_graph_outputs(model.graph()));
  DENSERT_RETURN_IF_ERROR(check_op_domains(model));
  DENSERT_RETURN_IF_ERROR(check_declared_dims(model.graph()));
  DENSERT_RETURN_IF_ERROR(check_window_ops(model.graph()));

  WeightsSetAside weights(model);
  if (loaded.original_opset < kCanonicalOpset) {
    try {
      model = onnx::version_conversion::ConvertVersion(model, kCanonicalOpset);
    } catch (const std::exception& e) {
      return Status::unsupported("cannot convert opset " + std::to_string(loaded.original_opset) +
                                 " to " + std::to_string(kCanonicalOpset) + ": " +
                                 one_line(e.what()));
    }
    DENSERT_LOG(kInfo) << "converted opset " << loaded.original_opset << " to " << kCanonicalOpset;
  }

  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/true, /*strict_mode=*/1,
                                        /*data_prop=*/false);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return Status::invalid_model("ONNX shape inference: " + one_line(e.what()));
  }
  return weights.restore(model);
}

}  // namespace densert
