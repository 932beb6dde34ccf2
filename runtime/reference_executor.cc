// Plain implementations of every IR op. Loops are ordered so the innermost one walks
// contiguous memory; the outer ones are split across threads with OpenMP, nothing more.
#include "runtime/reference_executor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/host.h"
#include "runtime/shape_inference.h"

namespace densert {
namespace {

// Row-major strides of dims.
std::vector<int64_t> strides_of(const Dims& dims) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t d = dims.size(); d-- > 1;)
    strides[d - 1] = strides[d] * dims[d];
  return strides;
}

// Product of dims[begin, end). Extents come from the dims rather than from dividing the
// element count, which would divide by zero when some axis is empty.
int64_t dims_product(const Dims& dims, size_t begin, size_t end) {
  int64_t product = 1;
  for (size_t d = begin; d < end; ++d)
    product *= dims[d];
  return product;
}

void conv(const Node& node, const Tensor& src, const Tensor& weights, const Tensor* bias,
          Tensor& dst) {
  const auto& attrs = node.attrs_as<ConvAttrs>();
  const Window& w = attrs.window;
  const int64_t batch = src.dims[0], in_c = src.dims[1], in_h = src.dims[2], in_w = src.dims[3];
  const int64_t out_c = dst.dims[1], out_h = dst.dims[2], out_w = dst.dims[3];
  const int64_t group_in_c = in_c / attrs.group, group_out_c = out_c / attrs.group;
  const int64_t kh_size = w.kernel[0], kw_size = w.kernel[1];

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t oc = 0; oc < out_c; ++oc) {
      const int64_t g = oc / group_out_c;
      float* out = dst.data.data() + (n * out_c + oc) * out_h * out_w;
      std::fill(out, out + out_h * out_w, bias ? bias->data[oc] : 0.0f);
      for (int64_t icg = 0; icg < group_in_c; ++icg) {
        const int64_t ic = g * group_in_c + icg;
        const float* in = src.data.data() + (n * in_c + ic) * in_h * in_w;
        const float* wk = weights.data.data() + (oc * group_in_c + icg) * kh_size * kw_size;
        for (int64_t kh = 0; kh < kh_size; ++kh) {
          for (int64_t kw = 0; kw < kw_size; ++kw) {
            const float weight = wk[kh * kw_size + kw];
            const int64_t x_offset = kw * w.dilations[1] - w.pads[1];
            // Output columns whose input column ow*stride + x_offset lies inside the image.
            int64_t ow_begin = 0;
            while (ow_begin < out_w && ow_begin * w.strides[1] + x_offset < 0)
              ++ow_begin;
            int64_t ow_end = out_w;
            while (ow_end > ow_begin && (ow_end - 1) * w.strides[1] + x_offset >= in_w)
              --ow_end;
            for (int64_t oh = 0; oh < out_h; ++oh) {
              const int64_t ih = oh * w.strides[0] - w.pads[0] + kh * w.dilations[0];
              if (ih < 0 || ih >= in_h) continue;
              const float* in_row = in + ih * in_w + x_offset;
              float* out_row = out + oh * out_w;
              if (w.strides[1] == 1) {
                for (int64_t ow = ow_begin; ow < ow_end; ++ow)
                  out_row[ow] += weight * in_row[ow];
              } else {
                for (int64_t ow = ow_begin; ow < ow_end; ++ow) {
                  out_row[ow] += weight * in_row[ow * w.strides[1]];
                }
              }
            }
          }
        }
      }
      for (int64_t i = 0; i < out_h * out_w; ++i)
        out[i] = attrs.activation.apply(out[i]);
    }
  }
}

void batch_norm(const Node& node, const std::vector<const Tensor*>& in, Tensor& dst) {
  const auto& attrs = node.attrs_as<BatchNormAttrs>();
  const Tensor& src = *in[0];
  const int64_t batch = src.dims[0], channels = src.dims[1];
  const int64_t plane = dims_product(src.dims, 2, src.dims.size());
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float scale = in[1]->data[c] / std::sqrt(in[4]->data[c] + attrs.epsilon);
      const float shift = in[2]->data[c] - in[3]->data[c] * scale;
      const float* s = src.data.data() + (n * channels + c) * plane;
      float* d = dst.data.data() + (n * channels + c) * plane;
      for (int64_t i = 0; i < plane; ++i)
        d[i] = attrs.activation.apply(s[i] * scale + shift);
    }
  }
}

