// Pass "affine_to_batchnorm": a Mul, Add, Sub or Div of a 4-D activation by a per-channel
// constant (how Caffe2 and some Keras exports write BatchNorm) becomes a BatchNormalization
// with unit variance, so that BatchNorm folding and the engine treat both forms alike.
#include "runtime/log.h"
#include "runtime/passes/pass.h"

namespace densert {

Expected<PassResult> run_affine_to_batchnorm(Graph& graph) {
  PassResult result;
  for (Node& node : graph.nodes) {
    const bool affine = node.op == OpType::kMul || node.op == OpType::kAdd ||
                        node.op == OpType::kSub || node.op == OpType::kDiv;
    if (!affine || node.inputs.size() != 2) continue;
    // The activation must be the first operand for Sub and Div; Mul and Add commute.
    int activation = 0;
    if (graph.value(node.inputs[0]).is_constant()) {
      if (node.op == OpType::kSub || node.op == OpType::kDiv) continue;
      activation = 1;
    }
    const ValueId src = node.inputs[activation];
    const ValueId operand = node.inputs[1 - activation];
    if (graph.value(src).is_constant() || !graph.value(operand).is_constant()) continue;
    const Dims& dims = graph.value(src).dims;
    if (dims.size() != 4 || graph.value(node.outputs[0]).dims != dims) continue;
    const int64_t channels = dims[1];
    std::vector<float> values;
    if (!as_per_channel(graph.constant(operand), channels, &values)) continue;

    std::vector<float> scale(channels, 1.0f), shift(channels, 0.0f);
    for (int64_t c = 0; c < channels; ++c) {
      const float v = values[c];
      if (node.op == OpType::kMul) scale[c] = v;
      if (node.op == OpType::kDiv) scale[c] = 1.0f / v;
      if (node.op == OpType::kAdd) shift[c] = v;
      if (node.op == OpType::kSub) shift[c] = -v;
    }
    const std::string prefix = node.name + ".";
    const ValueId scale_id = graph.add_constant(prefix + "scale", Tensor({channels}, scale));
    const ValueId shift_id = graph.add_constant(prefix + "shift", Tensor({channels}, shift));
    const ValueId mean_id =
        graph.add_constant(prefix + "mean", Tensor({channels}, std::vector<float>(channels, 0.0f)));
    const ValueId var_id =
        graph.add_constant(prefix + "var", Tensor({channels}, std::vector<float>(channels, 1.0f)));
    DENSERT_LOG(kDispatch) << "affine_to_batchnorm: " << node.describe()
                           << " becomes BatchNormalization";
    node.op = OpType::kBatchNorm;
    node.inputs = {src, scale_id, shift_id, mean_id, var_id};
    node.attrs = BatchNormAttrs{0.0f, {}};
    ++result.rewrites;
  }
  return result;
}

}  // namespace densert
