// Plan building and execution for the oneDNN engine.
//
// A value lives in one of two layouts. Blocked values (4-D activations) use nChw16c with a
// physical channel count rounded up to 16 and a map from logical to physical channels. Every
// consumer's weights or parameters are expanded with zeros at the unused physical channels,
// so whatever finite values those hold (zeros from the arena, or a Clip's floor) never reach
// a result. Plain values use the logical row-major layout. Block buffers hold one segment per
// concatenated value, each padded to the channel block, so every segment and every prefix is a
// dense descriptor at an offset: oneDNN keeps its JIT kernels for them (it falls back to its
// reference kernel for sub-memory views).
#include "runtime/engine/engine.h"

#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "runtime/engine/norm_conv1x1.h"
#include "runtime/log.h"
#include "runtime/memory_planner.h"
#include "runtime/reference_executor.h"
#include "runtime/shape_inference.h"

namespace densert {
namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;
constexpr int64_t kBlock = 16;

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

struct Placement {
  bool blocked = false;
  int request = -1;                  // memory request that owns the bytes
  int64_t offset = 0;                // floats from the start of the request
  Dims dims;                         // logical dims of one image
  int64_t physical_channels = 0;     // blocked only
  std::vector<int64_t> channel_map;  // blocked only: physical channel of each logical one
  bool constant = false;

  int64_t height() const { return dims.size() == 4 ? dims[2] : 1; }
  int64_t width() const { return dims.size() == 4 ? dims[3] : 1; }
  int64_t floats() const {
    return blocked ? physical_channels * height() * width() : num_elements(dims);
  }
};

Placement blocked_placement(const Dims& dims) {
  Placement p;
  p.blocked = true;
  p.dims = dims;
  p.physical_channels = round_up(dims[1], kBlock);
  for (int64_t c = 0; c < dims[1]; ++c)
    p.channel_map.push_back(c);
  return p;
}

memory::desc plain_desc(const Dims& dims) {
  static const Tag tags[] = {Tag::a, Tag::a, Tag::ab, Tag::abc, Tag::abcd, Tag::abcde, Tag::abcdef};
  memory::dims d(dims.begin(), dims.end());
  if (d.empty()) d = {1};
  return memory::desc(d, memory::data_type::f32, tags[std::min<size_t>(d.size(), 6)]);
}

memory::desc desc_of(const Placement& p) {
  if (p.blocked) {
    return memory::desc({1, p.physical_channels, p.height(), p.width()}, memory::data_type::f32,
                        Tag::nChw16c);
  }
  return plain_desc(p.dims);
}

// Index of logical channel c at pixel hw (h * width + w) of a blocked placement.
inline int64_t blocked_index(const Placement& p, int64_t c, int64_t hw) {
  const int64_t phys = p.channel_map[c];
  return ((phys / kBlock) * p.height() * p.width() + hw) * kBlock + phys % kBlock;
}

// Copies a placement's logical contents into a plain row-major buffer.
void gather(const Placement& p, const float* base, float* out) {
  if (!p.blocked) {
    std::memcpy(out, base, sizeof(float) * num_elements(p.dims));
    return;
  }
  const int64_t hw = p.height() * p.width();
  for (int64_t c = 0; c < p.dims[1]; ++c) {
    for (int64_t i = 0; i < hw; ++i)
      out[c * hw + i] = base[blocked_index(p, c, i)];
  }
}

// Writes a plain row-major buffer into a placement, zeroing its padding channels.
void scatter(const Placement& p, const float* in, float* base) {
  if (!p.blocked) {
    std::memcpy(base, in, sizeof(float) * num_elements(p.dims));
    return;
  }
  std::fill(base, base + p.floats(), 0.0f);
  const int64_t hw = p.height() * p.width();
  for (int64_t c = 0; c < p.dims[1]; ++c) {
    for (int64_t i = 0; i < hw; ++i)
      base[blocked_index(p, c, i)] = in[c * hw + i];
  }
}

// kNormConv runs a NormConv1x1: a 1x1 convolution with the BatchNormalization it reads (and
// the 2x2 average pool between them, if any) folded in; their own steps are then kNone.
enum class StepKind { kPrimitive, kNormConv, kReference, kToPlain, kConcatCopy, kNone };

struct ArgRef {
  int arg;
  ValueId value = kNoValue;  // an activation placement
  int constant = -1;         // or an index into Plan::constants
};

struct Step {
  NodeId node;
  StepKind kind = StepKind::kNone;
  dnnl::primitive primitive;
  memory::desc scratchpad;  // the primitive's scratchpad, in the context's scratch buffer
  std::vector<ArgRef> args;
  std::shared_ptr<const NormConv1x1> norm_conv;
  ValueId norm_src = kNoValue;  // kNormConv: the BatchNormalization's input
  StepInfo info;
};

double conv_flops(const Graph& graph, const Node& node, const std::vector<Dims>& dims) {
  const Dims& w = graph.value(node.inputs[1]).dims;
  const Dims& out = dims[node.outputs[0]];
  return 2.0 * static_cast<double>(out[1] * out[2] * out[3]) *
         static_cast<double>(w[1] * w[2] * w[3]);
}

}  // namespace

