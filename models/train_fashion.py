"""Train the small Fashion-MNIST DenseNet-BC that densert ships as its built-in model,
and export it to ONNX with labels and preprocessing metadata, plus sample images."""

import argparse
import gzip
import json
import math
import os
import sys
import time
import warnings

# The machine is shared with compiles: OpenMP threads that spin for long at
# barriers slow training ~10x whenever another process holds a core, while a
# short spin costs almost nothing on an idle machine.  Must be set before torch
# loads libgomp.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

DATA_DIR = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LABELS = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
          "sandal", "shirt", "sneaker", "bag", "ankle boot"]
SEED = 20240611


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def read_idx(path):
    """Parse an IDX file (big-endian header: magic, then one uint32 per dim)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(kind):
    images = read_idx(os.path.join(DATA_DIR, f"{kind}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{kind}-labels-idx1-ubyte.gz"))
    return images, labels


def preprocess(images_u8, mean, std):
    """Exactly the runtime's preprocessing: pixel/255, then (x - mean)/std, float32."""
    x = torch.from_numpy(images_u8.astype(np.float32)).unsqueeze(1) / 255.0
    return ((x - mean) / std).float()


class Augmenter:
    """Random 28x28 crop from the image zero-padded by 2 px, plus a random
    horizontal flip, done on whole batches with index arithmetic so it costs
    little next to the network."""

    def __init__(self, x, mean, std, pad=2):
        # Pad with the normalized value of a black pixel, matching what padding
        # the raw image with zeros would give after preprocessing.
        self.padded = F.pad(x, (pad, pad, pad, pad), value=(0.0 - mean) / std)
        self.pad = pad
        self.size = x.shape[-1]

    def batch(self, idx, gen):
        n = len(idx)
        oy = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        r = torch.arange(self.size)
        rows = (oy[:, None] + r)[:, :, None]
        cols = (ox[:, None] + r)[:, None, :]
        cols = torch.where(flip[:, None, None], cols.flip(2), cols)
        src = self.padded[idx, 0]
        out = src[torch.arange(n)[:, None, None], rows, cols]
        return out.unsqueeze(1).contiguous()


# ---------------------------------------------------------------------------
# Model: canonical DenseNet-BC
# ---------------------------------------------------------------------------

class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv over the concatenation of all earlier features."""

    def __init__(self, in_ch, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, num_layers, in_ch, growth, bn_size):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth, growth, bn_size) for i in range(num_layers))
        self.out_channels = in_ch + num_layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_ch))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class FashionDenseNet(nn.Module):
    def __init__(self, stem_ch, growth, block_layers, bn_size=4, compression=0.5,
                 num_classes=10, pooled_stem=False):
        super().__init__()
        # The stem halves the resolution to 14x14 straight away, which keeps
        # training cheap on CPU: either a stride-2 conv, or (torchvision-like)
        # a full-resolution conv-BN-ReLU followed by a 2x2 max pool.
        if pooled_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(1, stem_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_ch), nn.ReLU(), nn.MaxPool2d(2, 2))
        else:
            self.stem = nn.Conv2d(1, stem_ch, 3, stride=2, padding=1, bias=False)
        stages = []
        ch = stem_ch
        for i, n in enumerate(block_layers):
            block = DenseBlock(n, ch, growth, bn_size)
            stages.append(block)
            ch = block.out_channels
            if i < len(block_layers) - 1:
                out = int(ch * compression)
                stages.append(Transition(ch, out))
                ch = out
        self.features = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(ch)
        self.classifier = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.norm(self.features(self.stem(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

class Log:
    def __init__(self, path):
        self.f = open(path, "w") if path else None

    def __call__(self, msg):
        print(msg, flush=True)
        if self.f:
            self.f.write(msg + "\n")
            self.f.flush()


@torch.no_grad()
def predict(model, x, batch=1000):
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def param_groups(model, weight_decay):
    # Decay only conv/linear weights; decaying BN scales and biases just fights
    # the normalization.
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step, total, warmup, peak):
    """Linear warm-up, then cosine decay to zero, evaluated per iteration."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * t))


def train_epoch(model, opt, aug, y, batch, gen, step, total_steps, warmup, lr):
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    loss_sum, correct, seen = 0.0, 0, 0
    for i in range(0, len(perm), batch):
        idx = perm[i:i + batch]
        xb, yb = aug.batch(idx, gen), y[idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total_steps, warmup, lr)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum += loss.item() * len(idx)
        correct += (out.argmax(1) == yb).sum().item()
        seen += len(idx)
    return loss_sum / seen, correct / seen, step


def export(model, path, mean, std):
    model.eval()
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(2, 1, 28, 28), tmp, opset_version=13,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                          do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    preprocess_meta = {"resize": "direct", "size": [28, 28], "color": "gray",
                       "scale": 1.0 / 255.0, "mean": [mean], "std": [std],
                       "layout": "NCHW"}
    onnx.helper.set_model_props(m, {
        "densert.labels": json.dumps(LABELS),
        "densert.preprocess": json.dumps(preprocess_meta),
    })
    onnx.checker.check_model(m)
    onnx.save(m, path)


