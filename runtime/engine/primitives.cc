// One step per node: oneDNN primitives with their weights reordered once, densert's fused
// kernel, or the reference implementation where neither applies.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "runtime/engine/plan.h"
#include "runtime/log.h"

namespace densert {

using engine_detail::desc_of;
using engine_detail::plain_desc;
using engine_detail::StepKind;
using engine_detail::Tag;

namespace {

using engine_detail::Placement;

double conv_flops(const Graph& graph, const Node& node, const std::vector<Dims>& dims) {
  const Dims& w = graph.value(node.inputs[1]).dims;
  const Dims& out = dims[node.outputs[0]];
  return 2.0 * static_cast<double>(out[1] * out[2] * out[3]) *
         static_cast<double>(w[1] * w[2] * w[3]);
}

// A convolution's weights and bias over physical channels: [dst][src][kh][kw] and [dst], zero
// where either side is padding. A plain src keeps its logical channels.
std::pair<Tensor, Tensor> expand_conv_weights(const Graph& graph, const Node& conv,
                                              const Placement& src, const Placement& dst) {
  const Tensor& weights = graph.constant(conv.inputs[1]);
  const int64_t out_c = weights.dims[0], in_c = weights.dims[1];
  const int64_t kh = weights.dims[2], kw = weights.dims[3];
  const int64_t src_phys = src.blocked ? src.physical_channels : in_c;
  Tensor expanded({dst.physical_channels, src_phys, kh, kw});
  Tensor bias({dst.physical_channels});
  for (int64_t o = 0; o < out_c; ++o) {
    const int64_t po = dst.channel_map[o];
    for (int64_t i = 0; i < in_c; ++i) {
      const int64_t pi = src.blocked ? src.channel_map[i] : i;
      std::copy_n(weights.data.begin() + (o * in_c + i) * kh * kw, kh * kw,
                  expanded.data.begin() + (po * src_phys + pi) * kh * kw);
    }
    if (conv.inputs.size() > 2) bias.data[po] = graph.constant(conv.inputs[2]).data[o];
  }
  return {std::move(expanded), std::move(bias)};
}

// Attributes of every primitive: its scratchpad is memory of the execution context (so that
// contexts run concurrently whatever oneDNN was built with), plus a fused activation.
dnnl::primitive_attr activation_attr(const Activation& act = {}) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (act.none()) return attr;
  dnnl::post_ops ops;
  if (act.kind == Activation::Kind::kRelu) {
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  } else {
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, act.min, act.max);
  }
  attr.set_post_ops(ops);
  return attr;
}

// Why the engine runs a node with the reference implementation, or empty if it need not.
std::string reference_reason(const Graph& graph, const Node& node,
                             const std::vector<Placement>& placements) {
  const Placement& src = placements[node.inputs[0]];
  const Placement& dst = placements[node.outputs[0]];
  switch (node.op) {
    case OpType::kConv:
      if (node.attrs_as<ConvAttrs>().group != 1) return "grouped convolution";
      return "";
    case OpType::kBatchNorm:
    case OpType::kRelu:
    case OpType::kClip:
    case OpType::kMaxPool:
    case OpType::kAveragePool:
      if (src.blocked != dst.blocked || src.dims.size() != 4) return "layout change inside the op";
      if (src.blocked &&
          (src.physical_channels != dst.physical_channels || src.channel_map != dst.channel_map)) {
        return "src and dst channel layouts differ";
      }
      if (node.op == OpType::kAveragePool) {
        const auto& a = node.attrs_as<PoolAttrs>();
        if (a.count_include_pad && a.ceil_mode) return "ceil_mode with count_include_pad";
      }
      return "";
    case OpType::kGlobalAveragePool:
      return src.blocked == dst.blocked ? "" : "layout change inside the op";
    case OpType::kSoftmax:
      return src.blocked ? "blocked src" : "";
    case OpType::kGemm: {
      const auto& a = node.attrs_as<GemmAttrs>();
      if (a.trans_a) return "transposed A";
      if (!graph.value(node.inputs[1]).is_constant()) return "B is not a constant";
      if (node.inputs.size() > 2) {
        const Value& c = graph.value(node.inputs[2]);
        const int64_t n =
            a.trans_b ? graph.value(node.inputs[1]).dims[0] : graph.value(node.inputs[1]).dims[1];
        if (!c.is_constant() || c.constant->numel() != n) return "C is not a per-output constant";
      }
      return src.blocked ? "blocked src" : "";
    }
    default:
      return std::string(op_type_name(node.op)) + " runs on the reference implementation";
  }
}

}  // namespace