template <typename F>
void unary(const Tensor& src, Tensor& dst, F f) {
  for (size_t i = 0; i < src.data.size(); ++i)
    dst.data[i] = f(src.data[i]);
}

void concat(const Node& node, const std::vector<const Tensor*>& in, Tensor& dst) {
  const size_t axis = static_cast<size_t>(node.attrs_as<AxisAttrs>().axis);
  int64_t outer = 1;
  for (size_t d = 0; d < axis; ++d)
    outer *= dst.dims[d];
  int64_t inner = 1;
  for (size_t d = axis + 1; d < dst.dims.size(); ++d)
    inner *= dst.dims[d];
  const int64_t dst_row = dst.dims[axis] * inner;
  int64_t offset = 0;
  for (const Tensor* t : in) {
    const int64_t row = t->dims[axis] * inner;
    for (int64_t o = 0; o < outer; ++o) {
      std::copy(t->data.begin() + o * row, t->data.begin() + (o + 1) * row,
                dst.data.begin() + o * dst_row + offset);
    }
    offset += row;
  }
}

void pool(const Node& node, const Tensor& src, Tensor& dst) {
  const auto& attrs = node.attrs_as<PoolAttrs>();
  const Window& w = attrs.window;
  const bool is_max = node.op == OpType::kMaxPool;
  const int64_t planes = src.dims[0] * src.dims[1];
  const int64_t in_h = src.dims[2], in_w = src.dims[3], out_h = dst.dims[2], out_w = dst.dims[3];
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = src.data.data() + p * in_h * in_w;
    float* out = dst.data.data() + p * out_h * out_w;
    for (int64_t oh = 0; oh < out_h; ++oh) {
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const int64_t h0 = oh * w.strides[0] - w.pads[0];
        const int64_t w0 = ow * w.strides[1] - w.pads[1];
        float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
        int64_t count = 0;
        for (int64_t kh = 0; kh < w.kernel[0]; ++kh) {
          const int64_t ih = h0 + kh * w.dilations[0];
          if (ih < 0 || ih >= in_h) continue;
          for (int64_t kw = 0; kw < w.kernel[1]; ++kw) {
            const int64_t iw = w0 + kw * w.dilations[1];
            if (iw < 0 || iw >= in_w) continue;
            const float x = in[ih * in_w + iw];
            acc = is_max ? std::max(acc, x) : acc + x;
            ++count;
          }
        }
        if (!is_max) {
          if (attrs.count_include_pad) {
            // Pads count, but not the part of a ceil_mode window past the end padding.
            const int64_t h1 = std::min(h0 + w.kernel[0], in_h + w.pads[2]);
            const int64_t w1 = std::min(w0 + w.kernel[1], in_w + w.pads[3]);
            count = (h1 - h0) * (w1 - w0);
          }
          acc = count > 0 ? acc / static_cast<float>(count) : 0.0f;
        }
        out[oh * out_w + ow] = acc;
      }
    }
  }
}

void global_average_pool(const Tensor& src, Tensor& dst) {
  const int64_t planes = src.dims[0] * src.dims[1];
  const int64_t size = src.dims[2] * src.dims[3];
  for (int64_t p = 0; p < planes; ++p) {
    double sum = 0.0;
    for (int64_t i = 0; i < size; ++i)
      sum += src.data[p * size + i];
    dst.data[p] = static_cast<float>(sum / static_cast<double>(size));
  }
}

void pad(const Node& node, const Tensor& src, Tensor& dst) {
  const auto& attrs = node.attrs_as<PadAttrs>();
  const size_t rank = src.dims.size();
  std::fill(dst.data.begin(), dst.data.end(), attrs.value);
  const auto src_strides = strides_of(src.dims);
  const auto dst_strides = strides_of(dst.dims);
  for (int64_t i = 0; i < src.numel(); ++i) {
    int64_t dst_index = 0;
    bool inside = true;
    for (size_t d = 0; d < rank; ++d) {
      const int64_t coord = (i / src_strides[d]) % src.dims[d] + attrs.pads[d];
      if (coord < 0 || coord >= dst.dims[d]) inside = false;
      dst_index += coord * dst_strides[d];
    }
    if (inside) dst.data[dst_index] = src.data[i];
  }
}

