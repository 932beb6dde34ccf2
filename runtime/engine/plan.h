// The engine's plan, shared by the files that build and run it (not part of densert's API).
//
// A value lives in one of two layouts. Blocked values (4-D activations) use oneDNN's blocked
// channel layout: nChw16c on CPUs with AVX-512, nChw8c below (oneDNN's AVX2 and SSE4.1 kernels
// take only 8-channel blocks and run 16-channel ones on its reference kernel). Their physical
// channel count is rounded up to the block, with a map from logical to physical channels. Every
// consumer's weights or parameters are expanded with zeros at the unused physical channels,
// so whatever finite values those hold (zeros from the arena, or a Clip's floor) never reach
// a result. Plain values use the logical row-major layout. Block buffers hold one segment per
// concatenated value, each padded to the channel block, so every segment and every prefix is a
// dense descriptor at an offset: oneDNN keeps its JIT kernels for them (it falls back to its
// reference kernel for sub-memory views).
//
// Files: layout.cc places values and plans memory, primitives.cc builds one step per node,
// engine.cc makes execution contexts and runs the steps.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/engine/norm_conv1x1.h"

namespace densert {
namespace engine_detail {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;

// The channel block oneDNN's JIT kernels want on this CPU (16 or 8), after any cap that
// ONEDNN_MAX_CPU_ISA sets.
int64_t native_channel_block();

inline int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

struct Placement {
  bool blocked = false;
  int request = -1;                  // memory request that owns the bytes
  int64_t offset = 0;                // elements from the start of the request
  Dims dims;                         // logical dims of one image
  int64_t block = 0;                 // blocked only: channels per block, 16 or 8
  int64_t physical_channels = 0;     // blocked only: a multiple of block
  std::vector<int64_t> channel_map;  // blocked only: physical channel of each logical one
  bool constant = false;

  int64_t height() const { return dims.size() == 4 ? dims[2] : 1; }
  int64_t width() const { return dims.size() == 4 ? dims[3] : 1; }
  int64_t elements() const {
    return blocked ? physical_channels * height() * width() : num_elements(dims);
  }
};

// A blocked placement of `dims` with channels in order, padded to the block.
Placement blocked_placement(const Dims& dims, int64_t block);
memory::desc plain_desc(const Dims& dims, memory::data_type type);
// The dense oneDNN descriptor of one image of a placement.
memory::desc desc_of(const Placement& p, memory::data_type type);
memory::data_type data_type_of(ElementType type);
int64_t element_bytes(ElementType type);
// Copies a placement's logical contents (elements of `type` at base) into a plain row-major
// f32 buffer.
void gather(const Placement& p, ElementType type, const void* base, float* out);
// Writes a plain row-major f32 buffer into a placement, zeroing its padding channels.
void scatter(const Placement& p, ElementType type, const float* in, void* base);

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

}  // namespace engine_detail

struct Engine::Plan {
  using Placement = engine_detail::Placement;
  using Step = engine_detail::Step;
  using memory = dnnl::memory;

  Graph graph;
  dnnl::engine cpu{dnnl::engine::kind::cpu, 0};
  std::vector<Placement> placements;  // per value
  ElementType element_type = ElementType::kF32;
  memory::data_type data_type = memory::data_type::f32;
  int64_t element_bytes = 4;
  int64_t channel_block = 16;            // of every blocked placement
  std::vector<int64_t> request_offsets;  // bytes, per memory request
  int64_t arena_bytes = 0;
  std::vector<memory> constants;
  std::vector<Step> steps;
  PlanSummary summary;
  int threads = 1;
  bool batch_parallel = true;
  bool winograd = true;
  bool fuse_norm_conv = true;
  // What a 1x1 convolution absorbs: BatchNormalization -> [Relu | Clip] -> [2x2 average
  // pool] -> the convolution. Nodes are -1 where absent (norm == -1: nothing fused).
  struct NormChain {
    NodeId norm = -1, activation = -1, pool = -1;
  };
  std::vector<NormChain> norm_chain;  // per node
  std::vector<bool> norm_fused;       // per node: absorbed by a later convolution

  struct Context : ExecutionContext {
    const Plan* owner = nullptr;
    char* arena = nullptr;
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

  void* address(Context& ctx, ValueId v) const {
    const Placement& p = placements[v];
    return ctx.arena + request_offsets[p.request] + p.offset * element_bytes;
  }
  memory::desc desc(ValueId v) const { return engine_detail::desc_of(placements[v], data_type); }

  // The activation the normalized input gets: the BatchNormalization's own or the node's.
  Activation norm_activation(const NormChain& chain) const;
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
  Status add_norm_conv(Step& step, const NormChain& chain, const Node& conv,
                       const std::vector<Dims>& dims);
  Status add_eltwise(Step& step, const Node& node);
  Status add_pool(Step& step, const Node& node, const std::vector<Dims>& dims);
  Status add_gemm(Step& step, const Node& node, dnnl::stream& stream);
  Status add_softmax(Step& step, const Node& node);
};

}  // namespace densert
