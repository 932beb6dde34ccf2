// The optimizer's pass interface and pipeline. Each pass lives in its own file, reports how
// many rewrites it made, logs one dispatch line per rewrite and can be disabled by name.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "runtime/ir.h"

namespace densert {

struct PassResult {
  int rewrites = 0;
  bool changed() const { return rewrites > 0; }
};

using PassFunction = Expected<PassResult> (*)(Graph& graph);

struct PassInfo {
  const char* name;
  PassFunction run;
};

struct PassReport {
  std::string name;
  bool ran = false;  // false when disabled
  int rewrites = 0;
};

Expected<PassResult> run_cleanup(Graph& graph);
Expected<PassResult> run_canonicalize(Graph& graph);
Expected<PassResult> run_affine_to_batchnorm(Graph& graph);
Expected<PassResult> run_fold_batchnorm(Graph& graph);
Expected<PassResult> run_transition_reorder(Graph& graph);
Expected<PassResult> run_fuse_activation(Graph& graph);
Expected<PassResult> run_dense_blocks(Graph& graph);

// The pipeline in order. Ordering matters:
// - cleanup first, so later patterns see no Identity, Dropout or empty Pad in between;
// - canonicalize next, so later passes and the engine see one spelling of each op;
// - affine_to_batchnorm before fold_batchnorm, so Caffe2-style Mul/Add fold like BatchNorm;
// - transition_reorder before fuse_activation: it needs the transition's 1x1 conv without
//   a fused ReLU, and it runs after BatchNorm folding so no BatchNorm sits between them;
// - dense_blocks last: it places values, and no later pass may rewrite them.
const std::vector<PassInfo>& optimizer_passes();

struct OptimizeOptions {
  std::set<std::string> disabled;  // pass names to skip
};

// Runs the pipeline on graph; reports one entry per pass in order.
Expected<std::vector<PassReport>> optimize(Graph& graph, const OptimizeOptions& options = {});

// Shared by passes: the node producing `value`, or nullptr for inputs and constants.
const Node* producer_of(const Graph& graph, ValueId value);
// True if a per-channel constant of these dims applies to channel axis 1 of a 4-D tensor
// with `channels` channels; fills per_channel with C values (a scalar is broadcast).
bool as_per_channel(const Tensor& constant, int64_t channels, std::vector<float>* per_channel);

}  // namespace densert