struct Engine::Plan {
  Graph graph;
  dnnl::engine cpu{dnnl::engine::kind::cpu, 0};
  std::vector<Placement> placements;     // per value
  std::vector<int64_t> request_offsets;  // floats, per memory request
  int64_t arena_floats = 0;
  std::vector<memory> constants;
  std::vector<Step> steps;
  PlanSummary summary;
  int threads = 1;
  bool batch_parallel = true;
  bool winograd = true;
  bool fuse_norm_conv = true;
  // Per node: the BatchNormalization node a 1x1 convolution absorbs, or -1.
  std::vector<NodeId> norm_of;
  std::vector<NodeId> pool_of;   // and the 2x2 average pool between them, or -1
  std::vector<bool> norm_fused;  // per node: a BatchNormalization or pool some step absorbs

  struct Context : ExecutionContext {
    const Plan* owner = nullptr;
    float* arena = nullptr;
    void* scratch = nullptr;
    dnnl::stream stream;
    std::vector<std::unordered_map<int, memory>> args;  // per step
    // Extra contexts for running the images of a batch side by side, made on first use.
    std::vector<std::unique_ptr<Context>> workers;
    ~Context() {
      std::free(arena);
      std::free(scratch);
    }
  };
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<Context>> pool;

  float* address(Context& ctx, ValueId v) const {
    const Placement& p = placements[v];
    return ctx.arena + request_offsets[p.request] + p.offset;
  }

  bool is_fused_norm(NodeId n) const { return norm_fused[n]; }
  Expected<std::unique_ptr<Context>> make_context() const;
  Status build(const EngineOptions& options);
  Status plan_layouts(const std::vector<Dims>& dims);
  void find_norm_convs();
  Status plan_memory_requests();
  Status build_steps(const std::vector<Dims>& dims);
  Status run_image(Context& ctx, const std::vector<const float*>& inputs,
                   const std::vector<float*>& outputs, std::vector<double>* step_ms) const;

  int add_constant(const Tensor& tensor, const memory::desc& desired, dnnl::stream& stream);
  Status add_conv(Step& step, const Node& node, const std::vector<Dims>& dims,
                  dnnl::stream& stream);
  Status add_batch_norm(Step& step, const Node& node, dnnl::stream& stream);
  Status add_norm_conv(Step& step, const Node& norm, bool pool, const Node& conv,
                       const std::vector<Dims>& dims);
  Status add_eltwise(Step& step, const Node& node);
  Status add_pool(Step& step, const Node& node, const std::vector<Dims>& dims);
  Status add_gemm(Step& step, const Node& node, dnnl::stream& stream);
  Status add_softmax(Step& step, const Node& node);
};