int Engine::Plan::add_constant(const Tensor& tensor, const memory::desc& desired,
                               dnnl::stream& stream) {
  memory::dims d(tensor.dims.begin(), tensor.dims.end());
  memory::desc source_desc = plain_desc(tensor.dims, memory::data_type::f32);  // graph constants
  memory source(source_desc, cpu, const_cast<float*>(tensor.data.data()));
  memory target(desired, cpu);
  if (desired == source_desc) {
    std::memcpy(target.get_data_handle(), tensor.data.data(), tensor.data.size() * sizeof(float));
  } else {
    dnnl::reorder(source, target).execute(stream, source, target);
    stream.wait();
  }
  summary.weight_bytes += static_cast<int64_t>(desired.get_size());
  constants.push_back(target);
  return static_cast<int>(constants.size() - 1);
}

Status Engine::Plan::add_norm_conv(Step& step, const NormChain& chain, const Node& conv,
                                   const std::vector<Dims>& dims) {
  const Node& norm = graph.nodes[chain.norm];
  const bool pool = chain.pool >= 0;
  const Placement& src = placements[norm.inputs[0]];
  const Placement& dst = placements[conv.outputs[0]];
  const auto& norm_attrs = norm.attrs_as<BatchNormAttrs>();
  const auto& conv_attrs = conv.attrs_as<ConvAttrs>();
  const int64_t in_c = graph.value(conv.inputs[1]).dims[1];
  const int64_t src_phys = src.physical_channels;
  // y = x * scale + shift per physical channel; padding channels map to zero.
  std::vector<float> scale(src_phys, 0.0f), shift(src_phys, 0.0f);
  for (int64_t c = 0; c < in_c; ++c) {
    const float gamma = graph.constant(norm.inputs[1]).data[c];
    const float beta = graph.constant(norm.inputs[2]).data[c];
    const float mean = graph.constant(norm.inputs[3]).data[c];
    const float var = graph.constant(norm.inputs[4]).data[c];
    const float a = gamma / std::sqrt(var + norm_attrs.epsilon);
    scale[src.channel_map[c]] = a;
    shift[src.channel_map[c]] = beta - mean * a;
  }
  const auto [expanded, bias] = expand_conv_weights(graph, conv, src, dst);
  // The kernel runs only on plans in 16-channel blocks (find_norm_convs): one lane mask a block.
  const auto lanes = [](const Placement& p) {
    std::vector<uint16_t> lanes(static_cast<size_t>(p.physical_channels / 16), 0);
    for (int64_t phys : p.channel_map)
      lanes[static_cast<size_t>(phys / 16)] |= static_cast<uint16_t>(1u << (phys % 16));
    return lanes;
  };
  const NormConv1x1Shape shape{src_phys,    dst.physical_channels, src.height(),
                               src.width(), pool ? 2 : 1,          lanes(src),
                               lanes(dst)};
  step.norm_conv = std::make_shared<NormConv1x1>(shape, scale.data(), shift.data(),
                                                 norm_activation(chain), expanded.data.data(),
                                                 bias.data.data(), conv_attrs.activation, threads);
  step.norm_src = norm.inputs[0];
  step.info.implementation = "densert_norm_conv1x1:avx512";
  step.info.flops = conv_flops(graph, conv, dims);
  summary.weight_bytes += step.norm_conv->weight_bytes();
  return {};
}

