// Pass "cleanup": removes Identity, Dropout and Pads that pad nothing, then dead nodes.
#include "runtime/log.h"
#include "runtime/passes/pass.h"

namespace densert {
namespace {

bool is_no_op(const Node& node) {
  if (node.op == OpType::kIdentity || node.op == OpType::kDropout) return true;
  if (node.op == OpType::kPad) {
    for (int64_t p : node.attrs_as<PadAttrs>().pads) {
      if (p != 0) return false;
    }
    return true;
  }
  return false;
}

}  // namespace

Expected<PassResult> run_cleanup(Graph& graph) {
  PassResult result;
  std::vector<bool> is_output(graph.values.size(), false);
  for (ValueId out : graph.outputs)
    is_output[out] = true;
  for (Node& node : graph.nodes) {
    if (!is_no_op(node) || node.outputs.size() != 1) continue;
    const ValueId out = node.outputs[0];
    const ValueId in = node.inputs[0];
    // A graph output keeps its name, so a no-op that produces one stays.
    if (is_output[out]) continue;
    graph.replace_uses(out, in);
    DENSERT_LOG(kDispatch) << "cleanup: removed " << node.describe();
  }
  // The bypassed no-ops are now dead and go with every other unused node.
  result.rewrites = graph.remove_dead_nodes();
  return result;
}

}  // namespace densert
