// Pass "fuse_activation": a Relu or Clip right after a Conv, Gemm or BatchNormalization that
// nothing else reads becomes that op's post-op, so no separate pass over memory is made.
// BatchNormalization takes a Relu only.
#include "runtime/log.h"
#include "runtime/passes/pass.h"

namespace densert {
namespace {

Activation* activation_of(Node& node) {
  switch (node.op) {
    case OpType::kConv:
      return &node.attrs_as<ConvAttrs>().activation;
    case OpType::kGemm:
      return &node.attrs_as<GemmAttrs>().activation;
    case OpType::kBatchNorm:
      return &node.attrs_as<BatchNormAttrs>().activation;
    default:
      return nullptr;
  }
}

}  // namespace

Expected<PassResult> run_fuse_activation(Graph& graph) {
  PassResult result;
  std::vector<bool> is_output(graph.values.size(), false);
  for (ValueId out : graph.outputs)
    is_output[out] = true;
  const auto readers = graph.consumers();
  for (Node& node : graph.nodes) {
    if (node.op != OpType::kRelu && node.op != OpType::kClip) continue;
    const ValueId src = node.inputs[0];
    if (graph.value(src).producer < 0) continue;
    Node& producer = graph.nodes[graph.value(src).producer];
    Activation* activation = activation_of(producer);
    if (!activation) continue;
    if (producer.op == OpType::kBatchNorm && node.op == OpType::kClip) {
      // oneDNN 2.6 batch normalization takes no post-ops, only its own ReLU flag: a fused
      // Clip would send the BatchNorm to the reference kernel.
      DENSERT_LOG(kDispatch) << "fuse_activation: refused " << node.describe() << ": "
                             << producer.describe() << " takes no Clip post-op";
      continue;
    }
    if (!activation->none()) {
      DENSERT_LOG(kDispatch) << "fuse_activation: refused " << node.describe() << ": "
                             << producer.describe() << " already has a post-op";
      continue;
    }
    if (readers[src].size() != 1 || is_output[src]) {
      DENSERT_LOG(kDispatch) << "fuse_activation: refused " << node.describe() << ": "
                             << producer.describe() << "'s output has other readers";
      continue;
    }
    if (node.op == OpType::kRelu) {
      *activation = Activation::relu();
    } else {
      const auto& clip = node.attrs_as<ClipAttrs>();
      *activation = Activation::clip(clip.min, clip.max);
    }
    DENSERT_LOG(kDispatch) << "fuse_activation: " << node.describe() << " fused into "
                           << producer.describe();
    graph.replace_uses(node.outputs[0], src);
    ++result.rewrites;
  }
  if (result.rewrites) graph.remove_dead_nodes();
  return result;
}

}  // namespace densert