Status Engine::Plan::add_conv(Step& step, const Node& node, const std::vector<Dims>& dims,
                              dnnl::stream& stream) {
  const auto& attrs = node.attrs_as<ConvAttrs>();
  const Placement& src = placements[node.inputs[0]];
  const Placement& dst = placements[node.outputs[0]];
  const auto [expanded, bias] = expand_conv_weights(graph, node, src, dst);
  const int64_t dst_phys = expanded.dims[0], src_phys = expanded.dims[1];
  const int64_t kh = expanded.dims[2], kw = expanded.dims[3];
  const Window& w = attrs.window;
  const memory::desc weights_any({dst_phys, src_phys, kh, kw}, data_type, Tag::any);
  const memory::desc bias_desc({dst_phys}, memory::data_type::f32, Tag::a);  // f32 for any type
  const auto make_desc = [&](dnnl::algorithm algorithm) {
    return dnnl::convolution_forward::desc(
        dnnl::prop_kind::forward_inference, algorithm, desc_of(src, data_type), weights_any,
        bias_desc, desc_of(dst, data_type), {w.strides[0], w.strides[1]},
        {w.dilations[0] - 1, w.dilations[1] - 1}, {w.pads[0], w.pads[1]}, {w.pads[2], w.pads[3]});
  };
  // The primitive descriptor's list of implementations refers to the op descriptor and the
  // attributes: both must outlive any next_impl() call.
  const dnnl::primitive_attr attr = activation_attr(attrs.activation);
  const dnnl::convolution_forward::desc winograd_desc =
      make_desc(dnnl::algorithm::convolution_winograd);
  const auto make_pd = [&](dnnl::algorithm algorithm) {
    if (algorithm == dnnl::algorithm::convolution_winograd) {
      return dnnl::convolution_forward::primitive_desc(winograd_desc, attr, cpu);
    }
    return dnnl::convolution_forward::primitive_desc(make_desc(algorithm), attr, cpu);
  };
  // 3x3 stride-1 convolutions run faster as Winograd on maps of 14x14 and up. oneDNN offers
  // F(2x2,3x3) first; its F(4x4,3x3) kernel does fewer multiplications and beats it on maps of
  // 28x28 and up (measured on DenseNet's 128 -> 32 layers: 56x56 1.09 -> 0.80 ms on one core,
  // 0.55 -> 0.46 ms on two). Its rounding stays near 1e-5 of the largest output on every
  // DenseNet fixture (1.1e-5 on DenseNet-121; the tests allow 1e-4).
  const bool winograd_shape = kh == 3 && kw == 3 && w.strides[0] == 1 && w.strides[1] == 1 &&
                              w.dilations[0] == 1 && w.dilations[1] == 1 && dst.height() >= 14 &&
                              dst.width() >= 14;
  const bool prefer_4x3 = dst.height() >= 28 && dst.width() >= 28;
  dnnl::convolution_forward::primitive_desc pd;
  if (winograd && winograd_shape) {
    try {
      pd = make_pd(dnnl::algorithm::convolution_winograd);
      const auto is_4x3 = [&] {
        return std::string(pd.impl_info_str()).find("wino_4x3") != std::string::npos;
      };
      if (prefer_4x3) {
        while (!is_4x3() && pd.next_impl()) {
        }
        // Not offered here: back to oneDNN's first choice.
        if (!is_4x3()) pd = make_pd(dnnl::algorithm::convolution_winograd);
      }
    } catch (const dnnl::error&) {
      pd = make_pd(dnnl::algorithm::convolution_direct);  // no Winograd kernel for this case
    }
  } else {
    pd = make_pd(dnnl::algorithm::convolution_direct);
  }
  step.primitive = dnnl::convolution_forward(pd);
  step.scratchpad = pd.scratchpad_desc();
  step.info.implementation = pd.impl_info_str();
  step.info.flops = conv_flops(graph, node, dims);
  step.args = {{DNNL_ARG_SRC, node.inputs[0]},
               {DNNL_ARG_WEIGHTS, kNoValue, add_constant(expanded, pd.weights_desc(), stream)},
               {DNNL_ARG_BIAS, kNoValue, add_constant(bias, bias_desc, stream)},
               {DNNL_ARG_DST, node.outputs[0]}};
  return {};
}

