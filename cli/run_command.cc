// `densert run`: runs a model on .npy tensors and writes its outputs as .npy.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "cli/commands.h"
#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"
#include "runtime/npy.h"
#include "runtime/reference_executor.h"

namespace densert::cli {
namespace {

struct RunOptions {
  std::string model;
  std::vector<std::string> inputs;
  std::string output;
  std::string engine = "fast";
  int threads = 0;
};

// Output files: out.npy for one output; for several, out.<name>.npy, or out.<index>.<name>.npy
// for all of them when two names would give one file (a listed twice, or a/b beside a_b).
std::vector<std::string> output_paths(const std::string& base,
                                      const std::vector<std::string>& names) {
  if (names.size() == 1) return {base};
  const std::filesystem::path path(base);
  const std::string stem =
      path.extension() == ".npy" ? path.stem().string() : path.filename().string();
  const auto make = [&](bool numbered) {
    std::vector<std::string> paths;
    for (size_t i = 0; i < names.size(); ++i) {
      std::string safe = names[i];
      std::replace_if(
          safe.begin(), safe.end(), [](char c) { return c == '/' || c == ':'; }, '_');
      if (numbered) safe = std::to_string(i) + "." + safe;
      paths.push_back((path.parent_path() / (stem + "." + safe + ".npy")).string());
    }
    return paths;
  };
  std::vector<std::string> paths = make(false);
  if (std::set<std::string>(paths.begin(), paths.end()).size() < paths.size()) paths = make(true);
  return paths;
}

int run_run(const RunOptions& options) {
  Expected<Graph> graph = import_onnx_file(options.model);
  if (!graph.ok()) return report(graph.status());

  // Inputs are either positional ("x.npy", in graph-input order) or named ("name=x.npy").
  std::vector<Tensor> inputs(graph->inputs.size());
  std::vector<bool> given(graph->inputs.size(), false);
  size_t next_positional = 0;
  for (const std::string& spec : options.inputs) {
    size_t index = next_positional;
    std::string path = spec;
    const size_t eq = spec.find('=');
    if (eq != std::string::npos) {
      const std::string name = spec.substr(0, eq);
      path = spec.substr(eq + 1);
      auto it = std::find_if(graph->inputs.begin(), graph->inputs.end(),
                             [&](ValueId id) { return graph->value(id).name == name; });
      if (it == graph->inputs.end()) {
        return report(Status::bad_argument("model has no input named \"" + name + "\""));
      }
      index = static_cast<size_t>(it - graph->inputs.begin());
    } else {
      ++next_positional;
    }
    if (index >= inputs.size()) {
      return report(Status::bad_argument("more inputs given than the model takes (" +
                                         std::to_string(inputs.size()) + ")"));
    }
    if (given[index]) {
      return report(Status::bad_argument("input \"" + graph->value(graph->inputs[index]).name +
                                         "\" given twice"));
    }
    Expected<Tensor> tensor = read_npy(path);
    if (!tensor.ok()) return report(tensor.status());
    inputs[index] = std::move(tensor).value();
    given[index] = true;
  }
  for (size_t i = 0; i < given.size(); ++i) {
    if (!given[i]) {
      return report(Status::bad_argument("no tensor given for input \"" +
                                         graph->value(graph->inputs[i]).name + "\""));
    }
  }

  Expected<std::vector<Tensor>> outputs = Status::internal("no engine ran");
  if (options.engine == "reference") {
    outputs = run_reference(*graph, inputs);
  } else {
    EngineOptions engine_options;
    engine_options.threads = options.threads;
    Expected<std::shared_ptr<Engine>> engine = Engine::create(*graph, engine_options);
    if (!engine.ok()) return report(engine.status());
    outputs = (*engine)->run(inputs);
  }
  if (!outputs.ok()) return report(outputs.status());
  std::vector<std::string> names;
  for (ValueId out : graph->outputs)
    names.push_back(graph->value(out).name);
  const std::vector<std::string> paths = output_paths(options.output, names);
  for (size_t i = 0; i < outputs->size(); ++i) {
    const Tensor& out = (*outputs)[i];
    const std::string& name = names[i];
    // NaNs are skipped by min and max (and show in the mean); all NaN prints nan for both.
    float lo = NAN, hi = NAN;
    double sum = 0.0;
    for (float v : out.data) {
      sum += v;
      if (std::isnan(v)) continue;
      lo = std::isnan(lo) ? v : std::min(lo, v);
      hi = std::isnan(hi) ? v : std::max(hi, v);
    }
    std::printf("%s: f32%s min %.6g max %.6g mean %.6g\n", name.c_str(),
                dims_to_string(out.dims).c_str(), lo, hi,
                out.data.empty() ? 0.0 : sum / static_cast<double>(out.data.size()));
    if (!options.output.empty()) {
      const std::string& path = paths[i];
      Status written = write_npy(path, out);
      if (!written.ok()) return report(written);
      std::printf("  written to %s\n", path.c_str());
    }
  }
  return kExitOk;
}

}  // namespace

Command add_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* sub = app.add_subcommand("run", "Run a model on .npy tensors");
  sub->add_option("--model,-m", options->model, "ONNX model file")->required();
  sub->add_option("--input,-i", options->inputs, "Input tensor: x.npy or name=x.npy (repeatable)")
      ->required();
  sub->add_option("--engine", options->engine, "fast (oneDNN, default) or reference")
      ->check(CLI::IsMember({"fast", "reference"}));
  sub->add_option("--threads", options->threads, "Threads (default: physical cores)")
      ->check(thread_count());
  sub->add_option("--output,-o", options->output,
                  "Write outputs as .npy (several outputs: out.<name>.npy)");
  return [options] { return run_run(*options); };
}

}  // namespace densert::cli