namespace {

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
  memory::desc source_desc = plain_desc(tensor.dims);
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

Status Engine::Plan::plan_layouts(const std::vector<Dims>& dims) {
  const size_t count = graph.values.size();
  placements.assign(count, Placement{});
  for (size_t v = 0; v < count; ++v) {
    placements[v].dims = dims[v];
    if (!dims[v].empty()) placements[v].dims[0] = graph.values[v].is_constant() ? dims[v][0] : 1;
    placements[v].constant = graph.values[v].is_constant();
  }
  // Block buffers first: segments are padded one by one; views take the map of their prefix.
  for (const DenseBlock& block : graph.blocks) {
    std::vector<int64_t> map;
    int64_t physical = 0;
    for (ValueId segment : block.segments) {
      Placement& p = placements[segment];
      p = blocked_placement(p.dims);
      for (int64_t c = 0; c < p.dims[1]; ++c)
        map.push_back(physical + c);
      physical += p.physical_channels;
    }
    for (ValueId view : block.views) {
      Placement& p = placements[view];
      const Dims logical = p.dims;
      p = blocked_placement(logical);
      p.channel_map.assign(map.begin(), map.begin() + logical[1]);
      p.physical_channels = logical[1] == 0 ? 0 : map[logical[1] - 1] / kBlock * kBlock + kBlock;
    }
  }
  // The rest follow their sources, in graph order, so a source's layout is known first.
  for (const Node& node : graph.nodes) {
    const ValueId out = node.outputs[0];
    if (graph.value(out).slot.block >= 0) continue;
    const Placement& src = placements[node.inputs[0]];
    Placement& dst = placements[out];
    const Dims logical = dst.dims;
    switch (node.op) {
      case OpType::kConv:
        dst = blocked_placement(logical);
        break;
      case OpType::kBatchNorm:
      case OpType::kRelu:
      case OpType::kClip:
      case OpType::kMaxPool:
      case OpType::kAveragePool:
      case OpType::kGlobalAveragePool:
        if (src.blocked) {
          // Keep the source's channel layout so the op runs without reshuffling.
          dst = src;
          dst.dims = logical;
          dst.request = -1;
          dst.offset = 0;
          dst.constant = false;
        }
        break;
      case OpType::kConcat:
        if (logical.size() == 4) dst = blocked_placement(logical);
        break;
      default:
        break;
    }
  }

  return {};
}

Status Engine::Plan::plan_memory_requests() {
  // Every placement gets a request, except views that share another value's bytes.
  const int last_step = static_cast<int>(graph.nodes.size());
  std::vector<BufferRequest> requests;
  const auto new_request = [&](int64_t floats, int first) {
    requests.push_back({floats * static_cast<int64_t>(sizeof(float)), first, first});
    return static_cast<int>(requests.size() - 1);
  };
  std::vector<int> block_request(graph.blocks.size(), -1);
  for (size_t b = 0; b < graph.blocks.size(); ++b) {
    const DenseBlock& block = graph.blocks[b];
    int64_t floats = 0;
    int first = last_step;
    for (ValueId segment : block.segments) {
      Placement& p = placements[segment];
      p.offset = floats;  // physical channels before it are whole blocks of H*W*16 floats
      floats += p.floats();
      first = std::min(first, static_cast<int>(graph.value(segment).producer));
    }
    block_request[b] = new_request(floats, first);
    for (ValueId segment : block.segments)
      placements[segment].request = block_request[b];
    for (ValueId view : block.views) {
      placements[view].request = block_request[b];
      placements[view].offset = 0;
    }
  }
  for (ValueId in : graph.inputs)
    placements[in].request = new_request(placements[in].floats(), 0);
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    const Node& node = graph.nodes[n];
    for (ValueId out : node.outputs) {
      Placement& p = placements[out];
      if (p.request >= 0) continue;
      const bool alias = !p.blocked && !placements[node.inputs[0]].blocked &&
                         (node.op == OpType::kFlatten || node.op == OpType::kReshape ||
                          node.op == OpType::kSqueeze || node.op == OpType::kUnsqueeze ||
                          node.op == OpType::kIdentity || node.op == OpType::kDropout) &&
                         !placements[node.inputs[0]].constant;
      if (alias) {
        p.request = placements[node.inputs[0]].request;
        p.offset = placements[node.inputs[0]].offset;
      } else if (is_fused_norm(static_cast<NodeId>(n))) {
        p.request = new_request(0, static_cast<int>(n));  // never written
      } else {
        p.request = new_request(p.floats(), static_cast<int>(n));
      }
    }
  }
  // A request lives until the last step that reads any value placed in it.
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    std::vector<ValueId> reads = graph.nodes[n].inputs;
    if (norm_of[n] >= 0) reads.push_back(graph.nodes[norm_of[n]].inputs[0]);
    for (ValueId in : reads) {
      if (in == kNoValue || placements[in].constant) continue;
      BufferRequest& r = requests[placements[in].request];
      r.last_step = std::max(r.last_step, static_cast<int>(n));
    }
  }
  for (ValueId out : graph.outputs) {
    if (!placements[out].constant) requests[placements[out].request].last_step = last_step;
  }
  const MemoryPlan plan = plan_memory(requests);
  request_offsets.clear();
  for (int64_t bytes : plan.offsets)
    request_offsets.push_back(bytes / static_cast<int64_t>(sizeof(float)));
  arena_floats = plan.arena_bytes / static_cast<int64_t>(sizeof(float));
  summary.arena_bytes = plan.arena_bytes;
  for (size_t b = 0; b < graph.blocks.size(); ++b) {
    const DenseBlock& block = graph.blocks[b];
    const Placement& last =
        placements[block.views.empty() ? block.segments.back() : block.views.front()];
    BlockInfo info;
    info.name = block.name;
    info.channels = block.channels;
    info.height = last.height();
    info.width = last.width();
    info.bytes = requests[block_request[b]].bytes;
    info.physical_channels = info.bytes / static_cast<int64_t>(sizeof(float)) /
                             std::max<int64_t>(info.height * info.width, 1);
    info.views = static_cast<int>(block.views.size());
    summary.blocks.push_back(info);
  }
  return {};
}