Status Engine::Plan::add_batch_norm(Step& step, const Node& node, dnnl::stream& stream) {
  const auto& attrs = node.attrs_as<BatchNormAttrs>();
  const Placement& src = placements[node.inputs[0]];
  const int64_t channels = src.dims[1];
  const int64_t phys = src.blocked ? src.physical_channels : channels;
  // Padding channels get scale 0 and shift 0, so they stay zero.
  std::array<Tensor, 4> params = {Tensor({phys}), Tensor({phys}), Tensor({phys}), Tensor({phys})};
  std::fill(params[3].data.begin(), params[3].data.end(), 1.0f);  // variance
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t p = src.blocked ? src.channel_map[c] : c;
    params[0].data[p] = graph.constant(node.inputs[1]).data[c];  // scale
    params[1].data[p] = graph.constant(node.inputs[2]).data[c];  // shift
    params[2].data[p] = graph.constant(node.inputs[3]).data[c];  // mean
    params[3].data[p] = graph.constant(node.inputs[4]).data[c];  // variance
  }
  auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
               dnnl::normalization_flags::use_shift;
  const bool relu = attrs.activation.kind == Activation::Kind::kRelu;
  if (relu) flags |= dnnl::normalization_flags::fuse_norm_relu;
  const dnnl::primitive_attr attr = activation_attr(relu ? Activation{} : attrs.activation);
  dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_inference,
                                               desc_of(src, data_type), attrs.epsilon, flags);
  dnnl::batch_normalization_forward::primitive_desc pd(desc, attr, cpu);
  step.primitive = dnnl::batch_normalization_forward(pd);
  step.scratchpad = pd.scratchpad_desc();
  step.info.implementation = pd.impl_info_str();
  const memory::desc param_desc({phys}, memory::data_type::f32, Tag::a);
  step.args = {{DNNL_ARG_SRC, node.inputs[0]},
               {DNNL_ARG_SCALE, kNoValue, add_constant(params[0], param_desc, stream)},
               {DNNL_ARG_SHIFT, kNoValue, add_constant(params[1], param_desc, stream)},
               {DNNL_ARG_MEAN, kNoValue, add_constant(params[2], param_desc, stream)},
               {DNNL_ARG_VARIANCE, kNoValue, add_constant(params[3], param_desc, stream)},
               {DNNL_ARG_DST, node.outputs[0]}};
  return {};
}

Status Engine::Plan::add_eltwise(Step& step, const Node& node) {
  const Placement& src = placements[node.inputs[0]];
  float lo = 0.0f, hi = 0.0f;
  dnnl::algorithm alg = dnnl::algorithm::eltwise_relu;
  if (node.op == OpType::kClip) {
    alg = dnnl::algorithm::eltwise_clip;
    lo = node.attrs_as<ClipAttrs>().min;
    hi = node.attrs_as<ClipAttrs>().max;
  }
  dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, desc_of(src, data_type),
                                   lo, hi);
  dnnl::eltwise_forward::primitive_desc pd(desc, activation_attr(), cpu);
  step.primitive = dnnl::eltwise_forward(pd);
  step.scratchpad = pd.scratchpad_desc();
  step.info.implementation = pd.impl_info_str();
  step.args = {{DNNL_ARG_SRC, node.inputs[0]}, {DNNL_ARG_DST, node.outputs[0]}};
  return {};
}

Status Engine::Plan::add_pool(Step& step, const Node& node, const std::vector<Dims>& dims) {
  const Placement& src = placements[node.inputs[0]];
  const Placement& dst = placements[node.outputs[0]];
  Window w;
  dnnl::algorithm alg = dnnl::algorithm::pooling_avg_exclude_padding;
  if (node.op == OpType::kGlobalAveragePool) {
    w.kernel = {src.height(), src.width()};
  } else {
    const auto& attrs = node.attrs_as<PoolAttrs>();
    w = attrs.window;
    if (node.op == OpType::kMaxPool) alg = dnnl::algorithm::pooling_max;
    if (node.op == OpType::kAveragePool && attrs.count_include_pad) {
      alg = dnnl::algorithm::pooling_avg_include_padding;
    }
  }
  // oneDNN derives the output size from the padding: give the end padding that yields the
  // size ONNX asks for (ceil_mode may need more than the model's).
  memory::dims pad_end(2);
  const int64_t out_sizes[2] = {dst.height(), dst.width()};
  const int64_t in_sizes[2] = {src.height(), src.width()};
  for (int a = 0; a < 2; ++a) {
    const int64_t extent = (w.kernel[a] - 1) * w.dilations[a] + 1;
    pad_end[a] = (out_sizes[a] - 1) * w.strides[a] + extent - in_sizes[a] - w.pads[a];
  }
  dnnl::pooling_v2_forward::desc desc(
      dnnl::prop_kind::forward_inference, alg, desc_of(src, data_type), desc_of(dst, data_type),
      {w.strides[0], w.strides[1]}, {w.kernel[0], w.kernel[1]},
      {w.dilations[0] - 1, w.dilations[1] - 1}, {w.pads[0], w.pads[1]}, pad_end);
  dnnl::pooling_v2_forward::primitive_desc pd(desc, activation_attr(), cpu);
  step.primitive = dnnl::pooling_v2_forward(pd);
  step.scratchpad = pd.scratchpad_desc();
  step.info.implementation = pd.impl_info_str();
  step.args = {{DNNL_ARG_SRC, node.inputs[0]}, {DNNL_ARG_DST, node.outputs[0]}};
  (void)dims;
  return {};
}

