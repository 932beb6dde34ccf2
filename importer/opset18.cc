// The opset 18 to 17 rewrite. Axes must be constants (an initializer or a Constant node),
// which is how exporters write them.
#include "importer/opset18.h"

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace densert {
namespace {

// Reductions whose axes moved from an attribute to an input in opset 18.
const std::set<std::string> kReductions = {"ReduceMean",   "ReduceMax",       "ReduceMin",
                                           "ReduceProd",   "ReduceL1",        "ReduceL2",
                                           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};

// Ops with a new opset-18 version that densert does not rewrite.
const std::set<std::string> kChangedIn18 = {"Split",
                                            "Resize",
                                            "ScatterND",
                                            "ScatterElements",
                                            "BitwiseAnd",
                                            "BitwiseOr",
                                            "BitwiseXor",
                                            "BitwiseNot",
                                            "Col2Im",
                                            "CenterCropPad",
                                            "LpPool",
                                            "OptionalHasElement",
                                            "OptionalGetElement"};

bool read_ints(const onnx::TensorProto& tensor, std::vector<int64_t>* out) {
  if (tensor.data_type() != onnx::TensorProto::INT64) return false;
  out->clear();
  if (tensor.has_raw_data()) {
    const std::string& raw = tensor.raw_data();
    for (size_t i = 0; i + 8 <= raw.size(); i += 8) {
      int64_t v;
      std::memcpy(&v, raw.data() + i, 8);
      out->push_back(v);
    }
  } else {
    out->assign(tensor.int64_data().begin(), tensor.int64_data().end());
  }
  return true;
}

}  // namespace

Status downgrade_opset_18(onnx::ModelProto& model) {
  onnx::GraphProto& graph = *model.mutable_graph();
  std::map<std::string, const onnx::TensorProto*> constants;
  for (const auto& init : graph.initializer())
    constants[init.name()] = &init;
  for (const auto& node : graph.node()) {
    if (node.op_type() != "Constant" || node.output_size() != 1) continue;
    for (const auto& attr : node.attribute()) {
      if (attr.name() == "value") constants[node.output(0)] = &attr.t();
    }
  }
  const auto describe = [](const onnx::NodeProto& node) {
    return "node \"" + node.name() + "\" (" + node.op_type() + ")";
  };

  for (auto& node : *graph.mutable_node()) {
    if (!node.domain().empty() && node.domain() != "ai.onnx") continue;
    if (kChangedIn18.count(node.op_type())) {
      return Status::unsupported(describe(node) + ": the opset-18 form of " + node.op_type() +
                                 " is not supported (densert reads opsets 7 to 18)");
    }
    if (kReductions.count(node.op_type())) {
      for (const auto& attr : node.attribute()) {
        if (attr.name() == "noop_with_empty_axes" && attr.i() != 0) {
          return Status::unsupported(describe(node) + ": noop_with_empty_axes is not supported");
        }
      }
      if (node.input_size() < 2 || node.input(1).empty()) continue;  // all axes
      auto it = constants.find(node.input(1));
      std::vector<int64_t> axes;
      if (it == constants.end() || !read_ints(*it->second, &axes)) {
        return Status::unsupported(describe(node) + ": axes must be a constant int64 tensor");
      }
      auto* attr = node.add_attribute();
      attr->set_name("axes");
      attr->set_type(onnx::AttributeProto::INTS);
      for (int64_t a : axes)
        attr->add_ints(a);
      node.mutable_input()->RemoveLast();
    } else if (node.op_type() == "Pad" && node.input_size() > 3 && !node.input(3).empty()) {
      return Status::unsupported(describe(node) + ": Pad with an axes input is not supported");
    }
  }
  for (auto& entry : *model.mutable_opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") entry.set_version(17);
  }
  return {};
}

}  // namespace densert
