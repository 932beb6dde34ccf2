// Pass "canonicalize": rewrites ops that exporters spell in several ways into the spelling
// the engine runs best. A ReduceMean over both spatial axes of a 4-D tensor (Keras, and
// PyTorch's x.mean((2, 3))) becomes a GlobalAveragePool, followed by a Flatten when the
// reduced axes are dropped.
#include "runtime/log.h"
#include "runtime/passes/pass.h"

namespace densert {
namespace {

bool reduces_spatial_axes(const Node& node, size_t rank) {
  if (node.op != OpType::kReduceMean || rank != 4) return false;
  const auto& axes = node.attrs_as<AxesAttrs>().axes;
  if (axes.size() != 2) return false;
  bool h = false, w = false;
  for (int64_t axis : axes) {
    h |= axis == 2 || axis == -2;
    w |= axis == 3 || axis == -1;
  }
  return h && w;
}

}  // namespace

Expected<PassResult> run_canonicalize(Graph& graph) {
  PassResult result;
  std::vector<Node> rewritten;
  for (Node& node : graph.nodes) {
    const ValueId src = node.inputs[0];
    if (!reduces_spatial_axes(node, graph.value(src).dims.size())) {
      rewritten.push_back(std::move(node));
      continue;
    }
    DENSERT_LOG(kDispatch) << "canonicalize: " << node.describe() << " becomes GlobalAveragePool";
    const bool keep_dims = node.attrs_as<AxesAttrs>().keep_dims;
    const ValueId out = node.outputs[0];
    ValueId pooled = out;
    if (!keep_dims) {
      Dims dims = graph.value(src).dims;
      dims[2] = dims[3] = 1;
      pooled = graph.add_value(graph.value(out).name + ".pooled", dims);
    }
    rewritten.push_back(Node{OpType::kGlobalAveragePool, node.name, {src}, {pooled}, {}});
    if (!keep_dims) {
      rewritten.push_back(
          Node{OpType::kFlatten, node.name + ".flatten", {pooled}, {out}, AxisAttrs{1}});
    }
    ++result.rewrites;
  }
  graph.nodes = std::move(rewritten);
  graph.relink();
  return result;
}

}  // namespace densert