void gemm(const Node& node, const std::vector<const Tensor*>& in, Tensor& dst) {
  const auto& attrs = node.attrs_as<GemmAttrs>();
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  const Tensor* c = in.size() > 2 ? in[2] : nullptr;
  const int64_t m = dst.dims[0], n = dst.dims[1];
  const int64_t k = attrs.trans_a ? a.dims[0] : a.dims[1];
  Dims c_dims;
  std::vector<int64_t> c_strides;
  if (c) {
    // Broadcast C to [m, n] by giving its size-1 (or missing) dims a zero stride.
    c_dims = c->dims;
    while (c_dims.size() < 2)
      c_dims.insert(c_dims.begin(), 1);
    c_strides = strides_of(c_dims);
    for (size_t d = 0; d < 2; ++d)
      if (c_dims[d] == 1) c_strides[d] = 0;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float av = attrs.trans_a ? a.data[p * m + i] : a.data[i * k + p];
        const float bv = attrs.trans_b ? b.data[j * k + p] : b.data[p * n + j];
        acc += static_cast<double>(av) * bv;
      }
      float value = attrs.alpha * static_cast<float>(acc);
      if (c) value += attrs.beta * c->data[i * c_strides[0] + j * c_strides[1]];
      dst.data[i * n + j] = attrs.activation.apply(value);
    }
  }
}

void matmul(const Tensor& a, const Tensor& b, Tensor& dst) {
  const int64_t k = b.dims[0], n = b.dims[1];
  const int64_t rows = dims_product(a.dims, 0, a.dims.size() - 1);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; ++p)
        acc += static_cast<double>(a.data[i * k + p]) * b.data[p * n + j];
      dst.data[i * n + j] = static_cast<float>(acc);
    }
  }
}

void binary(OpType op, const Tensor& a, const Tensor& b, Tensor& dst) {
  const size_t rank = dst.dims.size();
  // Strides of a and b laid over dst's dims, zero where they broadcast.
  const auto broadcast_strides = [&](const Tensor& t) {
    Dims dims(rank - t.dims.size(), 1);
    dims.insert(dims.end(), t.dims.begin(), t.dims.end());
    auto strides = strides_of(dims);
    for (size_t d = 0; d < rank; ++d)
      if (dims[d] == 1) strides[d] = 0;
    return strides;
  };
  const auto a_strides = broadcast_strides(a);
  const auto b_strides = broadcast_strides(b);
  const auto dst_strides = strides_of(dst.dims);
  for (int64_t i = 0; i < dst.numel(); ++i) {
    int64_t ai = 0, bi = 0;
    for (size_t d = 0; d < rank; ++d) {
      const int64_t coord = (i / dst_strides[d]) % dst.dims[d];
      ai += coord * a_strides[d];
      bi += coord * b_strides[d];
    }
    const float x = a.data[ai], y = b.data[bi];
    switch (op) {
      case OpType::kAdd:
        dst.data[i] = x + y;
        break;
      case OpType::kSub:
        dst.data[i] = x - y;
        break;
      case OpType::kMul:
        dst.data[i] = x * y;
        break;
      default:
        dst.data[i] = x / y;
        break;
    }
  }
}

void softmax(const Node& node, const Tensor& src, Tensor& dst) {
  const size_t axis = static_cast<size_t>(node.attrs_as<AxisAttrs>().axis);
  const int64_t extent = src.dims[axis];
  int64_t inner = 1;
  for (size_t d = axis + 1; d < src.dims.size(); ++d)
    inner *= src.dims[d];
  const int64_t outer = dims_product(src.dims, 0, axis);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const float* s = src.data.data() + o * extent * inner + i;
      float* d = dst.data.data() + o * extent * inner + i;
      float max_value = -std::numeric_limits<float>::infinity();
      for (int64_t e = 0; e < extent; ++e)
        max_value = std::max(max_value, s[e * inner]);
      double sum = 0.0;
      for (int64_t e = 0; e < extent; ++e)
        sum += std::exp(static_cast<double>(s[e * inner] - max_value));
      for (int64_t e = 0; e < extent; ++e) {
        d[e * inner] =
            static_cast<float>(std::exp(static_cast<double>(s[e * inner] - max_value)) / sum);
      }
    }
  }
}

