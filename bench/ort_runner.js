// Runs one model with ONNX Runtime (onnxruntime-node) on a .npy input and prints its latency
// and peak memory as JSON; compare.js starts one per measurement so that memory is its own.
// Usage: node ort_runner.js MODEL INPUT.npy BATCH THREADS WARMUP ITERS [OUTPUT.npy]
'use strict';
const path = require('path');
const { readNpy, writeNpy } = require('./npy');

async function main() {
  const [model, inputPath, batchText, threadsText, warmupText, itersText, outputPath] = process.argv.slice(2);
  const ortPath = process.env.DENSERT_ORT_MODULES || path.join(__dirname, 'node_modules');
  const ort = require(path.join(ortPath, 'onnxruntime-node'));
  const batch = Number(batchText);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threadsText),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const input = readNpy(inputPath);
  const perImage = input.data.length / input.shape[0];
  const dims = [batch, ...input.shape.slice(1)];
  const tensor = new ort.Tensor('float32', input.data.slice(0, batch * perImage), dims);
  const feeds = { [session.inputNames[0]]: tensor };
  let result;
  for (let i = 0; i < Number(warmupText); ++i) result = await session.run(feeds);
  const latencies = [];
  for (let i = 0; i < Number(itersText); ++i) {
    const start = process.hrtime.bigint();
    result = await session.run(feeds);
    latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  latencies.sort((a, b) => a - b);
  const output = result[session.outputNames[0]];
  if (outputPath) writeNpy(outputPath, output.data, output.dims);
  console.log(JSON.stringify({
    p50: latencies[Math.floor((latencies.length - 1) / 2)],
    min: latencies[0],
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
  }));
}

main().catch((e) => {
  console.error(`ort_runner: ${e.message}`);
  process.exit(1);
});
