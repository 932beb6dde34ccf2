// Lowering of a checked, opset-17 ONNX graph into densert's IR. Shape arithmetic and any
// node whose inputs are all constants is evaluated here, so the IR holds only the ops that
// run on activations.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "importer/model_loader.h"
#include "importer/onnx_importer.h"
#include "runtime/host.h"
#include "runtime/log.h"
#include "runtime/reference_executor.h"
#include "runtime/shape_inference.h"

namespace densert {
namespace {

// Stands for the batch size inside a folded shape tensor until a plan fixes it.
constexpr double kSymbolicBatch = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kMaxElements = int64_t{1} << 40;

// Float tensors above this many elements are weights: they are kept as float once, never
// widened to doubles, and take no part in shape arithmetic.
constexpr int64_t kLargestFoldedTensor = 1024;

// A tensor whose contents are known at import time: initializers, Constant outputs and
// everything folded from them. Integers and small floats fit a double exactly in `data`;
// large float tensors (weights) live in `weights` instead, shared with the IR.
struct Known {
  Dims dims;
  std::vector<double> data;
  bool is_int = false;
  // Some elements are kSymbolicBatch: this came from a Shape of a batched value. Elsewhere a
  // NaN is a plain float value (a weight may hold one).
  bool batch_sized = false;
  std::shared_ptr<const Tensor> weights;

  bool has_values() const { return weights == nullptr; }
};

Expected<int64_t> checked_count(const Dims& dims, const std::string& what) {
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d < 0) return Status::invalid_model(what + " has negative dim " + std::to_string(d));
    if (d != 0 && count > kMaxElements / d) {
      return Status::invalid_model(what + " has shape " + dims_to_string(dims) +
                                   ", too many elements");
    }
    count *= d;
  }
  return count;
}

template <typename T>
std::vector<double> read_raw(const std::string& raw) {
  std::vector<double> out(raw.size() / sizeof(T));
  for (size_t i = 0; i < out.size(); ++i) {
    T value;
    std::memcpy(&value, raw.data() + i * sizeof(T), sizeof(T));
    out[i] = static_cast<double>(value);
  }
  return out;
}

Expected<Known> known_from_proto(const onnx::TensorProto& proto) {
  const std::string what = "tensor \"" + proto.name() + "\"";
  Known known;
  known.dims.assign(proto.dims().begin(), proto.dims().end());
  DENSERT_ASSIGN_OR_RETURN(int64_t count, checked_count(known.dims, what));
  const bool raw = proto.has_raw_data();
  if (proto.data_type() == onnx::TensorProto::FLOAT && count > kLargestFoldedTensor) {
    const size_t stored = raw ? proto.raw_data().size() / sizeof(float)
                              : static_cast<size_t>(proto.float_data_size());
    if ((raw && proto.raw_data().size() != static_cast<size_t>(count) * sizeof(float)) ||
        stored != static_cast<size_t>(count)) {
      return Status::invalid_model(what + " holds " + std::to_string(stored) + " values, shape " +
                                   dims_to_string(known.dims) + " needs " + std::to_string(count));
    }
    Tensor tensor(known.dims);
    if (raw) {
      std::memcpy(tensor.data.data(), proto.raw_data().data(), proto.raw_data().size());
    } else {
      std::copy(proto.float_data().begin(), proto.float_data().end(), tensor.data.begin());
    }
    known.weights = std::make_shared<const Tensor>(std::move(tensor));
    return known;
  }
  size_t element_size = 0;
  switch (proto.data_type()) {
    case onnx::TensorProto::FLOAT:
      element_size = 4;
      if (raw) {
        known.data = read_raw<float>(proto.raw_data());
      } else {
        known.data.assign(proto.float_data().begin(), proto.float_data().end());
      }
      break;
    case onnx::TensorProto::DOUBLE:
      element_size = 8;
      if (raw) {
        known.data = read_raw<double>(proto.raw_data());
      } else {
        known.data.assign(proto.double_data().begin(), proto.double_data().end());
      }
      break;
    case onnx::TensorProto::INT64:
      element_size = 8;
      known.is_int = true;
      if (raw) {
        known.data = read_raw<int64_t>(proto.raw_data());
      } else {
        known.data.assign(proto.int64_data().begin(), proto.int64_data().end());
      }
      break;
    case onnx::TensorProto::BOOL:
    case onnx::TensorProto::UINT8:
      element_size = 1;
      known.is_int = true;
      if (raw) {
        known.data = read_raw<uint8_t>(proto.raw_data());
      } else {
        known.data.assign(proto.int32_data().begin(), proto.int32_data().end());
      }
      break;
    case onnx::TensorProto::INT32:
      element_size = 4;
      known.is_int = true;
      if (raw) {
        known.data = read_raw<int32_t>(proto.raw_data());
      } else {
        known.data.assign(proto.int32_data().begin(), proto.int32_data().end());
      }
      break;
    default:
      return Status::unsupported(
          what + " has element type " +
          onnx::TensorProto::DataType_Name(
              static_cast<onnx::TensorProto::DataType>(proto.data_type())) +
          "; densert reads float, double, int32, int64, bool and uint8 tensors");
  }
  if (raw && proto.raw_data().size() != static_cast<size_t>(count) * element_size) {
    return Status::invalid_model(what + " holds " + std::to_string(proto.raw_data().size()) +
                                 " bytes, shape " + dims_to_string(known.dims) + " needs " +
                                 std::to_string(count * static_cast<int64_t>(element_size)));
  }
  if (static_cast<int64_t>(known.data.size()) != count) {
    return Status::invalid_model(what + " holds " + std::to_string(known.data.size()) +
                                 " values, shape " + dims_to_string(known.dims) + " needs " +
                                 std::to_string(count));
  }
  return known;
}

