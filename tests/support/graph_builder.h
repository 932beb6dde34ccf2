// Builds small graphs in code for the pass and engine tests: inputs, random constants and
// nodes whose output shapes are inferred as they are added. A symbolic batch (kBatchDim) in
// an input carries through to every activation computed from it, as the importer leaves it.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "runtime/ir.h"
#include "runtime/reference_executor.h"
#include "runtime/shape_inference.h"
#include "tests/support/test_support.h"

namespace densert::testing {

// A square window; pads are {top, left, bottom, right}.
inline Window square_window(int64_t kernel, int64_t stride = 1, int64_t pad = 0) {
  Window w;
  w.kernel = {kernel, kernel};
  w.strides = {stride, stride};
  w.pads = {pad, pad, pad, pad};
  return w;
}

inline PoolAttrs pool_attrs(const Window& window, bool ceil_mode = false,
                            bool count_include_pad = false) {
  PoolAttrs attrs;
  attrs.window = window;
  attrs.ceil_mode = ceil_mode;
  attrs.count_include_pad = count_include_pad;
  return attrs;
}

inline GemmAttrs gemm_attrs(float alpha = 1.0f, float beta = 1.0f, bool trans_b = false,
                            Activation activation = {}) {
  GemmAttrs attrs;
  attrs.alpha = alpha;
  attrs.beta = beta;
  attrs.trans_b = trans_b;
  attrs.activation = activation;
  return attrs;
}

class GraphBuilder {
 public:
  // Every random constant takes the next seed, so a graph is the same on every run.
  explicit GraphBuilder(uint32_t seed = 1) : next_seed_(seed) {}

  const Graph& graph() const { return graph_; }

  ValueId input(const std::string& name, const Dims& dims) {
    const ValueId id = graph_.add_value(name, dims);
    graph_.inputs.push_back(id);
    return id;
  }

  void output(ValueId value) { graph_.outputs.push_back(value); }

  ValueId constant(const std::string& name, Tensor tensor) {
    return graph_.add_constant(name, std::move(tensor));
  }

  ValueId random_constant(const std::string& name, const Dims& dims, float lo = -1.0f,
                          float hi = 1.0f) {
    return constant(name, random_tensor(dims, next_seed_++, lo, hi));
  }

  // Adds a node with one output named like the node; its shape comes from shape inference.
  ValueId add(OpType op, const std::string& name, std::vector<ValueId> inputs,
              Attributes attrs = {}) {
    Node probe{op, name, inputs, {kNoValue}, attrs};
    std::vector<Dims> input_dims;
    bool symbolic_batch = false;
    for (ValueId in : inputs) {
      Dims dims = graph_.value(in).dims;
      if (!graph_.value(in).is_constant() && !dims.empty() && dims[0] == kBatchDim) {
        symbolic_batch = true;
      }
      input_dims.push_back(resolve_batch(dims, 1));
    }
    Expected<std::vector<Dims>> shapes = node_output_shapes(graph_, probe, input_dims);
    Dims dims;
    if (shapes.ok()) {
      dims = shapes->at(0);
      if (symbolic_batch && !dims.empty()) dims[0] = kBatchDim;
    } else {
      ADD_FAILURE() << "cannot build " << probe.describe() << ": " << shapes.status().to_string();
    }
    const ValueId out = graph_.add_value(name, dims);
    graph_.add_node(op, name, std::move(inputs), {out}, std::move(attrs));
    return out;
  }

  // A convolution with random weights scaled by the fan-in, so activations stay near unit
  // size through a deep graph. Weights and bias are named "<name>.weights", "<name>.bias".
  ValueId conv(const std::string& name, ValueId src, int64_t out_channels, const Window& window,
               bool bias = true, Activation activation = {}) {
    const int64_t in_channels = graph_.value(src).dims[1];
    const float bound =
        std::sqrt(3.0f / static_cast<float>(in_channels * window.kernel[0] * window.kernel[1]));
    std::vector<ValueId> inputs = {
        src, random_constant(name + ".weights",
                             {out_channels, in_channels, window.kernel[0], window.kernel[1]},
                             -bound, bound)};
    if (bias) inputs.push_back(random_constant(name + ".bias", {out_channels}, -0.5f, 0.5f));
    ConvAttrs attrs;
    attrs.window = window;
    attrs.activation = activation;
    return add(OpType::kConv, name, std::move(inputs), attrs);
  }

  // Inference batch norm with random statistics; the variance stays well away from zero.
  ValueId batch_norm(const std::string& name, ValueId src, Activation activation = {}) {
    const int64_t channels = graph_.value(src).dims[1];
    std::vector<ValueId> inputs = {src, random_constant(name + ".scale", {channels}, 0.5f, 1.5f),
                                   random_constant(name + ".bias", {channels}, -0.5f, 0.5f),
                                   random_constant(name + ".mean", {channels}, -0.5f, 0.5f),
                                   random_constant(name + ".var", {channels}, 0.5f, 1.5f)};
    BatchNormAttrs attrs;
    attrs.activation = activation;
    return add(OpType::kBatchNorm, name, std::move(inputs), attrs);
  }

  ValueId relu(const std::string& name, ValueId src) { return add(OpType::kRelu, name, {src}); }

  ValueId clip(const std::string& name, ValueId src, float lo, float hi) {
    return add(OpType::kClip, name, {src}, ClipAttrs{lo, hi});
  }

  ValueId concat(const std::string& name, std::vector<ValueId> inputs) {
    return add(OpType::kConcat, name, std::move(inputs), AxisAttrs{1});
  }

  // Gemm of a [N, K] src with a random B ([K, out] or [out, K] with trans_b) and bias C.
  ValueId gemm(const std::string& name, ValueId src, int64_t out, const GemmAttrs& attrs,
               bool bias = true) {
    const int64_t k = graph_.value(src).dims[1];
    const float bound = std::sqrt(3.0f / static_cast<float>(k));
    const Dims b_dims = attrs.trans_b ? Dims{out, k} : Dims{k, out};
    std::vector<ValueId> inputs = {src, random_constant(name + ".b", b_dims, -bound, bound)};
    if (bias) inputs.push_back(random_constant(name + ".c", {out}, -0.5f, 0.5f));
    return add(OpType::kGemm, name, std::move(inputs), attrs);
  }

 private:
  Graph graph_;
  uint32_t next_seed_;
};

// Random inputs for every graph input, with the symbolic batch set to `batch`.
inline std::vector<Tensor> random_inputs(const Graph& graph, int64_t batch, uint32_t seed) {
  std::vector<Tensor> inputs;
  for (ValueId in : graph.inputs) {
    inputs.push_back(random_tensor(resolve_batch(graph.value(in).dims, batch), seed++));
  }
  return inputs;
}

}  // namespace densert::testing