void transpose(const Node& node, const Tensor& src, Tensor& dst) {
  const auto& perm = node.attrs_as<TransposeAttrs>().perm;
  const auto src_strides = strides_of(src.dims);
  const auto dst_strides = strides_of(dst.dims);
  for (int64_t i = 0; i < dst.numel(); ++i) {
    int64_t src_index = 0;
    for (size_t d = 0; d < perm.size(); ++d) {
      src_index += ((i / dst_strides[d]) % dst.dims[d]) * src_strides[perm[d]];
    }
    dst.data[i] = src.data[src_index];
  }
}

void reduce_mean(const Node& node, const Tensor& src, Tensor& dst) {
  // Sum each src element into the dst element with its reduced coordinates set to zero;
  // dst's row-major order is the same whether or not reduced axes are kept.
  const auto& axes = node.attrs_as<AxesAttrs>().axes;
  const size_t rank = src.dims.size();
  std::vector<bool> reduced(rank, axes.empty());
  for (int64_t axis : axes)
    reduced[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis)] = true;
  Dims kept_dims = src.dims;
  for (size_t d = 0; d < rank; ++d)
    if (reduced[d]) kept_dims[d] = 1;
  const auto src_strides = strides_of(src.dims);
  const auto kept_strides = strides_of(kept_dims);
  std::vector<double> sums(static_cast<size_t>(dst.numel()), 0.0);
  for (int64_t i = 0; i < src.numel(); ++i) {
    int64_t bucket = 0;
    for (size_t d = 0; d < rank; ++d) {
      if (!reduced[d]) bucket += ((i / src_strides[d]) % src.dims[d]) * kept_strides[d];
    }
    sums[static_cast<size_t>(bucket)] += src.data[i];
  }
  const double count = static_cast<double>(src.numel()) / static_cast<double>(dst.numel());
  for (size_t i = 0; i < sums.size(); ++i)
    dst.data[i] = static_cast<float>(sums[i] / count);
}

}  // namespace

Expected<int64_t> batch_from_inputs(const Graph& graph, const std::vector<Dims>& input_dims) {
  if (input_dims.size() != graph.inputs.size()) {
    return Status::bad_argument("model takes " + std::to_string(graph.inputs.size()) + " inputs, " +
                                std::to_string(input_dims.size()) + " given");
  }
  int64_t batch = -1;
  for (size_t i = 0; i < input_dims.size(); ++i) {
    const Value& value = graph.value(graph.inputs[i]);
    const Dims& given = input_dims[i];
    bool matches = given.size() == value.dims.size();
    for (size_t d = 0; matches && d < given.size(); ++d) {
      if (value.dims[d] == kBatchDim) {
        if (given[d] <= 0 || (batch >= 0 && given[d] != batch)) matches = false;
        batch = given[d];
      } else if (given[d] != value.dims[d]) {
        matches = false;
      }
    }
    if (!matches) {
      return Status::bad_argument("input \"" + value.name + "\" has shape " +
                                  dims_to_string(given) + ", expected " +
                                  dims_to_string(value.dims));
    }
  }
  return batch < 0 ? 1 : batch;
}

Expected<std::vector<Tensor>> run_reference_node(const Graph& graph, const Node& node,
                                                 const std::vector<const Tensor*>& in) {
  std::vector<Dims> input_dims;
  for (const Tensor* t : in)
    input_dims.push_back(t ? t->dims : Dims{});
  DENSERT_ASSIGN_OR_RETURN(std::vector<Dims> out_dims, node_output_shapes(graph, node, input_dims));
  std::vector<Tensor> out;
  for (Dims& dims : out_dims)
    out.emplace_back(std::move(dims));
  Tensor& dst = out[0];
  switch (node.op) {
    case OpType::kConv:
      conv(node, *in[0], *in[1], in.size() > 2 ? in[2] : nullptr, dst);
      break;
    case OpType::kBatchNorm:
      batch_norm(node, in, dst);
      break;
    case OpType::kRelu:
      unary(*in[0], dst, [](float x) { return x > 0.0f ? x : 0.0f; });
      break;
    case OpType::kClip: {
      const auto& attrs = node.attrs_as<ClipAttrs>();
      unary(*in[0], dst, [&](float x) { return std::min(std::max(x, attrs.min), attrs.max); });
      break;
    }
    case OpType::kIdentity:
    case OpType::kDropout:
    case OpType::kFlatten:
    case OpType::kReshape:
    case OpType::kSqueeze:
    case OpType::kUnsqueeze:
      dst.data = in[0]->data;
      break;
    case OpType::kConcat:
      concat(node, in, dst);
      break;
    case OpType::kMaxPool:
    case OpType::kAveragePool:
      pool(node, *in[0], dst);
      break;
    case OpType::kGlobalAveragePool:
      global_average_pool(*in[0], dst);
      break;
    case OpType::kPad:
      pad(node, *in[0], dst);
      break;
    case OpType::kGemm:
      gemm(node, in, dst);
      break;
    case OpType::kMatMul:
      matmul(*in[0], *in[1], dst);
      break;
    case OpType::kAdd:
    case OpType::kSub:
    case OpType::kMul:
    case OpType::kDiv:
      binary(node.op, *in[0], *in[1], dst);
      break;
    case OpType::kSoftmax:
      softmax(node, *in[0], dst);
      break;
    case OpType::kTranspose:
      transpose(node, *in[0], dst);
      break;
    case OpType::kReduceMean:
      reduce_mean(node, *in[0], dst);
      break;
  }
  for (size_t i = 1; i < out.size(); ++i)
    out[i].data = out[0].data;
  return out;
}