Tensor to_tensor(const Known& known) {
  Tensor tensor(known.dims);
  for (size_t i = 0; i < known.data.size(); ++i)
    tensor.data[i] = static_cast<float>(known.data[i]);
  return tensor;
}

Known from_tensor(Tensor tensor) {
  Known known;
  known.dims = tensor.dims;
  if (tensor.numel() > kLargestFoldedTensor) {
    known.weights = std::make_shared<const Tensor>(std::move(tensor));
  } else {
    known.data.assign(tensor.data.begin(), tensor.data.end());
  }
  return known;
}

class Lowering {
 public:
  // original_opset is the model's own opset, before conversion; messages report it.
  Lowering(onnx::ModelProto& model, int64_t original_opset)
      : model_(model), original_opset_(original_opset) {}

  Expected<Graph> run();

 private:
  using Attr = onnx::AttributeProto;

  Status lower_inputs();
  Status lower_node(const onnx::NodeProto& node, int index);
  Status add_node(const onnx::NodeProto& onnx_node, const std::string& name, OpType op,
                  std::vector<ValueId> inputs, Attributes attrs, size_t outputs_used = 1);

  Expected<ValueId> value_of(const std::string& name, const std::string& node_name);
  const Known* known(const std::string& name) const {
    auto it = known_.find(name);
    return it == known_.end() ? nullptr : &it->second;
  }
  Expected<const Known*> require_known(const onnx::NodeProto& node, const std::string& node_name,
                                       size_t input, const char* what) const;
  Expected<std::vector<int64_t>> known_ints(const onnx::NodeProto& node, const std::string& name,
                                            size_t input, const char* what) const;
  const Dims& probe_dims(ValueId id, int probe) const { return probe_dims_[probe].at(id); }

  const Attr* attr(const onnx::NodeProto& node, const char* name) const;
  int64_t attr_int(const onnx::NodeProto& node, const char* name, int64_t fallback) const;
  float attr_float(const onnx::NodeProto& node, const char* name, float fallback) const;
  std::vector<int64_t> attr_ints(const onnx::NodeProto& node, const char* name) const;
  std::string attr_string(const onnx::NodeProto& node, const char* name) const;

  Expected<Window> lower_window(const onnx::NodeProto& node, const std::string& name, ValueId src,
                                std::array<int64_t, 2> kernel, bool has_dilations);
  Status lower_conv(const onnx::NodeProto& node, const std::string& name);
  Status lower_pool(const onnx::NodeProto& node, const std::string& name, OpType op);
  Status lower_reshape(const onnx::NodeProto& node, const std::string& name);

  onnx::ModelProto& model_;  // initializers' data is released as it is lowered
  int64_t original_opset_;
  Graph graph_;
  std::map<std::string, Known> known_;
  std::map<std::string, ValueId> runtime_values_;
  std::map<std::string, ValueId> constant_values_;
  // Every runtime value's dims at two batch sizes: a dim that differs is the batch.
  std::array<std::vector<Dims>, 2> probe_dims_;
  static constexpr int64_t kProbeBatch[2] = {1, 2};
};

