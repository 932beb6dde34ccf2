// Shape rules for each IR op. Each mismatch names the node, the input and both values.
#include "runtime/shape_inference.h"

#include <algorithm>

namespace densert {
namespace {

Status shape_error(const Node& node, const std::string& what) {
  return Status::invalid_model(node.describe() + ": " + what);
}

Expected<int64_t> normalize_axis(const Node& node, int64_t axis, size_t rank) {
  const int64_t r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r) {
    return shape_error(
        node, "axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + r : axis;
}

Status expect_rank(const Node& node, const Dims& dims, size_t rank, const char* what) {
  if (dims.size() != rank) {
    return shape_error(node, std::string(what) + " has " + std::to_string(dims.size()) +
                                 " dims, expected " + std::to_string(rank));
  }
  return {};
}

Expected<Dims> window_shape(const Node& node, const Dims& src, const Window& w, int64_t channels,
                            bool ceil_mode) {
  Dims out = {src[0], channels, 0, 0};
  for (int axis = 0; axis < 2; ++axis) {
    const int64_t size =
        window_output_size(src[2 + axis], w.kernel[axis], w.strides[axis], w.dilations[axis],
                           w.pads[axis], w.pads[2 + axis], ceil_mode);
    if (size <= 0) {
      return shape_error(node, "window " + std::to_string(w.kernel[axis]) +
                                   " does not fit spatial size " + std::to_string(src[2 + axis]));
    }
    out[2 + axis] = size;
  }
  return out;
}

Expected<Dims> conv_shape(const Graph& graph, const Node& node, const std::vector<Dims>& in) {
  const auto& attrs = node.attrs_as<ConvAttrs>();
  DENSERT_RETURN_IF_ERROR(expect_rank(node, in[0], 4, "src"));
  DENSERT_RETURN_IF_ERROR(expect_rank(node, in[1], 4, "weights"));
  const Dims& w = in[1];
  if (attrs.group <= 0 || in[0][1] != w[1] * attrs.group) {
    return shape_error(node, "src has " + std::to_string(in[0][1]) + " channels, weights expect " +
                                 std::to_string(w[1] * attrs.group));
  }
  if (w[0] % attrs.group != 0) {
    return shape_error(node, "output channels " + std::to_string(w[0]) +
                                 " are not divisible by group " + std::to_string(attrs.group));
  }
  if (w[2] != attrs.window.kernel[0] || w[3] != attrs.window.kernel[1]) {
    return shape_error(node, "weights kernel " + std::to_string(w[2]) + "x" + std::to_string(w[3]) +
                                 " differs from kernel_shape");
  }
  if (in.size() > 2 && !in[2].empty() && (in[2].size() != 1 || in[2][0] != w[0])) {
    return shape_error(node, "bias has shape " + dims_to_string(in[2]) + ", expected [" +
                                 std::to_string(w[0]) + "]");
  }
  (void)graph;
  return window_shape(node, in[0], attrs.window, w[0], false);
}

Expected<Dims> pool_shape(const Node& node, const std::vector<Dims>& in) {
  const auto& attrs = node.attrs_as<PoolAttrs>();
  DENSERT_RETURN_IF_ERROR(expect_rank(node, in[0], 4, "src"));
  return window_shape(node, in[0], attrs.window, in[0][1], attrs.ceil_mode);
}

Expected<Dims> concat_shape(const Node& node, const std::vector<Dims>& in) {
  if (in.empty()) return shape_error(node, "has no inputs");
  DENSERT_ASSIGN_OR_RETURN(int64_t axis,
                           normalize_axis(node, node.attrs_as<AxisAttrs>().axis, in[0].size()));
  Dims out = in[0];
  for (size_t i = 1; i < in.size(); ++i) {
    if (in[i].size() != out.size()) {
      return shape_error(node, "input " + std::to_string(i) + " has rank " +
                                   std::to_string(in[i].size()) + ", expected " +
                                   std::to_string(out.size()));
    }
    for (size_t d = 0; d < out.size(); ++d) {
      if (static_cast<int64_t>(d) == axis) continue;
      if (in[i][d] != out[d]) {
        return shape_error(node, "input " + std::to_string(i) + " has shape " +
                                     dims_to_string(in[i]) + ", incompatible with " +
                                     dims_to_string(in[0]) + " on axis " + std::to_string(d));
      }
    }
    out[static_cast<size_t>(axis)] += in[i][static_cast<size_t>(axis)];
  }
  return out;
}

// A Reshape target as written, "[4,-1]": dims_to_string would show the -1 as the batch.
std::string target_to_string(const Dims& target) {
  std::string text = "[";
  for (size_t i = 0; i < target.size(); ++i)
    text += (i ? "," : "") + std::to_string(target[i]);
  return text + "]";
}

Expected<Dims> reshape_shape(const Node& node, const Dims& src) {
  const auto& attrs = node.attrs_as<ReshapeAttrs>();
  Dims out = attrs.shape;
  int infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 0 && !attrs.allow_zero) {
      if (i >= src.size())
        return shape_error(node, "shape copies dim " + std::to_string(i) + " that src lacks");
      out[i] = src[i];
    }
    if (out[i] == -1) {
      if (infer_at >= 0) return shape_error(node, "shape has more than one -1");
      infer_at = static_cast<int>(i);
      continue;
    }
    if (out[i] < 0) return shape_error(node, "shape has negative dim " + std::to_string(out[i]));
    known *= out[i];
  }
  const int64_t total = num_elements(src);
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0) {
      return shape_error(
          node, "cannot reshape " + dims_to_string(src) + " to " + target_to_string(attrs.shape));
    }
    out[static_cast<size_t>(infer_at)] = total / known;
  } else if (known != total) {
    return shape_error(node, "cannot reshape " + dims_to_string(src) + " (" +
                                 std::to_string(total) + " elements) to " + dims_to_string(out));
  }
  return out;
}

