// Graph construction helpers, validation and the text form of the IR.
#include "runtime/ir.h"

#include <algorithm>
#include <sstream>

namespace densert {

int64_t num_elements(const Dims& dims) {
  int64_t count = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(count, d, &count)) return INT64_MAX;
  }
  return count;
}

std::string dims_to_string(const Dims& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) text += ",";
    text += dims[i] == kBatchDim ? "N" : std::to_string(dims[i]);
  }
  return text + "]";
}

const char* op_type_name(OpType op) {
  switch (op) {
    case OpType::kConv:
      return "Conv";
    case OpType::kBatchNorm:
      return "BatchNormalization";
    case OpType::kRelu:
      return "Relu";
    case OpType::kClip:
      return "Clip";
    case OpType::kConcat:
      return "Concat";
    case OpType::kMaxPool:
      return "MaxPool";
    case OpType::kAveragePool:
      return "AveragePool";
    case OpType::kGlobalAveragePool:
      return "GlobalAveragePool";
    case OpType::kPad:
      return "Pad";
    case OpType::kFlatten:
      return "Flatten";
    case OpType::kReshape:
      return "Reshape";
    case OpType::kGemm:
      return "Gemm";
    case OpType::kMatMul:
      return "MatMul";
    case OpType::kAdd:
      return "Add";
    case OpType::kSub:
      return "Sub";
    case OpType::kMul:
      return "Mul";
    case OpType::kDiv:
      return "Div";
    case OpType::kSoftmax:
      return "Softmax";
    case OpType::kTranspose:
      return "Transpose";
    case OpType::kSqueeze:
      return "Squeeze";
    case OpType::kUnsqueeze:
      return "Unsqueeze";
    case OpType::kReduceMean:
      return "ReduceMean";
    case OpType::kIdentity:
      return "Identity";
    case OpType::kDropout:
      return "Dropout";
  }
  return "?";
}

std::string Node::describe() const {
  return "node \"" + name + "\" (" + op_type_name(op) + ")";
}

ValueId Graph::add_value(std::string name, Dims dims) {
  Value value;
  value.name = std::move(name);
  value.dims = std::move(dims);
  values.push_back(std::move(value));
  return static_cast<ValueId>(values.size() - 1);
}

ValueId Graph::add_constant(std::string name, std::shared_ptr<const Tensor> tensor) {
  const ValueId id = add_value(std::move(name), tensor->dims);
  values.back().constant = std::move(tensor);
  return id;
}

ValueId Graph::add_constant(std::string name, Tensor tensor) {
  const ValueId id = add_value(std::move(name), tensor.dims);
  values.back().constant = std::make_shared<const Tensor>(std::move(tensor));
  return id;
}

NodeId Graph::add_node(OpType op, std::string name, std::vector<ValueId> node_inputs,
                       std::vector<ValueId> node_outputs, Attributes attrs) {
  Node node{op, std::move(name), std::move(node_inputs), std::move(node_outputs), std::move(attrs)};
  const NodeId id = static_cast<NodeId>(nodes.size());
  for (ValueId out : node.outputs)
    values.at(static_cast<size_t>(out)).producer = id;
  nodes.push_back(std::move(node));
  return id;
}

void Graph::release_constant_data(ValueId id) {
  Value& value = values.at(static_cast<size_t>(id));
  if (value.constant && !value.constant->data.empty()) {
    value.constant = std::make_shared<const Tensor>(Tensor(value.constant->dims, {}));
  }
}

int Graph::release_unread_constants() {
  std::vector<bool> read(values.size(), false);
  for (const Node& node : nodes) {
    for (ValueId in : node.inputs) {
      if (in != kNoValue) read[static_cast<size_t>(in)] = true;
    }
  }
  for (ValueId out : outputs)
    read[static_cast<size_t>(out)] = true;
  int released = 0;
  for (size_t v = 0; v < values.size(); ++v) {
    if (!read[v] && values[v].constant && !values[v].constant->data.empty()) {
      release_constant_data(static_cast<ValueId>(v));
      ++released;
    }
  }
  return released;
}

