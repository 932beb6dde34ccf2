// Runs densert and ONNX Runtime side by side on the same models and inputs, alternating
// the two so that machine drift hits both, checks that their outputs agree, and prints a
// Markdown table (optionally a chart via gnuplot).
// Usage: node bench/compare.js --densert build/cli/densert --models a.onnx,b.onnx
//          [--batches 1,8] [--threads 2] [--rounds 5] [--iters 10] [--chart out.svg]
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { readNpy, writeNpy } = require('./npy');

function parseArgs() {
  const args = { batches: '1,8', threads: '2', rounds: '5', iters: '10', warmup: '3' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
  if (!args.densert || !args.models) {
    console.error('usage: node compare.js --densert BIN --models A.onnx[,B.onnx] [--batches 1,8] [--threads 2] [--rounds 5] [--iters 10] [--chart out.svg]');
    process.exit(2);
  }
  return args;
}

// A seeded standard-normal input of the model's image size, shared by both runtimes.
function makeInput(file, batch, shape) {
  let seed = 12345;
  const uniform = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) + 0.5) / 2147483648;
  const count = batch * shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const t = 2 * Math.PI * uniform();
    data[i] = r * Math.cos(t);
    if (i + 1 < count) data[i + 1] = r * Math.sin(t);
  }
  writeNpy(file, data, [batch, ...shape]);
}

function imageShape(densert, model) {
  const text = execFileSync(densert, ['inspect', model]).toString();
  const dims = text.match(/input:\s+\S+\s+f32\[([^\]]*)\]/)[1].split(',').slice(1).map(Number);
  return dims;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function agreement(a, b) {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < a.data.length; ++i) {
    maxDiff = Math.max(maxDiff, Math.abs(a.data[i] - b.data[i]));
    maxRef = Math.max(maxRef, Math.abs(b.data[i]));
  }
  const rows = a.shape[0];
  const classes = a.data.length / rows;
  let same = 0;
  for (let r = 0; r < rows; ++r) {
    const argmax = (x) => { let best = 0; for (let c = 1; c < classes; ++c) if (x[r * classes + c] > x[r * classes + best]) best = c; return best; };
    if (argmax(a.data) === argmax(b.data)) ++same;
  }
  return { maxDiff, maxRef, top1: `${same}/${rows}` };
}

function main() {
  const args = parseArgs();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'densert-compare-'));
  const rows = [];
  for (const model of args.models.split(',')) {
    const shape = imageShape(args.densert, model);
    for (const batch of args.batches.split(',').map(Number)) {
      const input = path.join(work, `input_${batch}.npy`);
      makeInput(input, batch, shape);
      const densertTimes = [];
      const ortTimes = [];
      let densertRss = 0;
      let ortRss = 0;
      const densertOut = path.join(work, 'densert_out.npy');
      const ortOut = path.join(work, 'ort_out.npy');
      for (let round = 0; round < Number(args.rounds); ++round) {
        const d = JSON.parse(execFileSync(args.densert, ['bench', '--model', model, '--batch', String(batch),
          '--threads', args.threads, '--warmup', args.warmup, '--iters', args.iters, '--input', input,
          '--output', densertOut, '--json']).toString());
        densertTimes.push(d.latency_ms.p50);
        densertRss = Math.max(densertRss, d.peak_rss_bytes);
        const o = JSON.parse(execFileSync('node', [path.join(__dirname, 'ort_runner.js'), model, input, String(batch),
          args.threads, args.warmup, args.iters, ortOut]).toString());
        ortTimes.push(o.p50);
        ortRss = Math.max(ortRss, o.peak_rss_bytes);
      }
      const agree = agreement(readNpy(densertOut), readNpy(ortOut));
      rows.push({
        model: path.basename(model, '.onnx'), batch, threads: Number(args.threads),
        densert: median(densertTimes), ort: median(ortTimes), densertRss, ortRss, agree,
      });
      const last = rows[rows.length - 1];
      console.error(`${last.model} batch ${batch}: densert ${last.densert.toFixed(2)} ms, ONNX Runtime ${last.ort.toFixed(2)} ms`);
    }
  }
  const mib = (b) => (b / 1048576).toFixed(0);
  console.log('| model | batch | threads | densert p50 (ms) | ONNX Runtime p50 (ms) | ratio | densert peak RSS (MiB) | ONNX Runtime peak RSS (MiB) | max abs diff / max abs | top-1 agree |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.model} | ${r.batch} | ${r.threads} | ${r.densert.toFixed(2)} | ${r.ort.toFixed(2)} | ${(r.densert / r.ort).toFixed(2)} | ${mib(r.densertRss)} | ${mib(r.ortRss)} | ${(r.agree.maxDiff / r.agree.maxRef).toExponential(1)} | ${r.agree.top1} |`);
  }
  if (args.chart) {
    const data = path.join(work, 'chart.dat');
    fs.writeFileSync(data, rows.map((r) => `"${r.model} b${r.batch}" ${r.densert} ${r.ort}`).join('\n') + '\n');
    const terminal = args.chart.endsWith('.png') ? 'pngcairo size 900,500' : 'svg size 900,500';
    const script = `set terminal ${terminal}\nset output "${args.chart}"\nset style data histograms\nset style fill solid\n` +
      `set ylabel "p50 latency (ms)"\nset xtics rotate by -30\nset key top left\n` +
      `plot "${data}" using 2:xtic(1) title "densert", "" using 3 title "ONNX Runtime"\n`;
    try {
      execFileSync('gnuplot', [], { input: script });
      console.error(`chart written to ${args.chart}`);
    } catch (e) {
      console.error('gnuplot is not available (apt-get install gnuplot-nox); no chart drawn');
    }
  }
}

main();
