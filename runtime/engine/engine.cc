// Execution contexts and runs: each image's steps in order, one image per thread for batches.
#include "runtime/engine/engine.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "runtime/engine/plan.h"
#include "runtime/log.h"
#include "runtime/reference_executor.h"
#include "runtime/shape_inference.h"

namespace densert {

using engine_detail::ArgRef;
using engine_detail::gather;
using engine_detail::Placement;
using engine_detail::round_up;
using engine_detail::scatter;
using engine_detail::StepKind;

Expected<std::unique_ptr<Engine::Plan::Context>> Engine::Plan::make_context() const {
  auto ctx = std::make_unique<Context>();
  ctx->owner = this;
  const size_t bytes = static_cast<size_t>(round_up(std::max<int64_t>(arena_bytes, 64), 64));
  ctx->arena = static_cast<char*>(std::aligned_alloc(64, bytes));
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
        ctx->args[s].emplace(ref.arg, memory(desc(ref.value), cpu, address(*ctx, ref.value)));
      }
    }
  }
  return ctx;
}

Status Engine::Plan::run_image(Context& ctx, const std::vector<const float*>& inputs,
                               const std::vector<float*>& outputs,
                               std::vector<double>* step_ms) const {
  for (size_t i = 0; i < inputs.size(); ++i) {
    scatter(placements[graph.inputs[i]], element_type, inputs[i], address(ctx, graph.inputs[i]));
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
        // Only f32 plans fuse (find_norm_convs).
        step.norm_conv->run(static_cast<const float*>(address(ctx, step.norm_src)),
                            static_cast<float*>(address(ctx, node.outputs[0])),
                            static_cast<float*>(ctx.scratch),
                            std::min(omp_get_max_threads(), threads));
        break;
      case StepKind::kToPlain: {
        const Placement& dst = placements[node.outputs[0]];
        std::vector<float> plain(static_cast<size_t>(num_elements(dst.dims)));
        gather(placements[node.inputs[0]], element_type, address(ctx, node.inputs[0]),
               plain.data());
        scatter(dst, element_type, plain.data(), address(ctx, node.outputs[0]));
        break;
      }
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
            gather(p, element_type, address(ctx, in), joined.data() + offset);
          }
          offset += static_cast<size_t>(num_elements(p.dims));
        }
        scatter(dst, element_type, joined.data(), address(ctx, node.outputs[0]));
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
            gather(placements[id], element_type, address(ctx, id), owned[i].data.data());
            in.push_back(&owned[i]);
          }
        }
        DENSERT_ASSIGN_OR_RETURN(std::vector<Tensor> out, run_reference_node(graph, node, in));
        scatter(placements[node.outputs[0]], element_type, out[0].data.data(),
                address(ctx, node.outputs[0]));
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
      gather(placements[id], element_type, address(ctx, id), outputs[i]);
    }
  }
  return {};
}

Status Engine::Plan::build(const EngineOptions& options) {
  threads = options.threads > 0 ? options.threads : physical_core_count();
  batch_parallel = options.batch_parallel;
  winograd = options.winograd;
  element_type = options.element_type;
  data_type = engine_detail::data_type_of(element_type);
  element_bytes = engine_detail::element_bytes(element_type);
  channel_block = engine_detail::native_channel_block();
  summary.channel_block = static_cast<int>(channel_block);
  summary.element_type = element_type;
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
  if (symbolic) {
    // A reshape can fold the batch into another dim (a target of [-1], say) while its declared
    // shape still leads with N: shapes at two batch sizes tell.
    DENSERT_ASSIGN_OR_RETURN(std::vector<Dims> dims2, infer_shapes(graph, 2));
    for (size_t v = 0; v < dims.size(); ++v) {
      const Dims& one = dims[v];
      const Dims& two = dims2[v];
      if (graph.values[v].is_constant() || one.empty()) continue;
      if (one[0] != 1 || two[0] != 2 || !std::equal(one.begin() + 1, one.end(), two.begin() + 1)) {
        return Status::unsupported("value \"" + graph.values[v].name + "\" has shape " +
                                   dims_to_string(one) + " at batch 1 and " + dims_to_string(two) +
                                   " at batch 2: it does not keep the batch as its first dim");
      }
    }
  }
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
  // convolutions scale poorly across cores, whole images do not. Images left over after the
  // last full round (the 3rd of 3 on two threads) run on every thread, so no core idles.
  // Profiling keeps to one image at a time so that step times stay comparable.
  const bool per_thread =
      plan.batch_parallel && !profile && plan.threads > 1 && batch >= plan.threads;
  const int64_t workers = per_thread ? plan.threads : 1;
  const int64_t split = per_thread ? batch / workers * workers : 0;  // images run one per thread
  if (split > 0) {
    while (static_cast<int64_t>(ctx->workers.size()) < workers - 1) {
      DENSERT_ASSIGN_OR_RETURN(std::unique_ptr<Plan::Context> extra, plan.make_context());
      ctx->workers.push_back(std::move(extra));
    }
    std::vector<Status> results(static_cast<size_t>(workers));
    std::vector<std::thread> threads;
    for (int64_t w = 0; w < workers; ++w) {
      const int64_t first = split * w / workers;
      const int64_t count = split * (w + 1) / workers - first;
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
  if (split < batch) {
    omp_set_num_threads(plan.threads);
    DENSERT_RETURN_IF_ERROR(run_images(*ctx, split, batch - split, profile ? &step_ms : nullptr));
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

const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::kF32:
      break;
  }
  return "f32";
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