void Engine::Plan::find_norm_convs() {
  norm_of.assign(graph.nodes.size(), -1);
  pool_of.assign(graph.nodes.size(), -1);
  norm_fused.assign(graph.nodes.size(), false);
  if (!fuse_norm_conv) return;
  std::vector<int> readers(graph.values.size(), 0);
  for (const Node& node : graph.nodes) {
    for (ValueId in : node.inputs) {
      if (in != kNoValue) ++readers[in];
    }
  }
  for (ValueId out : graph.outputs)
    ++readers[out];
  // A 2x2 average pool with stride 2 and no padding, whose output keeps floor sizes.
  const auto halving_pool = [&](const Node& node) {
    if (node.op != OpType::kAveragePool) return false;
    const Window& w = node.attrs_as<PoolAttrs>().window;
    const Placement& in = placements[node.inputs[0]];
    const Placement& out = placements[node.outputs[0]];
    return w.kernel == std::array<int64_t, 2>{2, 2} && w.strides == std::array<int64_t, 2>{2, 2} &&
           w.dilations == std::array<int64_t, 2>{1, 1} &&
           w.pads == std::array<int64_t, 4>{0, 0, 0, 0} && in.blocked && in.dims.size() == 4 &&
           out.height() == in.height() / 2 && out.width() == in.width() / 2;
  };
  const bool cpu_ok = NormConv1x1::supported();
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    const Node& conv = graph.nodes[n];
    if (conv.op != OpType::kConv) continue;
    const auto& attrs = conv.attrs_as<ConvAttrs>();
    const Window& w = attrs.window;
    const Dims& wd = graph.value(conv.inputs[1]).dims;
    if (attrs.group != 1 || wd[2] != 1 || wd[3] != 1 || w.strides != std::array<int64_t, 2>{1, 1} ||
        w.pads != std::array<int64_t, 4>{0, 0, 0, 0}) {
      continue;  // not a 1x1 convolution
    }
    ValueId normalized = conv.inputs[0];
    NodeId pool = -1;
    if (graph.value(normalized).producer < 0) continue;
    if (halving_pool(graph.nodes[graph.value(normalized).producer])) {
      pool = graph.value(normalized).producer;
      if (readers[normalized] != 1) continue;
      normalized = graph.nodes[pool].inputs[0];
      if (graph.value(normalized).producer < 0) continue;
    }
    const NodeId norm_id = graph.value(normalized).producer;
    const Node& norm = graph.nodes[norm_id];
    if (norm.op != OpType::kBatchNorm) continue;
    const Placement& src = placements[norm.inputs[0]];
    std::string refused;
    if (readers[normalized] != 1) {
      refused = "the normalized value has other readers";
    } else if (!src.blocked || src.dims.size() != 4 || !placements[conv.outputs[0]].blocked) {
      refused = "not in the blocked layout";
    } else if (!cpu_ok) {
      refused = "the CPU has no AVX-512";
    }
    if (!refused.empty()) {
      DENSERT_LOG(kDispatch) << "not fused: " << norm.name << " into " << conv.name << ": "
                             << refused;
      continue;
    }
    norm_of[n] = norm_id;
    pool_of[n] = pool;
    norm_fused[norm_id] = true;
    if (pool >= 0) norm_fused[pool] = true;
    DENSERT_LOG(kDispatch) << "fused: " << norm.name
                           << (pool >= 0 ? " and " + graph.nodes[pool].name : std::string())
                           << " into " << conv.name;
  }
}

