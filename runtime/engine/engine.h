// The fast engine: optimizes the graph, plans memory (one buffer per dense block, lifetime
// reuse for the rest) and runs every op through oneDNN primitives with JIT-compiled kernels,
// except that a BatchNormalization read only by a 1x1 convolution (directly or through a 2x2
// average pool) runs inside that convolution in densert's own kernel (NormConv1x1) on CPUs with
// AVX-512. Activations use oneDNN's blocked channel layout (nChw16c with AVX-512, nChw8c
// below). A plan covers one image;
// a batch runs the same plan once per image, which keeps every block-buffer slice a dense view.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/ir.h"
#include "runtime/passes/pass.h"

namespace densert {

// The element type a plan computes in: of its activations and weights. Inputs and outputs are
// f32 whatever the plan uses inside. Only f32 is implemented; the plan takes the type from
// here, so reduced-precision types add kernels and conversions, not a new plan.
enum class ElementType { kF32 };

const char* element_type_name(ElementType type);

struct EngineOptions {
  int threads = 0;  // 0: the number of physical cores
  ElementType element_type = ElementType::kF32;
  // Batches of at least `threads` images run one image per thread instead of every thread
  // on each image in turn; the images left over after the last full round use every thread.
  bool batch_parallel = true;
  // Lets large 3x3 convolutions use oneDNN's Winograd kernel; off gives direct kernels only.
  bool winograd = true;
  // Runs each BatchNormalization (+ ReLU or Clip) whose only reader is a 1x1 convolution
  // together with that convolution in densert's own kernel (on CPUs with AVX-512), which
  // normalizes the input tile by tile in cache instead of writing it out in full.
  bool fuse_norm_conv = true;
  OptimizeOptions optimize;
};

// One executed step of the plan, as `inspect --plan` and the profile show it.
struct StepInfo {
  std::string node;
  std::string op;
  // oneDNN's name for the kernel, densert's own ("densert_norm_conv1x1:avx512"), or
  // "reference", "view", "copy", "fused" (done by the next step that reads it)
  std::string implementation;
  double flops = 0.0;  // per image
};

struct BlockInfo {
  std::string name;
  int64_t channels = 0;           // logical
  int64_t physical_channels = 0;  // with each segment padded to the channel block
  int64_t height = 0, width = 0;
  int64_t bytes = 0;  // per image
  int views = 0;
};

struct PlanSummary {
  std::vector<PassReport> passes;
  std::vector<BlockInfo> blocks;
  std::vector<std::string> refused_blocks;
  std::vector<StepInfo> steps;
  int64_t concat_bytes_copied = 0;  // per image
  int64_t arena_bytes = 0;          // activation memory of one execution context
  int64_t weight_bytes = 0;
  int channel_block = 16;  // 16 on CPUs with AVX-512, 8 below (or under ONEDNN_MAX_CPU_ISA)
  ElementType element_type = ElementType::kF32;
  int threads = 1;
  // Steps on a reference implementation: densert's, or oneDNN's ("ref:any") where it has no
  // JIT kernel for the case.
  int reference_steps = 0;
};

// Activation memory for one run at a time: a thread that runs often keeps its own.
class ExecutionContext {
 public:
  virtual ~ExecutionContext() = default;
};

class Engine {
 public:
  // Builds the plan. Weights are copied into the kernels' layouts, and the engine drops its
  // own reference to every constant only a oneDNN primitive reads: pass the graph by value
  // (std::move) to let that memory go.
  static Expected<std::shared_ptr<Engine>> create(Graph graph, const EngineOptions& options = {});
  ~Engine();

  // Runs on inputs in graph-input order; safe to call from several threads at once.
  // With step_ms, adds each step's time in milliseconds (summed over the batch's images).
  Expected<std::vector<Tensor>> run(const std::vector<Tensor>& inputs,
                                    std::vector<double>* step_ms = nullptr) const;

  Expected<std::unique_ptr<ExecutionContext>> create_context() const;
  // Runs `batch` images from caller-owned buffers: inputs[i] holds batch images of input i
  // in row-major order, outputs[i] receives batch results of output i. No copies are made
  // beyond loading each image into the arena and reading each result out of it.
  Status run(ExecutionContext& context, int64_t batch, const float* const* inputs,
             float* const* outputs, std::vector<double>* step_ms = nullptr) const;
  // Element counts of one image's slice of input or output i, and full output dims.
  int64_t input_elements_per_image(size_t i) const;
  int64_t output_elements_per_image(size_t i) const;
  Dims output_dims(size_t i, int64_t batch) const;

  const PlanSummary& summary() const;
  // The optimized graph. Constants that only oneDNN primitives read keep their dims but no
  // data: the primitives hold the weights in their own layouts.
  const Graph& graph() const;

  struct Plan;

 private:
  Engine() = default;
  std::unique_ptr<Plan> plan_;
};

// Physical cores of this machine (hyperthreads not counted).
int physical_core_count();

}  // namespace densert