Expected<int64_t> batch_from_inputs(const Graph& graph, const std::vector<Tensor>& inputs) {
  std::vector<Dims> input_dims;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (static_cast<int64_t>(t.data.size()) != t.numel()) {
      const std::string name =
          i < graph.inputs.size() ? graph.value(graph.inputs[i]).name : std::to_string(i);
      return Status::bad_argument("input \"" + name + "\" holds " + std::to_string(t.data.size()) +
                                  " values for shape " + dims_to_string(t.dims));
    }
    input_dims.push_back(t.dims);
  }
  return batch_from_inputs(graph, input_dims);
}

Expected<std::vector<Tensor>> run_reference(const Graph& graph, const std::vector<Tensor>& inputs) {
  DENSERT_ASSIGN_OR_RETURN(const int64_t batch, batch_from_inputs(graph, inputs));
  // A value larger than the machine's memory is refused before anything is allocated.
  DENSERT_ASSIGN_OR_RETURN(const std::vector<Dims> dims, infer_shapes(graph, batch));
  if (const int64_t memory = physical_memory_bytes(); memory > 0) {
    for (size_t v = 0; v < dims.size(); ++v) {
      if (graph.values[v].is_constant()) continue;
      const int64_t elements = num_elements(dims[v]);
      if (elements > memory / 4) {
        const int64_t bytes = elements > INT64_MAX / 4 ? INT64_MAX : elements * 4;
        return Status::unsupported("value \"" + graph.values[v].name + "\" of shape " +
                                   dims_to_string(dims[v]) + " takes " + bytes_to_string(bytes) +
                                   ", more than this machine's memory (" + bytes_to_string(memory) +
                                   ")");
      }
    }
  }

  // Values live until their last reader has run.
  std::vector<int> remaining_reads(graph.values.size(), 0);
  for (const Node& node : graph.nodes) {
    for (ValueId in : node.inputs) {
      if (in != kNoValue) ++remaining_reads[in];
    }
  }
  for (ValueId out : graph.outputs)
    ++remaining_reads[out];

  std::vector<Tensor> values(graph.values.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    values[graph.inputs[i]] = inputs[i];
  for (const Node& node : graph.nodes) {
    std::vector<const Tensor*> in;
    for (ValueId id : node.inputs) {
      if (id == kNoValue) {
        in.push_back(nullptr);
      } else {
        in.push_back(graph.value(id).is_constant() ? graph.value(id).constant.get() : &values[id]);
      }
    }
    DENSERT_ASSIGN_OR_RETURN(std::vector<Tensor> out, run_reference_node(graph, node, in));
    for (size_t i = 0; i < node.outputs.size(); ++i)
      values[node.outputs[i]] = std::move(out[i]);
    for (ValueId id : node.inputs) {
      if (id != kNoValue && !graph.value(id).is_constant() && --remaining_reads[id] == 0) {
        values[id] = Tensor();
      }
    }
  }
  std::vector<Tensor> outputs;
  for (ValueId out : graph.outputs) {
    outputs.push_back(graph.value(out).is_constant() ? *graph.value(out).constant : values[out]);
  }
  return outputs;
}

}  // namespace densert