Status Engine::Plan::add_norm_conv(Step& step, const Node& norm, bool pool, const Node& conv,
                                   const std::vector<Dims>& dims) {
  const Placement& src = placements[norm.inputs[0]];
  const Placement& dst = placements[conv.outputs[0]];
  const auto& norm_attrs = norm.attrs_as<BatchNormAttrs>();
  const auto& conv_attrs = conv.attrs_as<ConvAttrs>();
  const Tensor& weights = graph.constant(conv.inputs[1]);
  const int64_t out_c = weights.dims[0], in_c = weights.dims[1];
  const int64_t src_phys = src.physical_channels, dst_phys = dst.physical_channels;
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
  std::vector<float> expanded(dst_phys * src_phys, 0.0f), bias(dst_phys, 0.0f);
  for (int64_t o = 0; o < out_c; ++o) {
    const int64_t po = dst.channel_map[o];
    for (int64_t i = 0; i < in_c; ++i)
      expanded[po * src_phys + src.channel_map[i]] = weights.data[o * in_c + i];
    if (conv.inputs.size() > 2) bias[po] = graph.constant(conv.inputs[2]).data[o];
  }
  const auto bounds = [](const Activation& act) {
    constexpr float inf = std::numeric_limits<float>::infinity();
    if (act.kind == Activation::Kind::kRelu) return std::pair{0.0f, inf};
    if (act.kind == Activation::Kind::kClip) return std::pair{act.min, act.max};
    return std::pair{-inf, inf};
  };
  const auto [in_lo, in_hi] = bounds(norm_attrs.activation);
  const auto [out_lo, out_hi] = bounds(conv_attrs.activation);
  step.norm_conv = std::make_shared<NormConv1x1>(
      NormConv1x1Shape{src_phys, dst_phys, src.height(), src.width(), pool ? 2 : 1}, scale.data(),
      shift.data(), in_lo, in_hi, expanded.data(), bias.data(), out_lo, out_hi, threads);
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
  const Tensor& weights = graph.constant(node.inputs[1]);
  const int64_t out_c = weights.dims[0], in_c = weights.dims[1];
  const int64_t kh = weights.dims[2], kw = weights.dims[3];
  const int64_t src_phys = src.blocked ? src.physical_channels : in_c;
  const int64_t dst_phys = dst.physical_channels;

  // Weights and bias over physical channels, zero where either side is padding.
  Tensor expanded({dst_phys, src_phys, kh, kw});
  Tensor bias({dst_phys});
  for (int64_t o = 0; o < out_c; ++o) {
    const int64_t po = dst.channel_map[o];
    for (int64_t i = 0; i < in_c; ++i) {
      const int64_t pi = src.blocked ? src.channel_map[i] : i;
      std::copy_n(weights.data.begin() + (o * in_c + i) * kh * kw, kh * kw,
                  expanded.data.begin() + (po * src_phys + pi) * kh * kw);
    }
    if (node.inputs.size() > 2) bias.data[po] = graph.constant(node.inputs[2]).data[o];
  }
  const Window& w = attrs.window;
  const memory::desc weights_any({dst_phys, src_phys, kh, kw}, memory::data_type::f32, Tag::any);
  const memory::desc bias_desc({dst_phys}, memory::data_type::f32, Tag::a);
  const auto make_desc = [&](dnnl::algorithm algorithm) {
    return dnnl::convolution_forward::desc(
        dnnl::prop_kind::forward_inference, algorithm, desc_of(src), weights_any, bias_desc,
        desc_of(dst), {w.strides[0], w.strides[1]}, {w.dilations[0] - 1, w.dilations[1] - 1},
        {w.pads[0], w.pads[1]}, {w.pads[2], w.pads[3]});
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
  dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, desc_of(src),
                                               attrs.epsilon, flags);
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
  dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, desc_of(src), lo, hi);
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
      dnnl::prop_kind::forward_inference, alg, desc_of(src), desc_of(dst),
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
  const memory::desc weights_any({n, k}, memory::data_type::f32, Tag::any);
  const memory::desc bias_desc({n}, memory::data_type::f32, Tag::a);
  dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_inference,
                                         desc_of(placements[node.inputs[0]]), weights_any,
                                         bias_desc, desc_of(placements[node.outputs[0]]));
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
                                   desc_of(placements[node.inputs[0]]), axis);
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
    } else if (norm_of[n] >= 0) {
      DENSERT_RETURN_IF_ERROR(
          add_norm_conv(step, graph.nodes[norm_of[n]], pool_of[n] >= 0, node, dims));
      step.kind = StepKind::kNormConv;
    } else if (node.op == OpType::kConcat && views.count(out)) {
      step.info.implementation = "view";
    } else if (node.op == OpType::kConcat && dst.blocked) {
      step.kind = StepKind::kConcatCopy;
      step.info.implementation = "copy";
      summary.concat_bytes_copied += num_elements(dst.dims) * static_cast<int64_t>(sizeof(float));
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
        } catch (const dnnl::error& e) {
          reason = std::string("oneDNN refused: ") + e.what();
        }
      }
      if (step.kind != StepKind::kPrimitive) {
        step.kind = StepKind::kReference;
        step.info.implementation = "reference";
        ++summary.reference_steps;
        if (node.op == OpType::kConcat) {
          summary.concat_bytes_copied +=
              num_elements(dst.dims) * static_cast<int64_t>(sizeof(float));
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
    if (norm_of[n] >= 0) built(graph.nodes[norm_of[n]]);
    summary.steps.push_back(step.info);
    steps.push_back(std::move(step));
  }
  return {};
}