const onnx::AttributeProto* Lowering::attr(const onnx::NodeProto& node, const char* name) const {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

int64_t Lowering::attr_int(const onnx::NodeProto& node, const char* name, int64_t fallback) const {
  const Attr* a = attr(node, name);
  return a ? a->i() : fallback;
}

float Lowering::attr_float(const onnx::NodeProto& node, const char* name, float fallback) const {
  const Attr* a = attr(node, name);
  return a ? a->f() : fallback;
}

std::vector<int64_t> Lowering::attr_ints(const onnx::NodeProto& node, const char* name) const {
  const Attr* a = attr(node, name);
  if (!a) return {};
  return {a->ints().begin(), a->ints().end()};
}

std::string Lowering::attr_string(const onnx::NodeProto& node, const char* name) const {
  const Attr* a = attr(node, name);
  return a ? a->s() : std::string();
}

Expected<const Known*> Lowering::require_known(const onnx::NodeProto& node,
                                               const std::string& node_name, size_t input,
                                               const char* what) const {
  const std::string prefix = "node \"" + node_name + "\" (" + node.op_type() + "): ";
  if (static_cast<int>(input) >= node.input_size() || node.input(input).empty()) {
    return Status::invalid_model(prefix + what + " (input " + std::to_string(input) +
                                 ") is missing");
  }
  const Known* k = known(node.input(input));
  if (!k) {
    return Status::unsupported(prefix + what + " \"" + node.input(input) +
                               "\" must be a constant known when the model is loaded");
  }
  return k;
}

Expected<std::vector<int64_t>> Lowering::known_ints(const onnx::NodeProto& node,
                                                    const std::string& name, size_t input,
                                                    const char* what) const {
  DENSERT_ASSIGN_OR_RETURN(const Known* k, require_known(node, name, input, what));
  std::vector<int64_t> ints;
  for (double v : k->data) {
    if (std::isnan(v)) {
      return Status::unsupported("node \"" + name + "\" (" + node.op_type() + "): " + what +
                                 " depends on the batch size");
    }
    ints.push_back(static_cast<int64_t>(v));
  }
  return ints;
}

Expected<ValueId> Lowering::value_of(const std::string& name, const std::string& node_name) {
  if (auto it = runtime_values_.find(name); it != runtime_values_.end()) return it->second;
  if (auto it = constant_values_.find(name); it != constant_values_.end()) return it->second;
  if (const Known* k = known(name)) {
    for (double v : k->data) {
      if (k->batch_sized && std::isnan(v)) {
        return Status::unsupported("node \"" + node_name + "\": input \"" + name +
                                   "\" is a shape that depends on the batch size");
      }
    }
    const ValueId id = graph_.add_constant(
        name, k->weights ? k->weights : std::make_shared<const Tensor>(to_tensor(*k)));
    constant_values_[name] = id;
    for (auto& dims : probe_dims_)
      dims.resize(graph_.values.size());
    probe_dims_[0][id] = probe_dims_[1][id] = k->dims;
    return id;
  }
  return Status::invalid_model("node \"" + node_name + "\": input \"" + name +
                               "\" is not defined by any initializer, input or earlier node");
}

Status Lowering::lower_inputs() {
  std::set<std::string> initializer_names;
  for (auto& init : *model_.mutable_graph()->mutable_initializer()) {
    DENSERT_ASSIGN_OR_RETURN(Known k, known_from_proto(init));
    initializer_names.insert(init.name());
    // Weights now live in the IR's tensor; the protobuf's copy can go.
    // (clear_raw_data would keep the string's capacity; swapping releases it.)
    if (k.weights) {
      std::string().swap(*init.mutable_raw_data());
      google::protobuf::RepeatedField<float>().Swap(init.mutable_float_data());
    }
    known_[init.name()] = std::move(k);
  }
  for (const auto& input : model_.graph().input()) {
    // Older exporters list initializers as inputs too; they stay constants.
    if (initializer_names.count(input.name())) continue;
    const std::string what = "input \"" + input.name() + "\"";
    if (!input.type().has_tensor_type()) return Status::unsupported(what + " is not a tensor");
    const auto& tensor_type = input.type().tensor_type();
    if (tensor_type.elem_type() != onnx::TensorProto::FLOAT) {
      return Status::unsupported(
          what + " has element type " +
          onnx::TensorProto::DataType_Name(
              static_cast<onnx::TensorProto::DataType>(tensor_type.elem_type())) +
          ", densert takes float inputs");
    }
    if (!tensor_type.has_shape()) return Status::unsupported(what + " has no shape");
    Dims dims;
    for (int d = 0; d < tensor_type.shape().dim_size(); ++d) {
      const auto& dim = tensor_type.shape().dim(d);
      if (dim.has_dim_value()) {
        if (dim.dim_value() <= 0) {
          return Status::invalid_model(what + " has dim " + std::to_string(d) + " of size " +
                                       std::to_string(dim.dim_value()));
        }
        dims.push_back(dim.dim_value());
      } else if (d == 0) {
        dims.push_back(kBatchDim);
      } else {
        return Status::unsupported(what + " has symbolic dim " + std::to_string(d) + " \"" +
                                   dim.dim_param() +
                                   "\"; densert needs every dim but the batch fixed");
      }
    }
    const ValueId id = graph_.add_value(input.name(), dims);
    graph_.inputs.push_back(id);
    runtime_values_[input.name()] = id;
    for (int p = 0; p < 2; ++p) {
      probe_dims_[p].resize(graph_.values.size());
      probe_dims_[p][id] = resolve_batch(dims, kProbeBatch[p]);
    }
  }
  if (graph_.inputs.empty()) return Status::invalid_model("graph has no runtime inputs");
  return {};
}

Status Lowering::add_node(const onnx::NodeProto& onnx_node, const std::string& name, OpType op,
                          std::vector<ValueId> inputs, Attributes attrs, size_t outputs_used) {
  Node node{op, name, std::move(inputs), {}, std::move(attrs)};
  bool all_constant = true;
  for (ValueId in : node.inputs) {
    if (in != kNoValue && !graph_.value(in).is_constant()) all_constant = false;
  }
  if (all_constant) {
    // Constant subgraph: evaluate it now with the reference implementation.
    std::vector<const Tensor*> tensors;
    for (ValueId in : node.inputs)
      tensors.push_back(in == kNoValue ? nullptr : &graph_.constant(in));
    node.outputs.assign(1, kNoValue);
    DENSERT_ASSIGN_OR_RETURN(std::vector<Tensor> out, run_reference_node(graph_, node, tensors));
    known_[onnx_node.output(0)] = from_tensor(std::move(out[0]));
    return {};
  }
  std::array<std::vector<Dims>, 2> out_dims;
  for (int p = 0; p < 2; ++p) {
    std::vector<Dims> in_dims;
    for (ValueId in : node.inputs)
      in_dims.push_back(in == kNoValue ? Dims{} : probe_dims(in, p));
    node.outputs.assign(1, kNoValue);
    DENSERT_ASSIGN_OR_RETURN(out_dims[p], node_output_shapes(graph_, node, in_dims));
  }
  node.outputs.clear();
  for (size_t i = 0; i < outputs_used && i < static_cast<size_t>(onnx_node.output_size()); ++i) {
    Dims dims = out_dims[0][0];
    for (size_t d = 0; d < dims.size(); ++d) {
      if (out_dims[0][0][d] == out_dims[1][0][d]) continue;
      if (out_dims[0][0][d] * 2 != out_dims[1][0][d]) {
        return Status::unsupported(node.describe() + ": output dim " + std::to_string(d) +
                                   " mixes the batch with other dims");
      }
      dims[d] = kBatchDim;
    }
    const ValueId id = graph_.add_value(onnx_node.output(static_cast<int>(i)), dims);
    for (int p = 0; p < 2; ++p) {
      probe_dims_[p].resize(graph_.values.size());
      probe_dims_[p][id] = out_dims[p][0];
    }
    runtime_values_[onnx_node.output(static_cast<int>(i))] = id;
    node.outputs.push_back(id);
  }
  graph_.add_node(node.op, node.name, node.inputs, node.outputs, node.attrs);
  return {};
}

Expected<Window> Lowering::lower_window(const onnx::NodeProto& node, const std::string& name,
                                        ValueId src, std::array<int64_t, 2> kernel,
                                        bool has_dilations) {
  const std::string prefix = "node \"" + name + "\" (" + node.op_type() + "): ";
  const Dims& src_dims = probe_dims(src, 0);
  if (src_dims.size() != 4) {
    return Status::unsupported(prefix + "src has " + std::to_string(src_dims.size()) +
                               " dims; densert runs 2-D windows on NCHW tensors");
  }
  Window w;
  w.kernel = kernel;
  const auto pair = [&](const char* attr_name, std::array<int64_t, 2>& out) -> Status {
    const auto values = attr_ints(node, attr_name);
    if (values.empty()) return {};
    if (values.size() != 2) {
      return Status::invalid_model(prefix + attr_name + " has " + std::to_string(values.size()) +
                                   " values, expected 2");
    }
    for (int64_t v : values) {
      if (v <= 0)
        return Status::invalid_model(prefix + attr_name + " has non-positive value " +
                                     std::to_string(v));
    }
    out = {values[0], values[1]};
    return {};
  };
  DENSERT_RETURN_IF_ERROR(pair("strides", w.strides));
  if (has_dilations) DENSERT_RETURN_IF_ERROR(pair("dilations", w.dilations));
  const std::string auto_pad = attr_string(node, "auto_pad");
  const auto pads = attr_ints(node, "pads");
  if (auto_pad.empty() || auto_pad == "NOTSET") {
    if (!pads.empty()) {
      if (pads.size() != 4) {
        return Status::invalid_model(prefix + "pads has " + std::to_string(pads.size()) +
                                     " values, expected 4");
      }
      for (int64_t p : pads) {
        if (p < 0)
          return Status::invalid_model(prefix + "pads has negative value " + std::to_string(p));
      }
      // ONNX order is {top, left, bottom, right}, as in Window.
      w.pads = {pads[0], pads[1], pads[2], pads[3]};
    }
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (int axis = 0; axis < 2; ++axis) {
      const int64_t in = src_dims[2 + axis];
      const int64_t out = (in + w.strides[axis] - 1) / w.strides[axis];
      const int64_t extent = (w.kernel[axis] - 1) * w.dilations[axis] + 1;
      const int64_t total = std::max<int64_t>((out - 1) * w.strides[axis] + extent - in, 0);
      const int64_t small = total / 2;
      const int64_t large = total - small;
      w.pads[axis] = auto_pad == "SAME_UPPER" ? small : large;
      w.pads[2 + axis] = auto_pad == "SAME_UPPER" ? large : small;
    }
  } else if (auto_pad != "VALID") {
    return Status::invalid_model(prefix + "auto_pad \"" + auto_pad + "\" is not an ONNX value");
  }
  return w;
}

Status Lowering::lower_conv(const onnx::NodeProto& node, const std::string& name) {
  DENSERT_ASSIGN_OR_RETURN(ValueId src, value_of(node.input(0), name));
  DENSERT_ASSIGN_OR_RETURN(const Known* weights, require_known(node, name, 1, "weights"));
  if (weights->dims.size() != 4) {
    return Status::unsupported("node \"" + name + "\" (Conv): weights have " +
                               std::to_string(weights->dims.size()) +
                               " dims; densert runs 2-D convolutions (4-dim weights)");
  }
  ConvAttrs attrs;
  attrs.group = attr_int(node, "group", 1);
  DENSERT_ASSIGN_OR_RETURN(
      attrs.window, lower_window(node, name, src, {weights->dims[2], weights->dims[3]}, true));
  const auto kernel_shape = attr_ints(node, "kernel_shape");
  if (!kernel_shape.empty() && (kernel_shape.size() != 2 || kernel_shape[0] != weights->dims[2] ||
                                kernel_shape[1] != weights->dims[3])) {
    return Status::invalid_model("node \"" + name +
                                 "\" (Conv): kernel_shape disagrees with weights " +
                                 dims_to_string(weights->dims));
  }
  std::vector<ValueId> inputs = {src};
  DENSERT_ASSIGN_OR_RETURN(ValueId w, value_of(node.input(1), name));
  inputs.push_back(w);
  if (node.input_size() > 2 && !node.input(2).empty()) {
    DENSERT_RETURN_IF_ERROR(require_known(node, name, 2, "bias").status());
    DENSERT_ASSIGN_OR_RETURN(ValueId b, value_of(node.input(2), name));
    inputs.push_back(b);
  }
  return add_node(node, name, OpType::kConv, inputs, attrs);
}

Status Lowering::lower_pool(const onnx::NodeProto& node, const std::string& name, OpType op) {
  DENSERT_ASSIGN_OR_RETURN(ValueId src, value_of(node.input(0), name));
  const auto kernel = attr_ints(node, "kernel_shape");
  if (kernel.size() != 2) {
    return Status::unsupported("node \"" + name + "\" (" + node.op_type() + "): kernel_shape has " +
                               std::to_string(kernel.size()) + " dims; densert pools 2-D windows");
  }
  PoolAttrs attrs;
  DENSERT_ASSIGN_OR_RETURN(
      attrs.window, lower_window(node, name, src, {kernel[0], kernel[1]}, op == OpType::kMaxPool));
  attrs.ceil_mode = attr_int(node, "ceil_mode", 0) != 0;
  attrs.count_include_pad = attr_int(node, "count_include_pad", 0) != 0;
  if (op == OpType::kMaxPool) {
    if (attr_int(node, "storage_order", 0) != 0) {
      return Status::unsupported("node \"" + name +
                                 "\" (MaxPool): storage_order 1 is not supported");
    }
    if (node.output_size() > 1 && !node.output(1).empty()) {
      return Status::unsupported("node \"" + name +
                                 "\" (MaxPool): the Indices output is not supported");
    }
  }
  return add_node(node, name, op, {src}, attrs);
}

Status Lowering::lower_reshape(const onnx::NodeProto& node, const std::string& name) {
  DENSERT_ASSIGN_OR_RETURN(ValueId src, value_of(node.input(0), name));
  DENSERT_ASSIGN_OR_RETURN(const Known* target, require_known(node, name, 1, "shape"));
  ReshapeAttrs attrs;
  attrs.allow_zero = attr_int(node, "allowzero", 0) != 0;
  const bool has_infer = std::count(target->data.begin(), target->data.end(), -1.0) > 0;
  const bool src_batched = probe_dims(src, 0) != probe_dims(src, 1);
  for (size_t i = 0; i < target->data.size(); ++i) {
    const double v = target->data[i];
    if (!std::isnan(v)) {
      attrs.shape.push_back(static_cast<int64_t>(v));
    } else if (i == 0 && src_batched && !attrs.allow_zero) {
      attrs.shape.push_back(0);  // copy the batch from src
    } else if (!has_infer) {
      attrs.shape.push_back(-1);
    } else {
      return Status::unsupported("node \"" + name +
                                 "\" (Reshape): the target shape uses the batch "
                                 "size in a way densert cannot fold");
    }
  }
  return add_node(node, name, OpType::kReshape, {src}, attrs);
}

// Shape-manipulating ops evaluated on known tensors (the batch stays symbolic as NaN).
Expected<std::optional<Known>> fold_known(
    const onnx::NodeProto& node, const std::vector<const Known*>& in,
    const std::map<std::string, const onnx::AttributeProto*>& attrs) {
  const std::string& op = node.op_type();
  const auto int_attr = [&](const char* name, int64_t fallback) {
    auto it = attrs.find(name);
    return it == attrs.end() ? fallback : it->second->i();
  };
  const auto axis_of = [](int64_t axis, size_t rank) {
    return axis < 0 ? axis + static_cast<int64_t>(rank) : axis;
  };
  if (op == "Identity" || op == "Cast") {
    Known out = *in[0];
    if (op == "Cast") {
      const int64_t to = int_attr("to", onnx::TensorProto::FLOAT);
      out.is_int = to == onnx::TensorProto::INT64 || to == onnx::TensorProto::INT32;
      if (out.is_int) {
        for (double& v : out.data)
          v = std::isnan(v) ? v : std::trunc(v);
      }
    }
    return std::optional<Known>(out);
  }
  if (op == "Unsqueeze" || op == "Squeeze") {
    Known out = *in[0];
    std::vector<int64_t> axes;
    if (in.size() > 1 && in[1]) {
      for (double v : in[1]->data)
        axes.push_back(static_cast<int64_t>(v));
    }
    if (op == "Unsqueeze") {
      const size_t rank = out.dims.size() + axes.size();
      std::vector<int64_t> normalized;
      for (int64_t a : axes)
        normalized.push_back(axis_of(a, rank));
      std::sort(normalized.begin(), normalized.end());
      for (int64_t a : normalized) {
        if (a < 0 || a > static_cast<int64_t>(out.dims.size())) {
          return Status::invalid_model("Unsqueeze axis " + std::to_string(a) + " out of range");
        }
        out.dims.insert(out.dims.begin() + a, 1);
      }
    } else {
      Dims kept;
      for (size_t d = 0; d < out.dims.size(); ++d) {
        bool drop = axes.empty() && out.dims[d] == 1;
        for (int64_t a : axes)
          drop |= axis_of(a, out.dims.size()) == static_cast<int64_t>(d);
        if (!drop) kept.push_back(out.dims[d]);
      }
      out.dims = kept;
    }
    return std::optional<Known>(out);
  }
  if (op == "Concat") {
    Known out;
    out.is_int = in[0]->is_int;
    out.dims = in[0]->dims;
    if (out.dims.size() != 1) return std::optional<Known>();  // fall back to the reference op
    out.dims[0] = 0;
    for (const Known* k : in) {
      if (k->dims.size() != 1) return std::optional<Known>();
      out.data.insert(out.data.end(), k->data.begin(), k->data.end());
      out.dims[0] += k->dims[0];
    }
    return std::optional<Known>(out);
  }
  if (op == "Gather") {
    const Known& data = *in[0];
    const Known& indices = *in[1];
    if (data.dims.size() != 1 || int_attr("axis", 0) != 0) return std::optional<Known>();
    Known out;
    out.is_int = data.is_int;
    out.dims = indices.dims;
    for (double v : indices.data) {
      int64_t i = static_cast<int64_t>(v);
      if (i < 0) i += data.dims[0];
      if (i < 0 || i >= data.dims[0]) {
        return Status::invalid_model("Gather index " + std::to_string(i) + " out of range");
      }
      out.data.push_back(data.data[static_cast<size_t>(i)]);
    }
    return std::optional<Known>(out);
  }
  if (op == "Slice") {
    const Known& data = *in[0];
    if (data.dims.size() != 1 || in.size() < 3) return std::optional<Known>();
    const int64_t size = data.dims[0];
    const auto clamp = [&](double v, int64_t lo, int64_t hi) {
      int64_t i = v > 1e18 ? hi : (v < -1e18 ? lo : static_cast<int64_t>(v));
      if (i < 0) i += size;
      return std::clamp<int64_t>(i, lo, hi);
    };
    const int64_t step = in.size() > 4 && in[4] ? static_cast<int64_t>(in[4]->data[0]) : 1;
    if (step == 0) return Status::invalid_model("Slice step is 0");
    int64_t start = clamp(in[1]->data[0], step > 0 ? 0 : -1, step > 0 ? size : size - 1);
    int64_t end = clamp(in[2]->data[0], step > 0 ? 0 : -1, step > 0 ? size : size - 1);
    Known out;
    out.is_int = data.is_int;
    for (int64_t i = start; step > 0 ? i < end : i > end; i += step)
      out.data.push_back(data.data[i]);
    out.dims = {static_cast<int64_t>(out.data.size())};
    return std::optional<Known>(out);
  }
  if (op == "ConstantOfShape") {
    Known out;
    for (double v : in[0]->data) {
      if (std::isnan(v)) return Status::unsupported("ConstantOfShape of a batch-sized shape");
      out.dims.push_back(static_cast<int64_t>(v));
    }
    DENSERT_ASSIGN_OR_RETURN(int64_t count, checked_count(out.dims, "ConstantOfShape output"));
    double fill = 0.0;
    if (auto it = attrs.find("value"); it != attrs.end()) {
      DENSERT_ASSIGN_OR_RETURN(Known value, known_from_proto(it->second->t()));
      if (!value.data.empty()) fill = value.data[0];
      out.is_int = value.is_int;
    }
    out.data.assign(static_cast<size_t>(count), fill);
    return std::optional<Known>(out);
  }
  if ((op == "Add" || op == "Sub" || op == "Mul" || op == "Div") && in[0]->is_int &&
      in[1]->is_int) {
    const Known& a = *in[0];
    const Known& b = *in[1];
    if (a.data.size() != b.data.size() && a.data.size() != 1 && b.data.size() != 1) {
      return std::optional<Known>();
    }
    Known out = a.data.size() >= b.data.size() ? a : b;
    for (size_t i = 0; i < out.data.size(); ++i) {
      const double x = a.data[a.data.size() == 1 ? 0 : i];
      const double y = b.data[b.data.size() == 1 ? 0 : i];
      if (std::isnan(x) || std::isnan(y)) {
        return Status::unsupported(op + " on a shape that depends on the batch size");
      }
      if (op == "Div" && y == 0) return Status::invalid_model("integer division by zero");
      out.data[i] = op == "Add"   ? x + y
                    : op == "Sub" ? x - y
                    : op == "Mul" ? x * y
                                  : std::trunc(x / y);
    }
    return std::optional<Known>(out);
  }
  return std::optional<Known>();
}

Status Lowering::lower_node(const onnx::NodeProto& node, int index) {
  const std::string name =
      node.name().empty() ? node.op_type() + "_" + std::to_string(index) : node.name();
  const std::string prefix = "node \"" + name + "\" (" + node.op_type() + "): ";
  const std::string& op = node.op_type();
  if (!node.domain().empty() && node.domain() != "ai.onnx") {
    return Status::unsupported(prefix + "op " + op + " of domain \"" + node.domain() +
                               "\" is not supported (opset " + std::to_string(kCanonicalOpset) +
                               ")");
  }
  if (node.output_size() == 0) return Status::invalid_model(prefix + "has no outputs");

  // Constants and shape arithmetic are evaluated now.
  if (op == "Constant") {
    const Attr* value = attr(node, "value");
    Known k;
    if (value) {
      DENSERT_ASSIGN_OR_RETURN(k, known_from_proto(value->t()));
    } else if (const Attr* f = attr(node, "value_float")) {
      k.data = {f->f()};
    } else if (const Attr* fs = attr(node, "value_floats")) {
      k.data.assign(fs->floats().begin(), fs->floats().end());
      k.dims = {static_cast<int64_t>(k.data.size())};
    } else if (const Attr* i = attr(node, "value_int")) {
      k.data = {static_cast<double>(i->i())};
      k.is_int = true;
    } else if (const Attr* is = attr(node, "value_ints")) {
      k.data.assign(is->ints().begin(), is->ints().end());
      k.dims = {static_cast<int64_t>(k.data.size())};
      k.is_int = true;
    } else {
      return Status::unsupported(prefix + "only tensor, float and int values are supported");
    }
    known_[node.output(0)] = std::move(k);
    return {};
  }
  if (op == "Shape") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, value_of(node.input(0), name));
    const Dims& a = probe_dims(src, 0);
    const Dims& b = probe_dims(src, 1);
    const int64_t rank = static_cast<int64_t>(a.size());
    int64_t start = attr_int(node, "start", 0);
    int64_t end = attr_int(node, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<int64_t>(start, 0, rank);
    end = std::clamp<int64_t>(end, start, rank);
    Known k;
    k.is_int = true;
    for (int64_t d = start; d < end; ++d) {
      k.data.push_back(a[d] == b[d] ? static_cast<double>(a[d]) : kSymbolicBatch);
      k.batch_sized = k.batch_sized || a[d] != b[d];
    }
    k.dims = {end - start};
    known_[node.output(0)] = std::move(k);
    return {};
  }
  bool all_known = true;
  for (const auto& input : node.input()) {
    // Shape arithmetic needs the values themselves; weights fold as IR nodes instead.
    if (!input.empty() && (!known(input) || !known(input)->has_values())) all_known = false;
  }
  static const std::set<std::string> kShapeOps = {
      "Gather",    "Cast",    "Slice",  "ConstantOfShape",
      "Unsqueeze", "Squeeze", "Concat", "Identity",
      "Add",       "Sub",     "Mul",    "Div"};
  if (all_known && kShapeOps.count(op)) {
    std::vector<const Known*> in;
    for (const auto& input : node.input())
      in.push_back(input.empty() ? nullptr : known(input));
    std::map<std::string, const Attr*> attrs;
    for (const auto& a : node.attribute())
      attrs[a.name()] = &a;
    DENSERT_ASSIGN_OR_RETURN(std::optional<Known> out, fold_known(node, in, attrs));
    if (out) {
      const bool batch_sized_input =
          std::any_of(in.begin(), in.end(), [](const Known* k) { return k && k->batch_sized; });
      out->batch_sized = batch_sized_input && std::any_of(out->data.begin(), out->data.end(),
                                                          [](double v) { return std::isnan(v); });
      known_[node.output(0)] = std::move(*out);
      return {};
    }
  }
  if (op == "Gather" || op == "Cast" || op == "Slice" || op == "ConstantOfShape") {
    return Status::unsupported(prefix + "runs only on constants and shapes folded at load time");
  }

  const auto input = [&](int i) -> Expected<ValueId> { return value_of(node.input(i), name); };
  const auto optional_input = [&](int i) -> Expected<ValueId> {
    if (node.input_size() <= i || node.input(i).empty()) return kNoValue;
    return value_of(node.input(i), name);
  };
  const auto rank_of = [&](ValueId id) { return probe_dims(id, 0).size(); };

  if (op == "Conv") return lower_conv(node, name);
  if (op == "MaxPool") return lower_pool(node, name, OpType::kMaxPool);
  if (op == "AveragePool") return lower_pool(node, name, OpType::kAveragePool);
  if (op == "Reshape") return lower_reshape(node, name);

  if (op == "BatchNormalization") {
    if (attr_int(node, "training_mode", 0) != 0) {
      return Status::unsupported(prefix +
                                 "training_mode=1 computes batch statistics; export the "
                                 "model in eval mode for inference");
    }
    std::vector<ValueId> inputs;
    for (int i = 0; i < 5; ++i) {
      if (i > 0) DENSERT_RETURN_IF_ERROR(require_known(node, name, i, "parameter").status());
      DENSERT_ASSIGN_OR_RETURN(ValueId id, input(i));
      inputs.push_back(id);
    }
    return add_node(node, name, OpType::kBatchNorm, inputs,
                    BatchNormAttrs{attr_float(node, "epsilon", 1e-5f), {}});
  }
  if (op == "Relu") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    return add_node(node, name, OpType::kRelu, {src}, {});
  }
  if (op == "Clip") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    ClipAttrs attrs;
    for (int i = 1; i <= 2; ++i) {
      if (node.input_size() <= i || node.input(i).empty()) continue;
      DENSERT_ASSIGN_OR_RETURN(const Known* bound,
                               require_known(node, name, i, i == 1 ? "min" : "max"));
      if (bound->data.size() != 1) return Status::invalid_model(prefix + "bound is not a scalar");
      (i == 1 ? attrs.min : attrs.max) = static_cast<float>(bound->data[0]);
    }
    return add_node(node, name, OpType::kClip, {src}, attrs);
  }
  if (op == "Concat") {
    std::vector<ValueId> inputs;
    for (int i = 0; i < node.input_size(); ++i) {
      DENSERT_ASSIGN_OR_RETURN(ValueId id, input(i));
      inputs.push_back(id);
    }
    int64_t axis = attr_int(node, "axis", 1);
    const int64_t rank = static_cast<int64_t>(rank_of(inputs[0]));
    if (axis < -rank || axis >= rank)
      return Status::invalid_model(prefix + "axis " + std::to_string(axis) + " out of range");
    if (axis < 0) axis += rank;
    return add_node(node, name, OpType::kConcat, inputs, AxisAttrs{axis});
  }
  if (op == "GlobalAveragePool") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    return add_node(node, name, OpType::kGlobalAveragePool, {src}, {});
  }
  if (op == "Pad") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    const std::string mode = attr_string(node, "mode");
    if (!mode.empty() && mode != "constant") {
      return Status::unsupported(prefix + "mode \"" + mode + "\"; densert pads with a constant");
    }
    PadAttrs attrs;
    DENSERT_ASSIGN_OR_RETURN(attrs.pads, known_ints(node, name, 1, "pads"));
    if (node.input_size() > 2 && !node.input(2).empty()) {
      DENSERT_ASSIGN_OR_RETURN(const Known* value, require_known(node, name, 2, "constant_value"));
      if (!value->data.empty()) attrs.value = static_cast<float>(value->data[0]);
    }
    return add_node(node, name, OpType::kPad, {src}, attrs);
  }
  if (op == "Flatten") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    int64_t axis = attr_int(node, "axis", 1);
    if (axis < 0) axis += static_cast<int64_t>(rank_of(src));
    return add_node(node, name, OpType::kFlatten, {src}, AxisAttrs{axis});
  }
  if (op == "Gemm") {
    DENSERT_ASSIGN_OR_RETURN(ValueId a, input(0));
    DENSERT_ASSIGN_OR_RETURN(ValueId b, input(1));
    DENSERT_ASSIGN_OR_RETURN(ValueId c, optional_input(2));
    GemmAttrs attrs;
    attrs.alpha = attr_float(node, "alpha", 1.0f);
    attrs.beta = attr_float(node, "beta", 1.0f);
    attrs.trans_a = attr_int(node, "transA", 0) != 0;
    attrs.trans_b = attr_int(node, "transB", 0) != 0;
    std::vector<ValueId> inputs = {a, b};
    if (c != kNoValue) inputs.push_back(c);
    return add_node(node, name, OpType::kGemm, inputs, attrs);
  }
  static const std::map<std::string, OpType> kBinary = {{"Add", OpType::kAdd},
                                                        {"Sub", OpType::kSub},
                                                        {"Mul", OpType::kMul},
                                                        {"Div", OpType::kDiv},
                                                        {"MatMul", OpType::kMatMul}};
  if (auto it = kBinary.find(op); it != kBinary.end()) {
    DENSERT_ASSIGN_OR_RETURN(ValueId a, input(0));
    DENSERT_ASSIGN_OR_RETURN(ValueId b, input(1));
    return add_node(node, name, it->second, {a, b}, {});
  }
  if (op == "Identity") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    return add_node(node, name, OpType::kIdentity, {src}, {});
  }
  if (op == "Dropout") {
    if (node.input_size() > 2 && !node.input(2).empty()) {
      DENSERT_ASSIGN_OR_RETURN(const Known* training,
                               require_known(node, name, 2, "training_mode"));
      if (!training->data.empty() && training->data[0] != 0.0) {
        return Status::unsupported(prefix + "training_mode is true; export the model in eval mode");
      }
    }
    if (node.output_size() > 1 && !node.output(1).empty()) {
      return Status::unsupported(prefix + "the mask output is not supported");
    }
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    return add_node(node, name, OpType::kDropout, {src}, {});
  }
  if (op == "Softmax") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    int64_t axis = attr_int(node, "axis", -1);
    const int64_t rank = static_cast<int64_t>(rank_of(src));
    if (axis < -rank || axis >= rank)
      return Status::invalid_model(prefix + "axis " + std::to_string(axis) + " out of range");
    if (axis < 0) axis += rank;
    return add_node(node, name, OpType::kSoftmax, {src}, AxisAttrs{axis});
  }
  if (op == "Transpose") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    TransposeAttrs attrs{attr_ints(node, "perm")};
    if (attrs.perm.empty()) {
      for (size_t d = rank_of(src); d-- > 0;)
        attrs.perm.push_back(static_cast<int64_t>(d));
    }
    return add_node(node, name, OpType::kTranspose, {src}, attrs);
  }
  if (op == "Squeeze" || op == "Unsqueeze") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    AxesAttrs attrs;
    if (node.input_size() > 1 && !node.input(1).empty()) {
      DENSERT_ASSIGN_OR_RETURN(attrs.axes, known_ints(node, name, 1, "axes"));
    } else if (op == "Unsqueeze") {
      return Status::invalid_model(prefix + "has no axes");
    }
    return add_node(node, name, op == "Squeeze" ? OpType::kSqueeze : OpType::kUnsqueeze, {src},
                    attrs);
  }
  if (op == "ReduceMean") {
    DENSERT_ASSIGN_OR_RETURN(ValueId src, input(0));
    AxesAttrs attrs{attr_ints(node, "axes"), attr_int(node, "keepdims", 1) != 0};
    return add_node(node, name, OpType::kReduceMean, {src}, attrs);
  }
  return Status::unsupported(prefix + "op " + op + " of domain \"" +
                             (node.domain().empty() ? std::string("ai.onnx") : node.domain()) +
                             "\" is not supported (opset " + std::to_string(original_opset_) + ")");
}

