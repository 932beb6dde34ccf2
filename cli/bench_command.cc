// `densert bench`: latency percentiles, throughput, load and plan time, peak memory, and with
// --profile a per-step table of where the time goes.
#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "cli/commands.h"
#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"
#include "runtime/host.h"
#include "runtime/npy.h"

namespace densert::cli {
namespace {

struct BenchOptions {
  std::string model;
  int64_t batch = 1;
  int threads = 0;
  int warmup = 5;
  int iters = 0;
  double seconds = 5.0;
  bool json = false;
  bool profile = false;
  bool image_per_thread = true;
  std::string input;   // .npy to run on instead of random data
  std::string output;  // .npy to write the last run's first output to
};

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double percentile(std::vector<double> sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// --seconds: more than zero, at most a day; inf and nan are refused.
CLI::Validator seconds_range() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0.0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (stop != end || error != std::errc() || !(value > 0.0 && value <= 86400.0))
          return "expects seconds above 0 and at most 86400, got \"" + text + "\"";
        return "";
      },
      "SECONDS");
}

int run_bench(const BenchOptions& options) {
  const auto load_start = Clock::now();
  Expected<Graph> graph = import_onnx_file(options.model);
  if (!graph.ok()) return report(graph.status());
  const double load_ms = ms_since(load_start);
  const auto plan_start = Clock::now();
  EngineOptions engine_options;
  engine_options.threads = options.threads;
  engine_options.batch_parallel = options.image_per_thread;
  Expected<std::shared_ptr<Engine>> engine = Engine::create(std::move(*graph), engine_options);
  if (!engine.ok()) return report(engine.status());
  const double plan_ms = ms_since(plan_start);

  std::vector<Tensor> inputs;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (!options.input.empty()) {
    if ((*engine)->graph().inputs.size() != 1)
      return report(Status::bad_argument("--input needs a model with one input"));
    Expected<Tensor> given = read_npy(options.input);
    if (!given.ok()) return report(given.status());
    if (given->dims.empty() || given->dims[0] < options.batch) {
      return report(Status::bad_argument(options.input + ": holds fewer than " +
                                         std::to_string(options.batch) + " images"));
    }
    const int64_t per_image = given->numel() / given->dims[0];
    Dims dims = given->dims;
    dims[0] = options.batch;
    inputs.push_back(Tensor(
        dims,
        std::vector<float>(given->data.begin(), given->data.begin() + options.batch * per_image)));
  }
  // Random inputs, unless --input gave them. Their size is checked before any is made.
  if (options.input.empty()) {
    const int64_t memory = physical_memory_bytes();
    std::vector<Dims> shapes;
    int64_t elements = 0;
    for (ValueId id : (*engine)->graph().inputs) {
      Dims dims = (*engine)->graph().value(id).dims;
      std::replace(dims.begin(), dims.end(), kBatchDim, options.batch);
      const int64_t count = num_elements(dims);
      elements = count > INT64_MAX - elements ? INT64_MAX : elements + count;
      if (memory > 0 && elements > memory / 2 / 4) {
        const int64_t bytes = elements > INT64_MAX / 4 ? INT64_MAX : elements * 4;
        return report(Status::bad_argument("--batch " + std::to_string(options.batch) +
                                           ": the inputs alone take " + bytes_to_string(bytes) +
                                           ", more than half of this machine's memory (" +
                                           bytes_to_string(memory) + ")"));
      }
      shapes.push_back(std::move(dims));
    }
    for (const Dims& dims : shapes) {
      Tensor t(dims);
      for (float& v : t.data)
        v = normal(rng);
      inputs.push_back(std::move(t));
    }
  }
  for (int i = 0; i < options.warmup; ++i) {
    auto out = (*engine)->run(inputs);
    if (!out.ok()) return report(out.status());
  }
  std::vector<double> latencies;
  std::vector<double> step_ms;
  std::vector<Tensor> last_outputs;
  const auto bench_start = Clock::now();
  while (options.iters > 0
             ? static_cast<int>(latencies.size()) < options.iters
             : ms_since(bench_start) < options.seconds * 1000.0 || latencies.size() < 3) {
    const auto start = Clock::now();
    auto out = (*engine)->run(inputs, options.profile ? &step_ms : nullptr);
    latencies.push_back(ms_since(start));
    if (!out.ok()) return report(out.status());
    last_outputs = std::move(out).value();
  }
  if (!options.output.empty()) {
    Status written = write_npy(options.output, last_outputs.front());
    if (!written.ok()) return report(written);
  }
  std::vector<double> sorted = latencies;
  std::sort(sorted.begin(), sorted.end());
  const double p50 = percentile(sorted, 0.5);
  const PlanSummary& summary = (*engine)->summary();
  nlohmann::json result = {
      {"model", options.model},
      {"batch", options.batch},
      {"threads", summary.threads},
      {"iterations", latencies.size()},
      {"latency_ms",
       {{"min", sorted.front()},
        {"p50", p50},
        {"p90", percentile(sorted, 0.9)},
        {"p99", percentile(sorted, 0.99)},
        {"max", sorted.back()}}},
      {"throughput_images_per_s", 1000.0 * static_cast<double>(options.batch) / p50},
      {"load_ms", load_ms},
      {"plan_ms", plan_ms},
      {"peak_rss_bytes", peak_rss_bytes()},
      {"arena_bytes", summary.arena_bytes},
  };
  if (options.json) {
    std::printf("%s\n",
                result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("model       %s\nbatch       %lld\nthreads     %d\niterations  %zu\n",
                options.model.c_str(), static_cast<long long>(options.batch), summary.threads,
                latencies.size());
    std::printf("latency ms  min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", sorted.front(),
                p50, percentile(sorted, 0.9), percentile(sorted, 0.99), sorted.back());
    std::printf("throughput  %.1f images/s\n", 1000.0 * static_cast<double>(options.batch) / p50);
    std::printf("load        %.1f ms\nplan        %.1f ms\n", load_ms, plan_ms);
    std::printf("peak RSS    %.1f MiB\narena       %.2f MiB\n", peak_rss_bytes() / 1048576.0,
                summary.arena_bytes / 1048576.0);
  }
  if (options.profile) {
    // Per step: share of time, kernel, FLOPs and achieved rate, slowest first.
    const double runs = static_cast<double>(latencies.size());
    const double total = std::accumulate(step_ms.begin(), step_ms.end(), 0.0);
    std::vector<size_t> order(step_ms.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return step_ms[a] > step_ms[b]; });
    std::printf("\n%-52s %-20s %-26s %8s %7s %9s %8s\n", "node", "op", "implementation", "ms",
                "share", "MFLOP", "GFLOP/s");
    for (size_t s : order) {
      const StepInfo& info = summary.steps[s];
      const double ms = step_ms[s] / runs;
      const double mflop = info.flops * static_cast<double>(options.batch) / 1e6;
      std::printf("%-52.52s %-20s %-26s %8.3f %6.1f%% %9.1f %8.1f\n", info.node.c_str(),
                  info.op.c_str(), info.implementation.c_str(), ms,
                  total > 0 ? 100.0 * step_ms[s] / total : 0.0, mflop, ms > 0 ? mflop / ms : 0.0);
    }
  }
  return kExitOk;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench", "Measure a model's latency and throughput");
  sub->add_option("--model,-m", options->model, "ONNX model file")->required();
  sub->add_option("--batch", options->batch, "Images per run")->check(batch_size());
  sub->add_option("--threads", options->threads, "Threads (default: physical cores)")
      ->check(thread_count());
  sub->add_option("--warmup", options->warmup, "Untimed runs first")->check(at_least(0));
  auto* iters = sub->add_option("--iters", options->iters, "Timed runs")->check(at_least(1));
  sub->add_option("--seconds", options->seconds, "Time to spend on timed runs (default 5)")
      ->check(seconds_range())
      ->excludes(iters);
  sub->add_flag("--json", options->json, "Print the results as JSON");
  sub->add_flag("!--all-threads-per-image", options->image_per_thread,
                "Run each image of a batch on every thread instead of one image per thread");
  sub->add_option("--input", options->input, "Run on the first --batch images of this .npy");
  sub->add_option("--output", options->output, "Write the first output of the last run as .npy");
  sub->add_flag("--profile", options->profile, "Add a per-step time table");
  return [options] { return run_bench(*options); };
}

}  // namespace densert::cli