void Graph::replace_uses(ValueId from, ValueId to) {
  for (Node& node : nodes) {
    for (ValueId& in : node.inputs) {
      if (in == from) in = to;
    }
  }
  for (ValueId& out : outputs) {
    if (out != from) continue;
    // The graph output keeps its name when another value takes its place.
    values[static_cast<size_t>(to)].name = values[static_cast<size_t>(from)].name;
    out = to;
  }
}

void Graph::relink() {
  for (Value& value : values)
    value.producer = -1;
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (ValueId out : nodes[n].outputs)
      values[static_cast<size_t>(out)].producer = static_cast<NodeId>(n);
  }
}

std::vector<std::vector<NodeId>> Graph::consumers() const {
  std::vector<std::vector<NodeId>> result(values.size());
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (ValueId in : nodes[n].inputs) {
      if (in != kNoValue) result[static_cast<size_t>(in)].push_back(static_cast<NodeId>(n));
    }
  }
  return result;
}

int Graph::remove_dead_nodes() {
  std::vector<bool> live(values.size(), false);
  for (ValueId out : outputs)
    live[static_cast<size_t>(out)] = true;
  std::vector<bool> keep(nodes.size(), false);
  for (size_t n = nodes.size(); n-- > 0;) {
    for (ValueId out : nodes[n].outputs) {
      if (live[static_cast<size_t>(out)]) keep[n] = true;
    }
    if (!keep[n]) continue;
    for (ValueId in : nodes[n].inputs) {
      if (in != kNoValue) live[static_cast<size_t>(in)] = true;
    }
  }
  std::vector<Node> kept;
  int removed = 0;
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (keep[n]) {
      kept.push_back(std::move(nodes[n]));
    } else {
      ++removed;
    }
  }
  nodes = std::move(kept);
  relink();
  return removed;
}

Status Graph::validate() const {
  const auto in_range = [&](ValueId id) {
    return id >= 0 && static_cast<size_t>(id) < values.size();
  };
  std::vector<bool> available(values.size(), false);
  for (size_t v = 0; v < values.size(); ++v)
    available[v] = values[v].is_constant();
  for (ValueId in : inputs) {
    if (!in_range(in)) return Status::internal("graph input id out of range");
    available[static_cast<size_t>(in)] = true;
  }
  std::vector<bool> produced(values.size(), false);
  for (const Node& node : nodes) {
    for (ValueId in : node.inputs) {
      if (in == kNoValue) continue;
      if (!in_range(in)) return Status::internal(node.describe() + ": input id out of range");
      if (!available[static_cast<size_t>(in)]) {
        return Status::invalid_model(node.describe() + ": input \"" + values[in].name +
                                     "\" is not produced before it is used");
      }
    }
    for (ValueId out : node.outputs) {
      if (!in_range(out)) return Status::internal(node.describe() + ": output id out of range");
      if (produced[static_cast<size_t>(out)] || values[out].is_constant()) {
        return Status::invalid_model(node.describe() + ": output \"" + values[out].name +
                                     "\" is produced more than once");
      }
      produced[static_cast<size_t>(out)] = true;
      available[static_cast<size_t>(out)] = true;
    }
  }
  for (ValueId out : outputs) {
    if (!in_range(out) || !available[static_cast<size_t>(out)]) {
      return Status::invalid_model("graph output is never produced");
    }
  }
  return {};
}

int64_t Graph::parameter_count() const {
  int64_t count = 0;
  for (const Value& value : values) {
    if (value.constant) count += value.constant->numel();
  }
  return count;
}

std::map<std::string, int> Graph::op_census() const {
  std::map<std::string, int> census;
  for (const Node& node : nodes)
    ++census[op_type_name(node.op)];
  return census;
}

namespace {

std::string join(const std::vector<int64_t>& values, const char* separator) {
  std::string text;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) text += separator;
    text += std::to_string(values[i]);
  }
  return text;
}

std::string format_float(float x) {
  std::ostringstream out;
  out << x;
  return out.str();
}