Expected<std::unique_ptr<Engine::Plan::Context>> Engine::Plan::make_context() const {
  auto ctx = std::make_unique<Context>();
  ctx->owner = this;
  const size_t bytes = static_cast<size_t>(round_up(std::max<int64_t>(arena_floats, 16) * 4, 64));
  ctx->arena = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!ctx->arena)
    return Status::internal("cannot allocate an arena of " + std::to_string(bytes) + " bytes");
  // Padding channels must read as zeros before anything writes them.
  std::memset(ctx->arena, 0, bytes);
  ctx->stream = dnnl::stream(cpu);
  // One scratch buffer serves every step in turn: steps of a context never overlap.
  size_t scratch_bytes = 64;
  for (const Step& step : steps) {
    scratch_bytes = std::max(scratch_bytes, step.scratchpad.get_size());
    if (step.norm_conv) {
      scratch_bytes =
          std::max(scratch_bytes, static_cast<size_t>(step.norm_conv->scratch_floats(threads)) * 4);
    }
  }
  ctx->scratch = std::aligned_alloc(64, round_up(static_cast<int64_t>(scratch_bytes), 64));
  if (!ctx->scratch)
    return Status::internal("cannot allocate a scratchpad of " + std::to_string(scratch_bytes) +
                            " bytes");
  ctx->args.resize(steps.size());
  for (size_t s = 0; s < steps.size(); ++s) {
    if (steps[s].kind == StepKind::kPrimitive && steps[s].scratchpad.get_size() > 0) {
      ctx->args[s].emplace(DNNL_ARG_SCRATCHPAD, memory(steps[s].scratchpad, cpu, ctx->scratch));
    }
    for (const ArgRef& ref : steps[s].args) {
      if (ref.constant >= 0) {
        ctx->args[s].emplace(ref.arg, constants[ref.constant]);
      } else {
        ctx->args[s].emplace(ref.arg,
                             memory(desc_of(placements[ref.value]), cpu,
                                    ctx->arena + request_offsets[placements[ref.value].request] +
                                        placements[ref.value].offset));
      }
    }
  }
  return ctx;
}

Status Engine::Plan::run_image(Context& ctx, const std::vector<const float*>& inputs,
                               const std::vector<float*>& outputs,
                               std::vector<double>* step_ms) const {
  for (size_t i = 0; i < inputs.size(); ++i) {
    scatter(placements[graph.inputs[i]], inputs[i], address(ctx, graph.inputs[i]));
  }
  for (size_t s = 0; s < steps.size(); ++s) {
    const Step& step = steps[s];
    const Node& node = graph.nodes[step.node];
    // Steps done here read what primitives wrote: let the stream finish first. (On the CPU
    // it runs each primitive to completion anyway; the wait is nearly free.)
    if (step.kind != StepKind::kPrimitive && step.kind != StepKind::kNone) ctx.stream.wait();
    const auto start = std::chrono::steady_clock::now();
    switch (step.kind) {
      case StepKind::kNone:
        break;
      case StepKind::kPrimitive:
        step.primitive.execute(ctx.stream, ctx.args[s]);
        if (step_ms) ctx.stream.wait();  // so that the time is this step's alone
        break;
      case StepKind::kNormConv:
        step.norm_conv->run(address(ctx, step.norm_src), address(ctx, node.outputs[0]),
                            static_cast<float*>(ctx.scratch),
                            std::min(omp_get_max_threads(), threads));
        break;
      case StepKind::kToPlain:
        gather(placements[node.inputs[0]], address(ctx, node.inputs[0]),
               address(ctx, node.outputs[0]));
        break;
      case StepKind::kConcatCopy: {
        const Placement& dst = placements[node.outputs[0]];
        std::vector<float> joined(static_cast<size_t>(num_elements(dst.dims)));
        size_t offset = 0;
        for (ValueId in : node.inputs) {
          const Placement& p = placements[in];
          if (p.constant) {
            std::copy(graph.constant(in).data.begin(), graph.constant(in).data.end(),
                      joined.begin() + offset);
          } else {
            gather(p, address(ctx, in), joined.data() + offset);
          }
          offset += static_cast<size_t>(num_elements(p.dims));
        }
        scatter(dst, joined.data(), address(ctx, node.outputs[0]));
        break;
      }
      case StepKind::kReference: {
        std::vector<Tensor> owned(node.inputs.size());
        std::vector<const Tensor*> in;
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          const ValueId id = node.inputs[i];
          if (id == kNoValue) {
            in.push_back(nullptr);
          } else if (placements[id].constant) {
            in.push_back(&graph.constant(id));
          } else {
            owned[i] = Tensor(placements[id].dims);
            gather(placements[id], address(ctx, id), owned[i].data.data());
            in.push_back(&owned[i]);
          }
        }
        DENSERT_ASSIGN_OR_RETURN(std::vector<Tensor> out, run_reference_node(graph, node, in));
        scatter(placements[node.outputs[0]], out[0].data.data(), address(ctx, node.outputs[0]));
        break;
      }
    }
    if (step_ms) {
      (*step_ms)[s] +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    }
  }
  ctx.stream.wait();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const ValueId id = graph.outputs[i];
    if (placements[id].constant) {
      std::copy(graph.constant(id).data.begin(), graph.constant(id).data.end(), outputs[i]);
    } else {
      gather(placements[id], address(ctx, id), outputs[i]);
    }
  }
  return {};
}