Expected<Graph> Lowering::run() {
  DENSERT_RETURN_IF_ERROR(lower_inputs());
  int index = 0;
  for (const auto& node : model_.graph().node())
    DENSERT_RETURN_IF_ERROR(lower_node(node, index++));
  for (const auto& output : model_.graph().output()) {
    DENSERT_ASSIGN_OR_RETURN(ValueId id, value_of(output.name(), "graph output"));
    graph_.outputs.push_back(id);
  }
  for (const auto& prop : model_.metadata_props())
    graph_.metadata[prop.key()] = prop.value();
  DENSERT_RETURN_IF_ERROR(graph_.validate());
  // An activation without elements (a convolution with no output channels, say) has nothing to
  // compute and no layout that kernels take.
  for (const Node& node : graph_.nodes) {
    for (ValueId out : node.outputs) {
      const Dims& dims = graph_.value(out).dims;
      if (graph_.value(out).is_constant() || std::find(dims.begin(), dims.end(), 0) == dims.end())
        continue;
      return Status::unsupported(node.describe() + ": output \"" + graph_.value(out).name +
                                 "\" has shape " + dims_to_string(dims) + ", with no elements");
    }
  }
  return std::move(graph_);
}

}  // namespace

namespace {

Expected<Graph> lower_model(LoadedModel loaded, const std::string& external_data_dir) {
  DENSERT_RETURN_IF_ERROR(prepare_onnx_model(loaded, external_data_dir));
  Lowering lowering(loaded.proto, loaded.original_opset);
  DENSERT_ASSIGN_OR_RETURN(Graph graph, lowering.run());
  graph.opset = loaded.original_opset;
  DENSERT_LOG(kInfo) << "imported model: opset " << graph.opset << ", " << graph.nodes.size()
                     << " nodes, " << graph.parameter_count() << " parameters";
  return graph;
}

}  // namespace

Expected<Graph> import_onnx_buffer(const void* data, size_t size,
                                   const std::string& external_data_dir) {
  DENSERT_ASSIGN_OR_RETURN(LoadedModel loaded, parse_onnx_model(data, size));
  return lower_model(std::move(loaded), external_data_dir);
}

Expected<Graph> import_onnx_file(const std::string& path) {
  DENSERT_RETURN_IF_ERROR(check_regular_file(path, "an .onnx file"));
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::bad_argument(path + ": cannot open model file");
  Expected<LoadedModel> loaded = parse_onnx_model(file);
  if (!loaded.ok()) return loaded.status().with_context(path);
  const std::string dir = std::filesystem::path(path).parent_path().string();
  Expected<Graph> graph = lower_model(std::move(loaded).value(), dir.empty() ? "." : dir);
  if (!graph.ok()) return graph.status().with_context(path);
  return graph;
}

}  // namespace densert
