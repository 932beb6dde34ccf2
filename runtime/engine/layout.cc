// Where every value lives: layouts, the dense-block buffers, the fused steps and the arena.
#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "runtime/engine/plan.h"
#include "runtime/host.h"
#include "runtime/log.h"
#include "runtime/memory_planner.h"

namespace densert {
namespace engine_detail {

int64_t native_channel_block() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  return (isa & avx512) == avx512 ? 16 : 8;
}

Placement blocked_placement(const Dims& dims, int64_t block) {
  Placement p;
  p.blocked = true;
  p.dims = dims;
  p.block = block;
  p.physical_channels = round_up(dims[1], block);
  for (int64_t c = 0; c < dims[1]; ++c)
    p.channel_map.push_back(c);
  return p;
}

memory::desc plain_desc(const Dims& dims, memory::data_type type) {
  static const Tag tags[] = {Tag::a, Tag::a, Tag::ab, Tag::abc, Tag::abcd, Tag::abcde, Tag::abcdef};
  memory::dims d(dims.begin(), dims.end());
  if (d.empty()) d = {1};
  return memory::desc(d, type, tags[std::min<size_t>(d.size(), 6)]);
}

memory::desc desc_of(const Placement& p, memory::data_type type) {
  if (p.blocked) {
    return memory::desc({1, p.physical_channels, p.height(), p.width()}, type,
                        p.block == 16 ? Tag::nChw16c : Tag::nChw8c);
  }
  return plain_desc(p.dims, type);
}

memory::data_type data_type_of(ElementType type) {
  switch (type) {
    case ElementType::kF32:
      break;
  }
  return memory::data_type::f32;
}

int64_t element_bytes(ElementType type) {
  switch (type) {
    case ElementType::kF32:
      break;
  }
  return 4;
}

namespace {

// Index of logical channel c at pixel hw (h * width + w) of a blocked placement.
int64_t blocked_index(const Placement& p, int64_t c, int64_t hw) {
  const int64_t phys = p.channel_map[c];
  return ((phys / p.block) * p.height() * p.width() + hw) * p.block + phys % p.block;
}

}  // namespace

void gather(const Placement& p, ElementType type, const void* data, float* out) {
  // f32 is the only element type so far: elements copy as they are.
  (void)type;
  const auto* base = static_cast<const float*>(data);
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

void scatter(const Placement& p, ElementType type, const float* in, void* data) {
  (void)type;
  auto* base = static_cast<float*>(data);
  if (!p.blocked) {
    std::memcpy(base, in, sizeof(float) * num_elements(p.dims));
    return;
  }
  std::fill(base, base + p.elements(), 0.0f);
  const int64_t hw = p.height() * p.width();
  for (int64_t c = 0; c < p.dims[1]; ++c) {
    for (int64_t i = 0; i < hw; ++i)
      base[blocked_index(p, c, i)] = in[c * hw + i];
  }
}

}  // namespace engine_detail

using engine_detail::blocked_placement;
using engine_detail::round_up;

namespace {

// Ops that run on a blocked input in its own channel layout, writing the same layout out.
bool keeps_source_layout(OpType op) {
  switch (op) {
    case OpType::kBatchNorm:
    case OpType::kRelu:
    case OpType::kClip:
    case OpType::kMaxPool:
    case OpType::kAveragePool:
    case OpType::kGlobalAveragePool:
      return true;
    default:
      return false;
  }
}

}  // namespace

Status Engine::Plan::plan_layouts(const std::vector<Dims>& dims) {
  const size_t count = graph.values.size();
  placements.assign(count, Placement{});
  for (size_t v = 0; v < count; ++v) {
    placements[v].dims = dims[v];
    if (!dims[v].empty()) placements[v].dims[0] = graph.values[v].is_constant() ? dims[v][0] : 1;
    placements[v].constant = graph.values[v].is_constant();
  }
  // A 4-D input that convolutions read is blocked when it has a channel block or more: oneDNN's
  // JIT kernels take a plain src only for fewer channels (an image's 1 to 4), and loading the
  // input converts it at no extra pass. Its other readers must take the blocked layout too.
  const auto takes_blocked = [](OpType op) {
    return op == OpType::kConv || op == OpType::kConcat || op == OpType::kFlatten ||
           op == OpType::kReshape || keeps_source_layout(op);
  };
  std::vector<bool> read_by_conv(count, false), read_by_other(count, false);
  for (const Node& node : graph.nodes) {
    for (ValueId in : node.inputs) {
      if (in == kNoValue) continue;
      read_by_conv[in] = read_by_conv[in] || node.op == OpType::kConv;
      read_by_other[in] = read_by_other[in] || !takes_blocked(node.op);
    }
  }
  for (ValueId in : graph.inputs) {
    const Dims& d = placements[in].dims;
    if (d.size() == 4 && d[1] >= channel_block && read_by_conv[in] && !read_by_other[in]) {
      placements[in] = blocked_placement(d, channel_block);
    }
  }
  // Block buffers first: segments are padded one by one; views take the map of their prefix.
  for (const DenseBlock& block : graph.blocks) {
    std::vector<int64_t> map;
    int64_t physical = 0;
    for (ValueId segment : block.segments) {
      Placement& p = placements[segment];
      p = blocked_placement(p.dims, channel_block);
      for (int64_t c = 0; c < p.dims[1]; ++c)
        map.push_back(physical + c);
      physical += p.physical_channels;
    }
    for (ValueId view : block.views) {
      Placement& p = placements[view];
      const Dims logical = p.dims;
      p = blocked_placement(logical, channel_block);
      p.channel_map.assign(map.begin(), map.begin() + logical[1]);
      p.physical_channels = logical[1] == 0 ? 0 : round_up(map[logical[1] - 1] + 1, channel_block);
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
        dst = blocked_placement(logical, channel_block);
        break;
      case OpType::kConcat:
        if (logical.size() == 4) dst = blocked_placement(logical, channel_block);
        break;
      default:
        if (keeps_source_layout(node.op) && src.blocked) {
          // Keep the source's channel layout so the op runs without reshuffling.
          dst = src;
          dst.dims = logical;
          dst.request = -1;
          dst.offset = 0;
          dst.constant = false;
        }
        break;
    }
  }

  return {};
}

Status Engine::Plan::plan_memory_requests() {
  // Every placement gets a request, except views that share another value's bytes.
  const int last_step = static_cast<int>(graph.nodes.size());
  std::vector<BufferRequest> requests;
  const auto new_request = [&](int64_t elements, int first) {
    requests.push_back({elements * element_bytes, first, first});
    return static_cast<int>(requests.size() - 1);
  };
  std::vector<int> block_request(graph.blocks.size(), -1);
  for (size_t b = 0; b < graph.blocks.size(); ++b) {
    const DenseBlock& block = graph.blocks[b];
    int64_t elements = 0;
    int first = last_step;
    for (ValueId segment : block.segments) {
      Placement& p = placements[segment];
      p.offset = elements;  // physical channels before it are whole blocks of H*W*block elements
      elements += p.elements();
      first = std::min(first, static_cast<int>(graph.value(segment).producer));
    }
    block_request[b] = new_request(elements, first);
    for (ValueId segment : block.segments)
      placements[segment].request = block_request[b];
    for (ValueId view : block.views) {
      placements[view].request = block_request[b];
      placements[view].offset = 0;
    }
  }
  for (ValueId in : graph.inputs)
    placements[in].request = new_request(placements[in].elements(), 0);
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
      } else if (norm_fused[n]) {
        p.request = new_request(0, static_cast<int>(n));  // never written
      } else {
        p.request = new_request(p.elements(), static_cast<int>(n));
      }
    }
  }
  // A request lives until the last step that reads any value placed in it.
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    std::vector<ValueId> reads = graph.nodes[n].inputs;
    if (norm_chain[n].norm >= 0) reads.push_back(graph.nodes[norm_chain[n].norm].inputs[0]);
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
  request_offsets = plan.offsets;
  arena_bytes = plan.arena_bytes;
  summary.arena_bytes = plan.arena_bytes;
  if (const int64_t memory = physical_memory_bytes(); memory > 0 && arena_bytes > memory) {
    return Status::unsupported("the plan's activations take " + bytes_to_string(arena_bytes) +
                               " per image, more than this machine's memory (" +
                               bytes_to_string(memory) + ")");
  }
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
    info.physical_channels =
        info.bytes / element_bytes / std::max<int64_t>(info.height * info.width, 1);
    info.views = static_cast<int>(block.views.size());
    summary.blocks.push_back(info);
  }
  return {};
}