Status Engine::Plan::build(const EngineOptions& options) {
  threads = options.threads > 0 ? options.threads : physical_core_count();
  batch_parallel = options.batch_parallel;
  winograd = options.winograd;
  fuse_norm_conv = options.fuse_norm_conv;
  summary.threads = threads;
  omp_set_num_threads(threads);
  DENSERT_ASSIGN_OR_RETURN(summary.passes, optimize(graph, options.optimize));
  summary.refused_blocks = graph.refused_blocks;

  // One plan serves every batch size, so the batch must never mix with other dims.
  bool symbolic = false;
  for (ValueId in : graph.inputs)
    symbolic |= !graph.value(in).dims.empty() && graph.value(in).dims[0] == kBatchDim;
  for (const Value& value : graph.values) {
    if (value.is_constant() || value.producer < 0 || value.dims.empty()) continue;
    if (symbolic ? value.dims[0] != kBatchDim : value.dims[0] != 1) {
      return Status::unsupported("value \"" + value.name + "\" of shape " +
                                 dims_to_string(value.dims) +
                                 (symbolic ? " does not keep the batch as its first dim"
                                           : " has a fixed batch other than 1"));
    }
  }
  for (const Node& node : graph.nodes) {
    const bool on_batch =
        ((node.op == OpType::kConcat || node.op == OpType::kSoftmax ||
          node.op == OpType::kFlatten) &&
         node.attrs_as<AxisAttrs>().axis == 0) ||
        (node.op == OpType::kTranspose && node.attrs_as<TransposeAttrs>().perm[0] != 0) ||
        (node.op == OpType::kReduceMean && (node.attrs_as<AxesAttrs>().axes.empty() ||
                                            std::count(node.attrs_as<AxesAttrs>().axes.begin(),
                                                       node.attrs_as<AxesAttrs>().axes.end(), 0)));
    if (on_batch)
      return Status::unsupported(node.describe() + ": works across the batch dimension");
  }

  DENSERT_ASSIGN_OR_RETURN(std::vector<Dims> dims, infer_shapes(graph, 1));
  DENSERT_RETURN_IF_ERROR(plan_layouts(dims));
  find_norm_convs();
  DENSERT_RETURN_IF_ERROR(plan_memory_requests());
  try {
    DENSERT_RETURN_IF_ERROR(build_steps(dims));
  } catch (const dnnl::error& e) {
    return Status::internal(std::string("oneDNN: ") + e.what());
  }
  DENSERT_LOG(kInfo) << "plan: " << steps.size() << " steps, arena " << summary.arena_bytes
                     << " bytes, " << graph.blocks.size() << " dense blocks, "
                     << summary.concat_bytes_copied << " bytes copied by Concat per image, "
                     << summary.reference_steps << " reference steps";
  return {};
}

Expected<std::shared_ptr<Engine>> Engine::create(Graph graph, const EngineOptions& options) {
  std::shared_ptr<Engine> engine(new Engine());
  engine->plan_ = std::make_unique<Plan>();
  engine->plan_->graph = std::move(graph);
  DENSERT_RETURN_IF_ERROR(engine->plan_->build(options));
  return engine;
}

Engine::~Engine() = default;

const PlanSummary& Engine::summary() const {
  return plan_->summary;
}
const Graph& Engine::graph() const {
  return plan_->graph;
}

Expected<std::unique_ptr<ExecutionContext>> Engine::create_context() const {
  DENSERT_ASSIGN_OR_RETURN(std::unique_ptr<Plan::Context> ctx, plan_->make_context());
  return std::unique_ptr<ExecutionContext>(std::move(ctx));
}

int64_t Engine::input_elements_per_image(size_t i) const {
  return num_elements(plan_->placements.at(plan_->graph.inputs.at(i)).dims);
}

int64_t Engine::output_elements_per_image(size_t i) const {
  return num_elements(plan_->placements.at(plan_->graph.outputs.at(i)).dims);
}

Dims Engine::output_dims(size_t i, int64_t batch) const {
  const Placement& p = plan_->placements.at(plan_->graph.outputs.at(i));
  Dims dims = p.dims;
  if (!dims.empty() && !p.constant) dims[0] = batch;
  return dims;
}

