// Pass "fold_batchnorm": a BatchNormalization whose input is a Conv read by nothing else
// folds into the Conv's weights and bias; two BatchNorms in a row merge into one.
#include <cmath>

#include "runtime/log.h"
#include "runtime/passes/pass.h"

namespace densert {
namespace {

// The BatchNorm as y = x * scale + shift per channel.
void scale_shift(const Graph& graph, const Node& bn, std::vector<float>* scale,
                 std::vector<float>* shift) {
  const float epsilon = bn.attrs_as<BatchNormAttrs>().epsilon;
  const Tensor& gamma = graph.constant(bn.inputs[1]);
  const Tensor& beta = graph.constant(bn.inputs[2]);
  const Tensor& mean = graph.constant(bn.inputs[3]);
  const Tensor& var = graph.constant(bn.inputs[4]);
  const size_t channels = gamma.data.size();
  scale->resize(channels);
  shift->resize(channels);
  for (size_t c = 0; c < channels; ++c) {
    (*scale)[c] = gamma.data[c] / std::sqrt(var.data[c] + epsilon);
    (*shift)[c] = beta.data[c] - mean.data[c] * (*scale)[c];
  }
}

bool has_constant_params(const Graph& graph, const Node& bn) {
  for (size_t i = 1; i < 5; ++i) {
    if (!graph.value(bn.inputs[i]).is_constant()) return false;
  }
  return true;
}

}  // namespace

Expected<PassResult> run_fold_batchnorm(Graph& graph) {
  PassResult result;
  std::vector<bool> is_output(graph.values.size(), false);
  for (ValueId out : graph.outputs)
    is_output[out] = true;
  auto readers = graph.consumers();
  for (Node& bn : graph.nodes) {
    if (bn.op != OpType::kBatchNorm || !has_constant_params(graph, bn)) continue;
    const ValueId src = bn.inputs[0];
    if (readers[src].size() != 1 || is_output[src]) continue;
    Node* producer =
        graph.value(src).producer >= 0 ? &graph.nodes[graph.value(src).producer] : nullptr;
    if (!producer) continue;
    std::vector<float> scale, shift;
    scale_shift(graph, bn, &scale, &shift);

    if (producer->op == OpType::kConv && producer->attrs_as<ConvAttrs>().activation.none()) {
      const Tensor& weights = graph.constant(producer->inputs[1]);
      const int64_t out_c = weights.dims[0];
      const int64_t per_out = weights.numel() / out_c;
      Tensor folded_weights = weights;
      Tensor folded_bias({out_c});
      for (int64_t o = 0; o < out_c; ++o) {
        for (int64_t i = 0; i < per_out; ++i)
          folded_weights.data[o * per_out + i] *= scale[o];
        const float bias =
            producer->inputs.size() > 2 ? graph.constant(producer->inputs[2]).data[o] : 0.0f;
        folded_bias.data[o] = bias * scale[o] + shift[o];
      }
      producer->inputs.resize(3);
      producer->inputs[1] =
          graph.add_constant(producer->name + ".folded_weights", std::move(folded_weights));
      producer->inputs[2] =
          graph.add_constant(producer->name + ".folded_bias", std::move(folded_bias));
    } else if (producer->op == OpType::kBatchNorm && has_constant_params(graph, *producer) &&
               producer->attrs_as<BatchNormAttrs>().activation.none()) {
      std::vector<float> first_scale, first_shift;
      scale_shift(graph, *producer, &first_scale, &first_shift);
      const int64_t channels = static_cast<int64_t>(scale.size());
      std::vector<float> merged_scale(channels), merged_shift(channels);
      for (int64_t c = 0; c < channels; ++c) {
        merged_scale[c] = first_scale[c] * scale[c];
        merged_shift[c] = first_shift[c] * scale[c] + shift[c];
      }
      const std::string prefix = producer->name + ".merged_";
      producer->inputs = {
          producer->inputs[0],
          graph.add_constant(prefix + "scale", Tensor({channels}, merged_scale)),
          graph.add_constant(prefix + "shift", Tensor({channels}, merged_shift)),
          graph.add_constant(prefix + "mean",
                             Tensor({channels}, std::vector<float>(channels, 0.0f))),
          graph.add_constant(prefix + "var",
                             Tensor({channels}, std::vector<float>(channels, 1.0f)))};
      producer->attrs = BatchNormAttrs{0.0f, bn.attrs_as<BatchNormAttrs>().activation};
    } else {
      continue;
    }
    if (producer->op == OpType::kConv) {
      producer->attrs_as<ConvAttrs>().activation = bn.attrs_as<BatchNormAttrs>().activation;
    }
    DENSERT_LOG(kDispatch) << "fold_batchnorm: " << bn.describe() << " folded into "
                           << producer->describe();
    graph.replace_uses(bn.outputs[0], src);
    // The producer's output takes over the BatchNorm's value (name, shape, graph output), and
    // its readers: a later BatchNorm reading src must see them before it folds too.
    readers[src] = readers[bn.outputs[0]];
    is_output[src] = is_output[bn.outputs[0]];
    ++result.rewrites;
  }
  if (result.rewrites) graph.remove_dead_nodes();
  return result;
}

}  // namespace densert