void Engine::Plan::find_norm_convs() {
  norm_chain.assign(graph.nodes.size(), NormChain{});
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
  // The node that writes v, if v has no other reader (nothing else may need it in memory).
  const auto sole_producer = [&](ValueId v, const Node& conv) -> const Node* {
    const NodeId p = graph.value(v).producer;
    if (p < 0) return nullptr;
    if (readers[v] != 1) {
      const OpType op = graph.nodes[p].op;
      if (op == OpType::kBatchNorm || op == OpType::kRelu || op == OpType::kClip ||
          op == OpType::kAveragePool) {
        DENSERT_LOG(kDispatch) << "not fused: " << graph.nodes[p].name << " into " << conv.name
                               << ": its output has other readers";
      }
      return nullptr;
    }
    return &graph.nodes[p];
  };
  // The kernel works on nChw16c: a plan in 8-channel blocks (below AVX-512) has no use for it.
  const bool cpu_ok = NormConv1x1::supported() && channel_block == 16;
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
    // Walk back from the convolution's input: pool, then activation, then the normalization.
    NormChain chain;
    const Node* node = sole_producer(conv.inputs[0], conv);
    if (node && halving_pool(*node)) {
      chain.pool = graph.value(node->outputs[0]).producer;
      node = sole_producer(node->inputs[0], conv);
    }
    if (node && (node->op == OpType::kRelu || node->op == OpType::kClip)) {
      chain.activation = graph.value(node->outputs[0]).producer;
      node = sole_producer(node->inputs[0], conv);
    }
    if (!node || node->op != OpType::kBatchNorm) continue;
    if (chain.activation >= 0 && !node->attrs_as<BatchNormAttrs>().activation.none()) continue;
    chain.norm = graph.value(node->outputs[0]).producer;
    const Placement& src = placements[node->inputs[0]];
    std::string refused;
    if (!src.blocked || src.dims.size() != 4 || !placements[conv.outputs[0]].blocked) {
      refused = "not in the blocked layout";
    } else if (!cpu_ok) {
      refused = "densert's kernel needs AVX-512 and 16-channel blocks, the plan has " +
                std::to_string(channel_block);
    } else if (element_type != ElementType::kF32) {
      refused = std::string("densert's kernel computes in f32, the plan in ") +
                element_type_name(element_type);
    }
    if (!refused.empty()) {
      DENSERT_LOG(kDispatch) << "not fused: " << node->name << " into " << conv.name << ": "
                             << refused;
      continue;
    }
    norm_chain[n] = chain;
    std::string absorbed;
    for (NodeId id : {chain.norm, chain.activation, chain.pool}) {
      if (id < 0) continue;
      norm_fused[id] = true;
      absorbed += (absorbed.empty() ? "" : ", ") + graph.nodes[id].name;
    }
    DENSERT_LOG(kDispatch) << "fused: " << absorbed << " into " << conv.name;
  }
}

Activation Engine::Plan::norm_activation(const NormChain& chain) const {
  if (chain.activation < 0) return graph.nodes[chain.norm].attrs_as<BatchNormAttrs>().activation;
  const Node& node = graph.nodes[chain.activation];
  if (node.op == OpType::kRelu) return Activation::relu();
  return Activation::clip(node.attrs_as<ClipAttrs>().min, node.attrs_as<ClipAttrs>().max);
}

}  // namespace densert