Status Engine::run(ExecutionContext& context, int64_t batch, const float* const* inputs,
                   float* const* outputs, std::vector<double>* step_ms_out) const {
  const Plan& plan = *plan_;
  auto* ctx = dynamic_cast<Plan::Context*>(&context);
  if (!ctx || ctx->owner != &plan)
    return Status::bad_argument("execution context belongs to another model");
  if (batch <= 0)
    return Status::bad_argument("batch size " + std::to_string(batch) + " must be positive");
  if (!inputs || !outputs) return Status::bad_argument("input and output buffers must not be null");
  for (size_t i = 0; i < plan.graph.inputs.size(); ++i) {
    if (!inputs[i]) return Status::bad_argument("input " + std::to_string(i) + " is null");
  }
  for (size_t i = 0; i < plan.graph.outputs.size(); ++i) {
    if (!outputs[i]) return Status::bad_argument("output " + std::to_string(i) + " is null");
  }
  const bool profile = log_enabled(LogCategory::kProfile) || step_ms_out;
  std::vector<double> step_ms(profile ? plan.steps.size() : 0, 0.0);
  // Runs images [first, first + count) one after another on a context.
  const auto run_images = [&](Plan::Context& worker, int64_t first, int64_t count,
                              std::vector<double>* times) -> Status {
    try {
      std::vector<const float*> in(plan.graph.inputs.size());
      std::vector<float*> out(plan.graph.outputs.size());
      for (int64_t image = first; image < first + count; ++image) {
        for (size_t i = 0; i < in.size(); ++i)
          in[i] = inputs[i] + image * input_elements_per_image(i);
        for (size_t i = 0; i < out.size(); ++i)
          out[i] = outputs[i] + image * output_elements_per_image(i);
        DENSERT_RETURN_IF_ERROR(plan.run_image(worker, in, out, times));
      }
    } catch (const dnnl::error& e) {
      return Status::internal(std::string("oneDNN: ") + e.what());
    }
    return {};
  };

  // A batch of at least as many images as threads runs one image per thread: small
  // convolutions scale poorly across cores, whole images do not. Profiling keeps to one
  // thread of images so that step times stay comparable.
  const int64_t workers =
      plan.batch_parallel && !profile ? std::min<int64_t>(plan.threads, batch) : 1;
  if (workers <= 1) {
    omp_set_num_threads(plan.threads);
    DENSERT_RETURN_IF_ERROR(run_images(*ctx, 0, batch, profile ? &step_ms : nullptr));
  } else {
    while (static_cast<int64_t>(ctx->workers.size()) < workers - 1) {
      DENSERT_ASSIGN_OR_RETURN(std::unique_ptr<Plan::Context> extra, plan.make_context());
      ctx->workers.push_back(std::move(extra));
    }
    std::vector<Status> results(static_cast<size_t>(workers));
    std::vector<std::thread> threads;
    for (int64_t w = 0; w < workers; ++w) {
      const int64_t first = batch * w / workers;
      const int64_t count = batch * (w + 1) / workers - first;
      Plan::Context& worker = w == 0 ? *ctx : *ctx->workers[static_cast<size_t>(w - 1)];
      threads.emplace_back([&, first, count, w] {
        omp_set_num_threads(1);
        results[static_cast<size_t>(w)] = run_images(worker, first, count, nullptr);
      });
    }
    for (std::thread& thread : threads)
      thread.join();
    for (const Status& result : results)
      DENSERT_RETURN_IF_ERROR(result);
  }
  if (step_ms_out) {
    step_ms_out->resize(plan.steps.size(), 0.0);
    for (size_t s = 0; s < plan.steps.size(); ++s)
      (*step_ms_out)[s] += step_ms[s];
  }
  if (log_enabled(LogCategory::kProfile)) {
    for (size_t s = 0; s < plan.steps.size(); ++s) {
      const StepInfo& info = plan.steps[s].info;
      DENSERT_LOG(kProfile) << info.node << "," << info.op << "," << info.implementation << ","
                            << step_ms[s] << "ms";
    }
  }
  return {};
}

Expected<std::vector<Tensor>> Engine::run(const std::vector<Tensor>& inputs,
                                          std::vector<double>* step_ms) const {
  const Plan& plan = *plan_;
  DENSERT_ASSIGN_OR_RETURN(int64_t batch, batch_from_inputs(plan.graph, inputs));

  // Contexts are pooled so that concurrent callers each get their own arena.
  std::unique_ptr<Plan::Context> ctx;
  {
    std::lock_guard<std::mutex> lock(plan.pool_mutex);
    if (!plan.pool.empty()) {
      ctx = std::move(plan.pool.back());
      plan.pool.pop_back();
    }
  }
  if (!ctx) {
    DENSERT_ASSIGN_OR_RETURN(ctx, plan.make_context());
  }
  std::vector<Tensor> outputs;
  std::vector<float*> out;
  for (size_t i = 0; i < plan.graph.outputs.size(); ++i) {
    outputs.emplace_back(output_dims(i, batch));
    out.push_back(outputs.back().data.data());
  }
  std::vector<const float*> in;
  for (const Tensor& t : inputs)
    in.push_back(t.data.data());
  const Status status = run(*ctx, batch, in.data(), out.data(), step_ms);
  {
    std::lock_guard<std::mutex> lock(plan.pool_mutex);
    plan.pool.push_back(std::move(ctx));
  }
  DENSERT_RETURN_IF_ERROR(status);
  return outputs;
}

int physical_core_count() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, physical_id;
  while (std::getline(cpuinfo, line)) {
    const auto value = [&] { return line.substr(line.find(':') + 1); };
    if (line.rfind("physical id", 0) == 0) physical_id = value();
    if (line.rfind("core id", 0) == 0) cores.insert({physical_id, value()});
  }
  if (!cores.empty()) return static_cast<int>(cores.size());
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace densert