std::string activation_text(const Activation& act) {
  switch (act.kind) {
    case Activation::Kind::kNone:
      return "";
    case Activation::Kind::kRelu:
      return " post=relu";
    case Activation::Kind::kClip:
      return " post=clip(" + format_float(act.min) + "," + format_float(act.max) + ")";
  }
  return "";
}

std::string window_text(const Window& w) {
  std::string text = "kernel=" + join({w.kernel[0], w.kernel[1]}, "x") +
                     " strides=" + join({w.strides[0], w.strides[1]}, "x") +
                     " pads=" + join({w.pads[0], w.pads[1], w.pads[2], w.pads[3]}, ",");
  if (w.dilations[0] != 1 || w.dilations[1] != 1) {
    text += " dilations=" + join({w.dilations[0], w.dilations[1]}, "x");
  }
  return text;
}

struct AttrPrinter {
  std::string operator()(const std::monostate&) const { return ""; }
  std::string operator()(const ConvAttrs& a) const {
    return window_text(a.window) + (a.group != 1 ? " group=" + std::to_string(a.group) : "") +
           activation_text(a.activation);
  }
  std::string operator()(const PoolAttrs& a) const {
    return window_text(a.window) + (a.ceil_mode ? " ceil_mode" : "") +
           (a.count_include_pad ? " count_include_pad" : "");
  }
  std::string operator()(const BatchNormAttrs& a) const {
    return "epsilon=" + format_float(a.epsilon) + activation_text(a.activation);
  }
  std::string operator()(const ClipAttrs& a) const {
    return "min=" + format_float(a.min) + " max=" + format_float(a.max);
  }
  std::string operator()(const AxisAttrs& a) const { return "axis=" + std::to_string(a.axis); }
  std::string operator()(const PadAttrs& a) const {
    return "pads=" + join(a.pads, ",") + " value=" + format_float(a.value);
  }
  std::string operator()(const ReshapeAttrs& a) const {
    return "shape=" + join(a.shape, ",") + (a.allow_zero ? " allowzero" : "");
  }
  std::string operator()(const GemmAttrs& a) const {
    std::string text = "alpha=" + format_float(a.alpha) + " beta=" + format_float(a.beta);
    if (a.trans_a) text += " transA";
    if (a.trans_b) text += " transB";
    return text + activation_text(a.activation);
  }
  std::string operator()(const TransposeAttrs& a) const { return "perm=" + join(a.perm, ","); }
  std::string operator()(const AxesAttrs& a) const {
    return "axes=" + join(a.axes, ",") + (a.keep_dims ? "" : " keepdims=0");
  }
};

}  // namespace

std::string Graph::to_text() const {
  std::ostringstream out;
  const auto ref = [&](ValueId id) {
    return id == kNoValue ? std::string("_") : "%" + values[id].name;
  };
  for (ValueId in : inputs) {
    out << "input " << ref(in) << ": f32" << dims_to_string(values[in].dims) << "\n";
  }
  for (const Node& node : nodes) {
    out << "%";
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      out << (i ? ", %" : "") << values[node.outputs[i]].name;
    }
    out << " = " << op_type_name(node.op) << "(";
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      out << (i ? ", " : "") << ref(node.inputs[i]);
      if (node.inputs[i] != kNoValue && values[node.inputs[i]].is_constant()) {
        out << ":" << dims_to_string(values[node.inputs[i]].dims);
      }
    }
    out << ")";
    const std::string attrs = std::visit(AttrPrinter{}, node.attrs);
    if (!attrs.empty()) out << " {" << attrs << "}";
    if (!node.outputs.empty()) {
      const Value& result = values[node.outputs[0]];
      out << " -> f32" << dims_to_string(result.dims);
      if (result.slot.block >= 0) {
        out << " in " << blocks[result.slot.block].name << "@" << result.slot.channel_offset;
      }
    }
    out << "\n";
  }
  for (const DenseBlock& block : blocks) {
    out << "block " << block.name << ": " << block.channels << " channels, "
        << block.segments.size() << " segments, " << block.views.size() << " concat views\n";
  }
  for (ValueId v : outputs)
    out << "output " << ref(v) << "\n";
  return out.str();
}

}  // namespace densert
