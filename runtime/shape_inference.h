// Concrete output shapes of every IR op, checked against the op's rules. Executors and the
// planner call it once the batch is known; the importer uses it where ONNX could not infer.
#pragma once

#include <vector>

#include "runtime/ir.h"

namespace densert {

// dims with kBatchDim replaced by batch.
Dims resolve_batch(const Dims& dims, int64_t batch);

// Shapes of a node's outputs from its inputs' shapes (kNoValue inputs get empty dims).
Expected<std::vector<Dims>> node_output_shapes(const Graph& graph, const Node& node,
                                               const std::vector<Dims>& input_dims);

// Shapes of every value of the graph at this batch size, indexed by ValueId.
Expected<std::vector<Dims>> infer_shapes(const Graph& graph, int64_t batch);

// NumPy broadcasting of two shapes; false if they do not broadcast.
bool broadcast_shapes(const Dims& a, const Dims& b, Dims* result);

// Output extent of a window along one spatial axis, following ONNX (and ceil_mode's rule
// that the last window must start inside the input or its begin padding).
int64_t window_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t dilation,
                           int64_t pad_begin, int64_t pad_end, bool ceil_mode);

}  // namespace densert
