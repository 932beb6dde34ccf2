// The reference executor: one plain loop nest per IR op over NCHW float32, at any batch size.
// It is the oracle that the fast engine and the optimizer passes are tested against, so it
// favours being obviously right over being fast.
#pragma once

#include <vector>

#include "runtime/ir.h"

namespace densert {

// Batch size implied by the inputs, after checking every input against the graph's shapes.
Expected<int64_t> batch_from_inputs(const Graph& graph, const std::vector<Dims>& input_dims);
// The same for tensors, also checking that each holds as many values as its shape says.
Expected<int64_t> batch_from_inputs(const Graph& graph, const std::vector<Tensor>& inputs);

// Runs the graph on inputs given in graph-input order; returns outputs in graph-output order.
Expected<std::vector<Tensor>> run_reference(const Graph& graph, const std::vector<Tensor>& inputs);

// Runs a single node on its inputs (constants included); the importer folds constants with it.
Expected<std::vector<Tensor>> run_reference_node(const Graph& graph, const Node& node,
                                                 const std::vector<const Tensor*>& inputs);

}  // namespace densert
