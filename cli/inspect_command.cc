// `densert inspect MODEL`: inputs, outputs, opset, op census and parameter count.
#include <cstdio>

#include "cli/commands.h"
#include "importer/onnx_importer.h"

namespace densert::cli {
namespace {

struct InspectOptions {
  std::string model;
  bool print_ir = false;
};

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
  for (const auto& [op, count] : graph->op_census()) std::printf("  %-20s %d\n", op.c_str(), count);
  for (const auto& [key, value] : graph->metadata) {
    std::printf("metadata: %s = %.60s%s\n", key.c_str(), value.c_str(), value.size() > 60 ? "..." : "");
  }
  if (options.print_ir) std::printf("\n%s", graph->to_text().c_str());
  return kExitOk;
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand("inspect", "Describe a model: inputs, outputs, ops, parameters");
  sub->add_option("model", options->model, "ONNX model file")->required();
  sub->add_flag("--ir", options->print_ir, "Print the imported IR as text");
  return [options] { return run_inspect(*options); };
}

}  // namespace densert::cli