Expected<Dims> gemm_shape(const Node& node, const std::vector<Dims>& in) {
  const auto& attrs = node.attrs_as<GemmAttrs>();
  DENSERT_RETURN_IF_ERROR(expect_rank(node, in[0], 2, "A"));
  DENSERT_RETURN_IF_ERROR(expect_rank(node, in[1], 2, "B"));
  const int64_t m = attrs.trans_a ? in[0][1] : in[0][0];
  const int64_t k = attrs.trans_a ? in[0][0] : in[0][1];
  const int64_t kb = attrs.trans_b ? in[1][1] : in[1][0];
  const int64_t n = attrs.trans_b ? in[1][0] : in[1][1];
  if (k != kb) {
    return shape_error(node,
                       "A has inner dim " + std::to_string(k) + ", B has " + std::to_string(kb));
  }
  Dims out = {m, n};
  if (in.size() > 2 && !in[2].empty()) {
    Dims broadcast;
    if (!broadcast_shapes(out, in[2], &broadcast) || broadcast != out) {
      return shape_error(node, "C has shape " + dims_to_string(in[2]) +
                                   ", which does not broadcast to " + dims_to_string(out));
    }
  }
  return out;
}

Expected<Dims> matmul_shape(const Node& node, const std::vector<Dims>& in) {
  const Dims& a = in[0];
  const Dims& b = in[1];
  if (a.size() < 2 || b.size() != 2) {
    return shape_error(node, "supports A of rank >= 2 and B of rank 2, found ranks " +
                                 std::to_string(a.size()) + " and " + std::to_string(b.size()));
  }
  if (a.back() != b[0]) {
    return shape_error(
        node, "A has inner dim " + std::to_string(a.back()) + ", B has " + std::to_string(b[0]));
  }
  Dims out = a;
  out.back() = b[1];
  return out;
}

Expected<Dims> squeeze_shape(const Node& node, const Dims& src) {
  const auto& attrs = node.attrs_as<AxesAttrs>();
  std::vector<bool> drop(src.size(), false);
  if (attrs.axes.empty()) {
    for (size_t d = 0; d < src.size(); ++d)
      drop[d] = src[d] == 1;
  }
  for (int64_t axis : attrs.axes) {
    DENSERT_ASSIGN_OR_RETURN(int64_t a, normalize_axis(node, axis, src.size()));
    if (src[static_cast<size_t>(a)] != 1) {
      return shape_error(node, "cannot squeeze axis " + std::to_string(a) + " of size " +
                                   std::to_string(src[static_cast<size_t>(a)]));
    }
    drop[static_cast<size_t>(a)] = true;
  }
  Dims out;
  for (size_t d = 0; d < src.size(); ++d) {
    if (!drop[d]) out.push_back(src[d]);
  }
  return out;
}