def write_examples(images_u8, labels, probs, out_dir):
    """Per class, the first test image classified correctly with p >= 0.9
    (falling back to the most confident correct one, which only a badly
    undertrained model needs)."""
    os.makedirs(out_dir, exist_ok=True)
    pred = probs.argmax(1)
    chosen = {}
    for c, name in enumerate(LABELS):
        correct = (labels == c) & (pred == c)
        ok = np.nonzero(correct & (probs[:, c] >= 0.9))[0]
        if len(ok):
            i = int(ok[0])
        else:
            i = int(np.argmax(np.where(correct, probs[:, c], -1.0)))
        fname = name.replace(" ", "_").replace("/", "_") + ".png"
        Image.fromarray(images_u8[i], mode="L").save(os.path.join(out_dir, fname))
        chosen[fname] = (i, float(probs[i, c]))
    return chosen


def build_model(args):
    return FashionDenseNet(args.stem, args.growth, args.layers,
                           pooled_stem=args.stem_kind == "pool")


def benchmark(args, model, aug, y):
    """Time a few training batches to size the epoch count."""
    opt = torch.optim.SGD(param_groups(model, args.wd), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    model.train()
    n = args.bench
    t = None
    for i in range(n + 5):
        if i == 5:  # skip warm-up iterations (allocator, oneDNN primitive caches)
            t = time.time()
        idx = torch.randint(0, len(y), (args.batch,), generator=gen)
        loss = F.cross_entropy(model(aug.batch(idx, gen)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_batch = (time.time() - t) / n
    epoch = per_batch * math.ceil(len(y) / args.batch)
    params = sum(p.numel() for p in model.parameters())
    print(f"params {params}, {per_batch * 1000:.1f} ms/batch, ~{epoch:.0f} s/epoch")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--stem", type=int, default=24)
    ap.add_argument("--growth", type=int, default=12)
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 6, 6])
    ap.add_argument("--stem-kind", choices=["pool", "stride"], default="pool")
    ap.add_argument("--train-limit", type=int, default=0,
                    help="train on only the first N images (smoke tests)")
    ap.add_argument("--bench", type=int, default=0,
                    help="only time this many training batches and exit")
    ap.add_argument("--out", default=os.path.join(HERE, "fashion_densenet"),
                    help="output path prefix (.onnx, .json, .train.log, .predictions.npy)")
    ap.add_argument("--images", default=os.path.join(ROOT, "examples", "images"))
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)

    train_u8, train_y = load_split("train")
    if args.train_limit:
        train_u8, train_y = train_u8[:args.train_limit], train_y[:args.train_limit]
    test_u8, test_y = load_split("t10k")
    pixels = train_u8.astype(np.float64) / 255.0
    mean = round(float(pixels.mean()), 4)
    std = round(float(pixels.std()), 4)
    del pixels

    x_train = preprocess(train_u8, mean, std)
    x_test = preprocess(test_u8, mean, std)
    y_train = torch.from_numpy(train_y.astype(np.int64))
    y_test = torch.from_numpy(test_y.astype(np.int64))
    aug = Augmenter(x_train, mean, std)
    model = build_model(args)

    if args.bench:
        benchmark(args, model, aug, y_train)
        return 0

    log = Log(args.out + ".train.log")
    params = sum(p.numel() for p in model.parameters())
    log(f"fashion densenet-bc: stem {args.stem} ({args.stem_kind}), growth {args.growth}, layers {args.layers}, "
        f"{params} params; epochs {args.epochs}, batch {args.batch}, lr {args.lr}, "
        f"wd {args.wd}, seed {SEED}")
    log(f"train mean {mean:.4f} std {std:.4f} (pixel/255 then (x - mean)/std)")

    opt = torch.optim.SGD(param_groups(model, args.wd), lr=args.lr, momentum=0.9,
                          nesterov=True)
    gen = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil(len(y_train) / args.batch)
    total_steps = args.epochs * steps_per_epoch
    step = 0
    train_start = time.time()
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        loss, acc, step = train_epoch(model, opt, aug, y_train, args.batch, gen, step,
                                      total_steps, steps_per_epoch, args.lr)
        t_train = time.time() - t0
        test_acc = (predict(model, x_test).argmax(1) == y_test).float().mean().item()
        log(f"epoch {epoch:3d}/{args.epochs}  loss {loss:.4f}  train acc {100 * acc:.2f}%  "
            f"test acc {100 * test_acc:.2f}%  lr {opt.param_groups[0]['lr']:.4f}  "
            f"time {t_train:.1f}s (+{time.time() - t0 - t_train:.1f}s eval)")
    train_seconds = time.time() - train_start

    # Final numbers come from the exact instance that is exported.
    model.eval()
    logits = predict(model, x_test)
    probs = F.softmax(logits, 1).numpy()
    top5 = logits.topk(5, 1).indices
    top1_acc = (top5[:, 0] == y_test).float().mean().item()
    top5_acc = (top5 == y_test[:, None]).any(1).float().mean().item()
    preds = top5[:, 0].numpy().astype(np.uint8)

    export(model, args.out + ".onnx", mean, std)
    np.save(args.out + ".predictions.npy", preds)
    summary = {"test_top1": round(top1_acc, 6), "test_top5": round(top5_acc, 6),
               "epochs": args.epochs, "train_seconds": round(train_seconds, 1),
               "mean": mean, "std": std}
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    chosen = write_examples(test_u8, test_y, probs, args.images)

    log(f"training wall time {train_seconds:.1f}s")
    log("example images: " + ", ".join(f"{k} (test #{i}, p={p:.3f})"
                                         for k, (i, p) in chosen.items()))
    log(f"onnx: {args.out}.onnx ({os.path.getsize(args.out + '.onnx')} bytes)")
    log(f"final test top-5: {100 * top5_acc:.2f}%")
    log(f"final test top-1: {100 * top1_acc:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