Status Engine::Plan::add_gemm(Step& step, const Node& node, dnnl::stream& stream) {
  const auto& attrs = node.attrs_as<GemmAttrs>();
  const Tensor& b = graph.constant(node.inputs[1]);
  const int64_t k = attrs.trans_b ? b.dims[1] : b.dims[0];
  const int64_t n = attrs.trans_b ? b.dims[0] : b.dims[1];
  Tensor weights({n, k});  // oneDNN's inner product takes [out, in]; alpha is folded in
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t p = 0; p < k; ++p) {
      weights.data[j * k + p] =
          attrs.alpha * (attrs.trans_b ? b.data[j * k + p] : b.data[p * n + j]);
    }
  }
  Tensor bias({n});
  if (node.inputs.size() > 2) {
    const Tensor& c = graph.constant(node.inputs[2]);
    for (int64_t j = 0; j < n; ++j)
      bias.data[j] = attrs.beta * c.data[j];
  }
  const memory::desc weights_any({n, k}, data_type, Tag::any);
  const memory::desc bias_desc({n}, memory::data_type::f32, Tag::a);
  dnnl::inner_product_forward::desc desc(
      dnnl::prop_kind::forward_inference, desc_of(placements[node.inputs[0]], data_type),
      weights_any, bias_desc, desc_of(placements[node.outputs[0]], data_type));
  dnnl::inner_product_forward::primitive_desc pd(desc, activation_attr(attrs.activation), cpu);
  step.primitive = dnnl::inner_product_forward(pd);
  step.scratchpad = pd.scratchpad_desc();
  step.info.implementation = pd.impl_info_str();
  step.info.flops = 2.0 * static_cast<double>(n * k);
  step.args = {{DNNL_ARG_SRC, node.inputs[0]},
               {DNNL_ARG_WEIGHTS, kNoValue, add_constant(weights, pd.weights_desc(), stream)},
               {DNNL_ARG_BIAS, kNoValue, add_constant(bias, bias_desc, stream)},
               {DNNL_ARG_DST, node.outputs[0]}};
  return {};
}

Status Engine::Plan::add_softmax(Step& step, const Node& node) {
  const int axis = static_cast<int>(node.attrs_as<AxisAttrs>().axis);
  dnnl::softmax_forward::desc desc(dnnl::prop_kind::forward_inference,
                                   desc_of(placements[node.inputs[0]], data_type), axis);
  dnnl::softmax_forward::primitive_desc pd(desc, activation_attr(), cpu);
  step.primitive = dnnl::softmax_forward(pd);
  step.scratchpad = pd.scratchpad_desc();
  step.info.implementation = pd.impl_info_str();
  step.args = {{DNNL_ARG_SRC, node.inputs[0]}, {DNNL_ARG_DST, node.outputs[0]}};
  return {};
}