Expected<Dims> unsqueeze_shape(const Node& node, const Dims& src) {
  const auto& attrs = node.attrs_as<AxesAttrs>();
  const size_t rank = src.size() + attrs.axes.size();
  std::vector<bool> inserted(rank, false);
  for (int64_t axis : attrs.axes) {
    DENSERT_ASSIGN_OR_RETURN(int64_t a, normalize_axis(node, axis, rank));
    if (inserted[static_cast<size_t>(a)])
      return shape_error(node, "repeats axis " + std::to_string(a));
    inserted[static_cast<size_t>(a)] = true;
  }
  Dims out;
  size_t next = 0;
  for (size_t d = 0; d < rank; ++d)
    out.push_back(inserted[d] ? 1 : src[next++]);
  return out;
}

Expected<Dims> reduce_mean_shape(const Node& node, const Dims& src) {
  const auto& attrs = node.attrs_as<AxesAttrs>();
  std::vector<bool> reduced(src.size(), attrs.axes.empty());
  for (int64_t axis : attrs.axes) {
    DENSERT_ASSIGN_OR_RETURN(int64_t a, normalize_axis(node, axis, src.size()));
    reduced[static_cast<size_t>(a)] = true;
  }
  Dims out;
  for (size_t d = 0; d < src.size(); ++d) {
    if (!reduced[d]) {
      out.push_back(src[d]);
    } else if (attrs.keep_dims) {
      out.push_back(1);
    }
  }
  return out;
}

Expected<Dims> single_output_shape(const Graph& graph, const Node& node,
                                   const std::vector<Dims>& in) {
  switch (node.op) {
    case OpType::kConv:
      return conv_shape(graph, node, in);
    case OpType::kBatchNorm: {
      if (in[0].size() < 2) return shape_error(node, "src has fewer than 2 dims");
      for (size_t i = 1; i < 5; ++i) {
        if (in[i].size() != 1 || in[i][0] != in[0][1]) {
          return shape_error(node, "parameter " + std::to_string(i) + " has shape " +
                                       dims_to_string(in[i]) + ", expected [" +
                                       std::to_string(in[0][1]) + "]");
        }
      }
      return in[0];
    }
    case OpType::kRelu:
    case OpType::kClip:
    case OpType::kIdentity:
    case OpType::kDropout:
      return in[0];
    case OpType::kSoftmax: {
      DENSERT_RETURN_IF_ERROR(
          normalize_axis(node, node.attrs_as<AxisAttrs>().axis, in[0].size()).status());
      return in[0];
    }
    case OpType::kConcat:
      return concat_shape(node, in);
    case OpType::kMaxPool:
    case OpType::kAveragePool:
      return pool_shape(node, in);
    case OpType::kGlobalAveragePool: {
      DENSERT_RETURN_IF_ERROR(expect_rank(node, in[0], 4, "src"));
      return Dims{in[0][0], in[0][1], 1, 1};
    }
    case OpType::kPad: {
      const auto& pads = node.attrs_as<PadAttrs>().pads;
      if (pads.size() != 2 * in[0].size()) {
        return shape_error(node, "has " + std::to_string(pads.size()) + " pads, expected " +
                                     std::to_string(2 * in[0].size()));
      }
      Dims out = in[0];
      for (size_t d = 0; d < out.size(); ++d) {
        out[d] += pads[d] + pads[d + out.size()];
        if (out[d] < 0)
          return shape_error(node, "pads make axis " + std::to_string(d) + " negative");
      }
      return out;
    }
    case OpType::kFlatten: {
      const int64_t axis = node.attrs_as<AxisAttrs>().axis;
      if (axis < 0 || axis > static_cast<int64_t>(in[0].size())) {
        return shape_error(node, "axis " + std::to_string(axis) + " is out of range");
      }
      int64_t outer = 1;
      int64_t inner = 1;
      for (size_t d = 0; d < in[0].size(); ++d) {
        (static_cast<int64_t>(d) < axis ? outer : inner) *= in[0][d];
      }
      return Dims{outer, inner};
    }
    case OpType::kReshape:
      return reshape_shape(node, in[0]);
    case OpType::kGemm:
      return gemm_shape(node, in);
    case OpType::kMatMul:
      return matmul_shape(node, in);
    case OpType::kAdd:
    case OpType::kSub:
    case OpType::kMul:
    case OpType::kDiv: {
      Dims out;
      if (!broadcast_shapes(in[0], in[1], &out)) {
        return shape_error(node, "shapes " + dims_to_string(in[0]) + " and " +
                                     dims_to_string(in[1]) + " do not broadcast");
      }
      return out;
    }
    case OpType::kTranspose: {
      const auto& perm = node.attrs_as<TransposeAttrs>().perm;
      if (perm.size() != in[0].size()) {
        return shape_error(node, "perm has " + std::to_string(perm.size()) + " entries, rank is " +
                                     std::to_string(in[0].size()));
      }
      Dims out(perm.size());
      std::vector<bool> seen(perm.size(), false);
      for (size_t d = 0; d < perm.size(); ++d) {
        if (perm[d] < 0 || perm[d] >= static_cast<int64_t>(perm.size()) || seen[perm[d]]) {
          return shape_error(node, "perm is not a permutation");
        }
        seen[perm[d]] = true;
        out[d] = in[0][static_cast<size_t>(perm[d])];
      }
      return out;
    }
    case OpType::kSqueeze:
      return squeeze_shape(node, in[0]);
    case OpType::kUnsqueeze:
      return unsqueeze_shape(node, in[0]);
    case OpType::kReduceMean:
      return reduce_mean_shape(node, in[0]);
  }
  return Status::internal(node.describe() + ": no shape rule");
}

