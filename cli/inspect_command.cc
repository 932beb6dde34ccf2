// `densert inspect MODEL`: inputs, outputs, opset, op census and parameter count.
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"

namespace densert::cli {
namespace {

struct InspectOptions {
  std::string model;
  bool print_ir = false;
  bool print_plan = false;
  int64_t batch = 1;
};

// The optimized plan: passes, dense blocks, concat copies, arena and kernels.
int print_plan(const Graph& graph, int64_t batch) {
  Expected<std::shared_ptr<Engine>> engine = Engine::create(graph);
  if (!engine.ok()) return report(engine.status());
  const PlanSummary& summary = (*engine)->summary();
  std::printf("\nplan (batch %lld: one plan per image, run %lld times)\n",
              static_cast<long long>(batch), static_cast<long long>(batch));
  std::printf("passes:\n");
  for (const PassReport& pass : summary.passes) {
    std::printf("  %-22s %s\n", pass.name.c_str(),
                pass.ran ? (std::to_string(pass.rewrites) + " rewrites").c_str() : "disabled");
  }
  std::printf("dense blocks (channel block %d):\n", summary.channel_block);
  for (const BlockInfo& block : summary.blocks) {
    std::printf(
        "  %-8s %4lld channels (%lld physical) x %lldx%lld, %lld bytes per image, %d concat "
        "views\n",
        block.name.c_str(), static_cast<long long>(block.channels),
        static_cast<long long>(block.physical_channels), static_cast<long long>(block.height),
        static_cast<long long>(block.width), static_cast<long long>(block.bytes), block.views);
  }
  for (const std::string& reason : summary.refused_blocks)
    std::printf("  refused: %s\n", reason.c_str());
  std::printf("bytes copied by Concat per run: %lld\n",
              static_cast<long long>(summary.concat_bytes_copied * batch));
  std::printf("activation arena: %lld bytes\n", static_cast<long long>(summary.arena_bytes));
  std::printf("weights: %lld bytes\n", static_cast<long long>(summary.weight_bytes));
  std::printf("element type: %s\n", element_type_name(summary.element_type));
  std::printf("threads: %d\n", summary.threads);
  std::map<std::string, int> kernels;
  for (const StepInfo& step : summary.steps)
    ++kernels[step.op + " " + step.implementation];
  std::printf("kernels (%zu steps, %d on reference kernels):\n", summary.steps.size(),
              summary.reference_steps);
  for (const auto& [kernel, count] : kernels)
    std::printf("  %-50s %d\n", kernel.c_str(), count);
  return kExitOk;
}

int run_inspect(const InspectOptions& options) {
  Expected<Graph> graph = import_onnx_file(options.model);
  if (!graph.ok()) return report(graph.status());
  std::printf("model: %s\n", options.model.c_str());
  std::printf("opset: %lld (run as %d)\n", static_cast<long long>(graph->opset), kCanonicalOpset);
  for (ValueId id : graph->inputs) {
    std::printf("input:  %-20s f32%s\n", graph->value(id).name.c_str(),
                dims_to_string(graph->value(id).dims).c_str());
  }
  for (ValueId id : graph->outputs) {
    std::printf("output: %-20s f32%s\n", graph->value(id).name.c_str(),
                dims_to_string(graph->value(id).dims).c_str());
  }
  std::printf("parameters: %lld\n", static_cast<long long>(graph->parameter_count()));
  std::printf("nodes: %zu\n", graph->nodes.size());
  for (const auto& [op, count] : graph->op_census())
    std::printf("  %-20s %d\n", op.c_str(), count);
  for (const auto& [key, value] : graph->metadata) {
    std::printf("metadata: %s = %.60s%s\n", key.c_str(), value.c_str(),
                value.size() > 60 ? "..." : "");
  }
  if (options.print_ir) std::printf("\n%s", graph->to_text().c_str());
  if (options.print_plan) return print_plan(*graph, options.batch);
  return kExitOk;
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* sub =
      app.add_subcommand("inspect", "Describe a model: inputs, outputs, ops, parameters");
  sub->add_option("model", options->model, "ONNX model file")->required();
  sub->add_flag("--ir", options->print_ir, "Print the imported IR as text");
  sub->add_flag("--plan", options->print_plan, "Print the optimized execution plan");
  sub->add_option("--batch", options->batch, "Batch size for --plan")->check(batch_size());
  return [options] { return run_inspect(*options); };
}

}  // namespace densert::cli
