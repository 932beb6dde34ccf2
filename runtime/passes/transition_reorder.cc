// Pass "transition_reorder": in a DenseNet transition (BatchNorm, ReLU, 1x1 Conv, 2x2
// AveragePool with stride 2) the convolution and the pool commute exactly, because a 1x1
// convolution is an affine map applied per pixel and the pool averages pixels. Pooling first
// makes the convolution run on a quarter of the pixels.
#include "runtime/log.h"
#include "runtime/passes/pass.h"
#include "runtime/shape_inference.h"

namespace densert {
namespace {

bool is_pointwise_conv(const Node& node) {
  if (node.op != OpType::kConv) return false;
  const auto& attrs = node.attrs_as<ConvAttrs>();
  const Window& w = attrs.window;
  return attrs.activation.none() && attrs.group == 1 && w.kernel[0] == 1 && w.kernel[1] == 1 &&
         w.strides[0] == 1 && w.strides[1] == 1 && w.pads[0] == 0 && w.pads[1] == 0 &&
         w.pads[2] == 0 && w.pads[3] == 0;
}

// An average of the pixels it covers: padding either absent or excluded from the count.
bool is_plain_average(const Node& node) {
  if (node.op != OpType::kAveragePool) return false;
  const auto& attrs = node.attrs_as<PoolAttrs>();
  const auto& p = attrs.window.pads;
  const bool no_pads = p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0;
  return no_pads || !attrs.count_include_pad;
}

}  // namespace

Expected<PassResult> run_transition_reorder(Graph& graph) {
  PassResult result;
  const auto readers = graph.consumers();
  std::vector<bool> is_output(graph.values.size(), false);
  for (ValueId out : graph.outputs)
    is_output[out] = true;
  for (size_t p = 0; p < graph.nodes.size(); ++p) {
    Node& pool = graph.nodes[p];
    if (!is_plain_average(pool)) continue;
    const ValueId conv_out = pool.inputs[0];
    const NodeId conv_id = graph.value(conv_out).producer;
    if (conv_id < 0 || !is_pointwise_conv(graph.nodes[conv_id])) continue;
    if (readers[conv_out].size() != 1 || is_output[conv_out]) continue;
    Node& conv = graph.nodes[conv_id];

    // pool(conv(x)) becomes conv(pool(x)): the pool reads x into a new value with x's
    // channels, and the conv writes the value the pool used to produce.
    const ValueId src = conv.inputs[0];
    const ValueId pool_out = pool.outputs[0];
    Dims pooled_dims = graph.value(pool_out).dims;
    pooled_dims[1] = graph.value(src).dims[1];
    const ValueId pooled = graph.add_value(graph.value(src).name + ".pooled", pooled_dims);
    Node new_pool = pool;
    new_pool.inputs = {src};
    new_pool.outputs = {pooled};
    Node new_conv = conv;
    new_conv.inputs[0] = pooled;
    new_conv.outputs = {pool_out};
    DENSERT_LOG(kDispatch) << "transition_reorder: " << pool.describe() << " moved before "
                           << conv.describe();
    // The conv's slot holds the pool now and the pool's slot the conv: order stays valid.
    graph.nodes[conv_id] = std::move(new_pool);
    graph.nodes[p] = std::move(new_conv);
    ++result.rewrites;
  }
  if (result.rewrites) {
    graph.relink();
    graph.remove_dead_nodes();
  }
  return result;
}

}  // namespace densert
