// Google Benchmark suite: whole DenseNet fixtures at batch 1 and 8, and the building blocks
// of a DenseNet (stem, dense layer, transition) with FLOP-rate counters.
// Usage: densert_bench [--fixtures DIR] [Google Benchmark flags]
#include <benchmark/benchmark.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"

namespace densert {
namespace {

Tensor random_input(Dims dims, int64_t batch) {
  dims[0] = batch;
  Tensor t(dims);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (float& v : t.data)
    v = normal(rng);
  return t;
}

double plan_flops(const Engine& engine) {
  double flops = 0.0;
  for (const StepInfo& step : engine.summary().steps)
    flops += step.flops;
  return flops;
}

void run_engine(benchmark::State& state, const Engine& engine, const Tensor& input) {
  const int64_t batch = input.dims[0];
  for (auto _ : state) {
    auto out = engine.run({input});
    if (!out.ok()) {
      state.SkipWithError(out.status().to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(out->front().data.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(plan_flops(engine) * static_cast<double>(batch),
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["arena_bytes"] = static_cast<double>(engine.summary().arena_bytes);
}

void bench_model(benchmark::State& state, const std::string& path) {
  static std::map<std::string, std::shared_ptr<Engine>> engines;
  auto& engine = engines[path];
  if (!engine) {
    auto graph = import_onnx_file(path);
    if (!graph.ok()) return state.SkipWithError(graph.status().to_string().c_str());
    auto created = Engine::create(*graph);
    if (!created.ok()) return state.SkipWithError(created.status().to_string().c_str());
    engine = *created;
  }
  run_engine(state, *engine,
             random_input(engine->graph().value(engine->graph().inputs[0]).dims, state.range(0)));
}

// Helpers that build DenseNet pieces with random weights.
struct Builder {
  Graph graph;
  std::mt19937 rng{3};
  int next = 0;

  ValueId constant(Dims dims, float lo, float hi) {
    Tensor t(dims);
    std::uniform_real_distribution<float> dist(lo, hi);
    for (float& v : t.data)
      v = dist(rng);
    return graph.add_constant("c" + std::to_string(next++), std::move(t));
  }
  ValueId node(OpType op, std::vector<ValueId> inputs, Attributes attrs, Dims out) {
    const ValueId v = graph.add_value("v" + std::to_string(next++), out);
    graph.add_node(op, "n" + std::to_string(next++), std::move(inputs), {v}, std::move(attrs));
    return v;
  }
  ValueId bn_relu(ValueId x) {
    Dims d = graph.value(x).dims;
    const int64_t c = d[1];
    const ValueId y = node(OpType::kBatchNorm,
                           {x, constant({c}, 0.5f, 1.5f), constant({c}, -0.1f, 0.1f),
                            constant({c}, -0.1f, 0.1f), constant({c}, 0.5f, 1.5f)},
                           BatchNormAttrs{}, d);
    return node(OpType::kRelu, {y}, {}, d);
  }
  ValueId conv(ValueId x, int64_t out_c, int64_t k, int64_t stride) {
    Dims d = graph.value(x).dims;
    ConvAttrs a;
    a.window.kernel = {k, k};
    a.window.strides = {stride, stride};
    const int64_t pad = k / 2;
    a.window.pads = {pad, pad, pad, pad};
    Dims out = {d[0], out_c, (d[2] + 2 * pad - k) / stride + 1, (d[3] + 2 * pad - k) / stride + 1};
    const float bound = 1.0f / std::sqrt(static_cast<float>(d[1] * k * k));
    return node(OpType::kConv, {x, constant({out_c, d[1], k, k}, -bound, bound)}, a, out);
  }
};

// One dense layer reading `channels` of a block at size x size, growth 32.
void bench_dense_layer(benchmark::State& state) {
  const int64_t channels = state.range(0), size = state.range(1);
  Builder b;
  const ValueId x0 = b.graph.add_value("x0", {kBatchDim, channels - 32, size, size});
  b.graph.inputs = {x0};
  // A ReLU gives the block's first segment a producer that can write into the buffer.
  const ValueId stem = b.node(OpType::kRelu, {x0}, {}, {kBatchDim, channels - 32, size, size});
  const ValueId y = b.conv(b.bn_relu(b.conv(b.bn_relu(stem), 128, 1, 1)), 32, 3, 1);
  const ValueId joined =
      b.node(OpType::kConcat, {stem, y}, AxisAttrs{1}, {kBatchDim, channels, size, size});
  b.graph.outputs = {joined};
  auto engine = Engine::create(b.graph);
  if (!engine.ok()) return state.SkipWithError(engine.status().to_string().c_str());
  run_engine(state, **engine, random_input({kBatchDim, channels - 32, size, size}, 1));
}

// A transition: BN-ReLU-1x1 conv halving the channels-2x2 average pool.
void bench_transition(benchmark::State& state) {
  const int64_t channels = state.range(0), size = state.range(1);
  Builder b;
  const ValueId x = b.graph.add_value("x", {kBatchDim, channels, size, size});
  b.graph.inputs = {x};
  const ValueId c = b.conv(b.bn_relu(x), channels / 2, 1, 1);
  PoolAttrs pool;
  pool.window.kernel = {2, 2};
  pool.window.strides = {2, 2};
  b.graph.outputs = {
      b.node(OpType::kAveragePool, {c}, pool, {kBatchDim, channels / 2, size / 2, size / 2})};
  auto engine = Engine::create(b.graph);
  if (!engine.ok()) return state.SkipWithError(engine.status().to_string().c_str());
  run_engine(state, **engine, random_input({kBatchDim, channels, size, size}, 1));
}

// The ImageNet stem: 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool.
void bench_stem(benchmark::State& state) {
  Builder b;
  const ValueId x = b.graph.add_value("x", {kBatchDim, 3, 224, 224});
  b.graph.inputs = {x};
  const ValueId c = b.bn_relu(b.conv(x, 64, 7, 2));
  PoolAttrs pool;
  pool.window.kernel = {3, 3};
  pool.window.strides = {2, 2};
  pool.window.pads = {1, 1, 1, 1};
  b.graph.outputs = {b.node(OpType::kMaxPool, {c}, pool, {kBatchDim, 64, 56, 56})};
  auto engine = Engine::create(b.graph);
  if (!engine.ok()) return state.SkipWithError(engine.status().to_string().c_str());
  run_engine(state, **engine, random_input({kBatchDim, 3, 224, 224}, 1));
}

}  // namespace
}  // namespace densert

int main(int argc, char** argv) {
  std::string fixtures = "build/fixtures";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--fixtures") == 0) {
      fixtures = argv[i + 1];
      for (int j = i; j + 2 < argc + 1; ++j)
        argv[j] = argv[j + 2];
      argc -= 2;
      break;
    }
  }
  benchmark::Initialize(&argc, argv);
  BENCHMARK(densert::bench_stem)->Unit(benchmark::kMillisecond);
  BENCHMARK(densert::bench_dense_layer)
      ->Args({128, 56})
      ->Args({256, 28})
      ->Args({512, 14})
      ->Args({1024, 7})
      ->Unit(benchmark::kMillisecond);
  BENCHMARK(densert::bench_transition)
      ->Args({256, 56})
      ->Args({512, 28})
      ->Args({1024, 14})
      ->Unit(benchmark::kMillisecond);
  for (const char* name : {"densenet121_op13", "densenet169_op13", "densenet201_op13",
                           "densenet161_op13", "densenet_bc_cifar", "densenet_chained"}) {
    const std::string path = fixtures + "/" + name + ".onnx";
    if (!std::filesystem::exists(path)) continue;
    benchmark::RegisterBenchmark((std::string("model/") + name).c_str(), densert::bench_model, path)
        ->Arg(1)
        ->Arg(8)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