size_t min_inputs(OpType op) {
  switch (op) {
    case OpType::kConv:
    case OpType::kGemm:
    case OpType::kMatMul:
    case OpType::kAdd:
    case OpType::kSub:
    case OpType::kMul:
    case OpType::kDiv:
      return 2;
    case OpType::kBatchNorm:
      return 5;
    default:
      return 1;
  }
}

}  // namespace

Dims resolve_batch(const Dims& dims, int64_t batch) {
  Dims out = dims;
  for (int64_t& d : out) {
    if (d == kBatchDim) d = batch;
  }
  return out;
}

int64_t window_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t dilation,
                           int64_t pad_begin, int64_t pad_end, bool ceil_mode) {
  if (stride <= 0 || kernel <= 0 || dilation <= 0) return 0;
  const int64_t span = input + pad_begin + pad_end - ((kernel - 1) * dilation + 1);
  if (span < 0) return 0;
  int64_t size = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  if (ceil_mode && (size - 1) * stride >= input + pad_begin) --size;
  return size;
}

bool broadcast_shapes(const Dims& a, const Dims& b, Dims* result) {
  const size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) return false;
    out[i] = da == 1 ? db : da;
  }
  *result = std::move(out);
  return true;
}

Expected<std::vector<Dims>> node_output_shapes(const Graph& graph, const Node& node,
                                               const std::vector<Dims>& input_dims) {
  if (node.inputs.size() < min_inputs(node.op)) {
    return shape_error(node, "has " + std::to_string(node.inputs.size()) +
                                 " inputs, expected at least " +
                                 std::to_string(min_inputs(node.op)));
  }
  for (size_t i = 0; i < min_inputs(node.op); ++i) {
    if (node.inputs[i] == kNoValue) {
      return shape_error(node, "required input " + std::to_string(i) + " is missing");
    }
  }
  for (size_t i = 0; i < input_dims.size(); ++i) {
    for (int64_t d : input_dims[i]) {
      if (d < 0) {
        return shape_error(node, "input " + std::to_string(i) + " has unknown shape " +
                                     dims_to_string(input_dims[i]));
      }
    }
  }
  DENSERT_ASSIGN_OR_RETURN(Dims out, single_output_shape(graph, node, input_dims));
  std::vector<Dims> outputs(node.outputs.size(), out);
  return outputs;
}

Expected<std::vector<Dims>> infer_shapes(const Graph& graph, int64_t batch) {
  if (batch <= 0)
    return Status::bad_argument("batch size " + std::to_string(batch) + " must be positive");
  std::vector<Dims> shapes(graph.values.size());
  for (size_t v = 0; v < graph.values.size(); ++v) {
    if (graph.values[v].is_constant()) shapes[v] = graph.values[v].constant->dims;
  }
  for (ValueId in : graph.inputs)
    shapes[in] = resolve_batch(graph.value(in).dims, batch);
  for (const Node& node : graph.nodes) {
    std::vector<Dims> input_dims;
    input_dims.reserve(node.inputs.size());
    for (ValueId in : node.inputs)
      input_dims.push_back(in == kNoValue ? Dims{} : shapes[in]);
    DENSERT_ASSIGN_OR_RETURN(std::vector<Dims> out, node_output_shapes(graph, node, input_dims));
    for (size_t i = 0; i < node.outputs.size(); ++i)
      shapes[node.outputs[i]] = std::move(out[i]);
  }
  return shapes;
}

}  // namespace densert