Status Engine::Plan::build_steps(const std::vector<Dims>& dims) {
  dnnl::stream stream(cpu);
  std::set<ValueId> views;
  for (const DenseBlock& block : graph.blocks)
    views.insert(block.views.begin(), block.views.end());
  // A constant that only primitives read lives on in their own weight memory: its data is
  // released as soon as its last reader is built, which keeps load-time memory low.
  std::vector<int> unbuilt_readers(graph.values.size(), 0);
  std::vector<bool> read_by_non_primitive(graph.values.size(), false);
  for (const Node& node : graph.nodes) {
    for (ValueId in : node.inputs) {
      if (in != kNoValue) ++unbuilt_readers[in];
    }
  }
  for (ValueId out : graph.outputs)
    read_by_non_primitive[out] = true;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    const Node& node = graph.nodes[n];
    Step step;
    step.node = static_cast<NodeId>(n);
    step.info.node = node.name;
    step.info.op = op_type_name(node.op);
    const ValueId out = node.outputs[0];
    const Placement& src = placements[node.inputs[0]];
    const Placement& dst = placements[out];

    if (norm_fused[n]) {
      step.info.implementation = "fused";
    } else if (norm_chain[n].norm >= 0) {
      DENSERT_RETURN_IF_ERROR(add_norm_conv(step, norm_chain[n], node, dims));
      step.kind = StepKind::kNormConv;
    } else if (node.op == OpType::kConcat && views.count(out)) {
      step.info.implementation = "view";
    } else if (node.op == OpType::kConcat && dst.blocked) {
      step.kind = StepKind::kConcatCopy;
      step.info.implementation = "copy";
      summary.concat_bytes_copied += num_elements(dst.dims) * element_bytes;
    } else if (dst.request == src.request && dst.offset == src.offset && !src.blocked &&
               !dst.blocked && !src.constant) {
      step.info.implementation = "view";  // a reshape of plain memory
    } else if ((node.op == OpType::kFlatten || node.op == OpType::kReshape ||
                node.op == OpType::kSqueeze || node.op == OpType::kUnsqueeze ||
                node.op == OpType::kIdentity || node.op == OpType::kDropout) &&
               src.blocked && !dst.blocked) {
      step.kind = StepKind::kToPlain;
      step.info.implementation = "reorder:blocked_to_plain";
    } else {
      std::string reason = reference_reason(graph, node, placements);
      if (reason.empty()) {
        try {
          Status status;
          switch (node.op) {
            case OpType::kConv:
              status = add_conv(step, node, dims, stream);
              break;
            case OpType::kBatchNorm:
              status = add_batch_norm(step, node, stream);
              break;
            case OpType::kRelu:
            case OpType::kClip:
              status = add_eltwise(step, node);
              break;
            case OpType::kMaxPool:
            case OpType::kAveragePool:
            case OpType::kGlobalAveragePool:
              status = add_pool(step, node, dims);
              break;
            case OpType::kGemm:
              status = add_gemm(step, node, stream);
              break;
            case OpType::kSoftmax:
              status = add_softmax(step, node);
              break;
            default:
              reason = "no oneDNN primitive";
              break;
          }
          DENSERT_RETURN_IF_ERROR(status);
          if (reason.empty()) step.kind = StepKind::kPrimitive;
          // oneDNN's own reference kernels ("ref:any") are as slow as densert's: count them.
          if (step.kind == StepKind::kPrimitive && step.info.implementation.rfind("ref", 0) == 0) {
            ++summary.reference_steps;
            DENSERT_LOG(kDispatch) << node.describe() << ": oneDNN has only its reference kernel "
                                   << step.info.implementation << " for this case";
          }
        } catch (const dnnl::error& e) {
          reason = std::string("oneDNN refused: ") + e.what();
        }
      }
      if (step.kind != StepKind::kPrimitive) {
        step.kind = StepKind::kReference;
        step.info.implementation = "reference";
        ++summary.reference_steps;
        if (node.op == OpType::kConcat) {
          summary.concat_bytes_copied += num_elements(dst.dims) * element_bytes;
        }
        DENSERT_LOG(kDispatch) << node.describe() << ": reference implementation: " << reason;
      }
    }
    DENSERT_LOG(kDispatch) << "primitive," << node.name << "," << step.info.op << ","
                           << step.info.implementation;
    // Primitives and densert's kernels keep their own copies of the weights they read. A fused
    // BatchNormalization's parameters are read when its convolution's kernel is built.
    const bool owns_weights = step.kind == StepKind::kPrimitive || step.kind == StepKind::kNormConv;
    const auto built = [&](const Node& reader) {
      for (ValueId in : reader.inputs) {
        if (in == kNoValue || !graph.value(in).is_constant()) continue;
        read_by_non_primitive[in] = read_by_non_primitive[in] || !owns_weights;
        if (--unbuilt_readers[in] == 0 && !read_by_non_primitive[in]) {
          graph.release_constant_data(in);
        }
      }
    };
    if (!norm_fused[n]) built(node);
    if (norm_chain[n].norm >= 0) built(graph.nodes[norm_chain[n].norm]);
    summary.steps.push_back(step.info);
    steps.push_back(std::move(step));
  }
  return {};
}

}  // namespace densert
