"""Generate densert's test fixtures: DenseNet ONNX models with seeded random weights,
shared random inputs, and PyTorch reference outputs (goldens) for batch 1 and batch 3."""

import argparse
import json
import os
import sys
import time
import warnings
import zlib

# Test suites may run this next to other jobs: OpenMP threads that spin for long
# at barriers crawl whenever another process holds a core, so keep spins short.
# Must be set before torch loads libgomp.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

DYNAMIC_AXES = {"input": {0: "N"}, "output": {0: "N"}}
NUM_INPUTS = 8


# ---------------------------------------------------------------------------
# Models written here (torchvision provides the ImageNet ones)
# ---------------------------------------------------------------------------

class BottleneckLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv, producing `growth` new channels."""

    def __init__(self, in_ch, growth, bottleneck_ch):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, bottleneck_ch, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck_ch)
        self.conv2 = nn.Conv2d(bottleneck_ch, growth, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class ListDenseBlock(nn.Module):
    """torchvision-style block: every layer concatenates the list of all earlier
    outputs, so the first layer sees a single-input Concat."""

    def __init__(self, num_layers, in_ch, growth, bn_size):
        super().__init__()
        self.layers = nn.ModuleList(
            BottleneckLayer(in_ch + i * growth, growth, bn_size * growth)
            for i in range(num_layers))
        self.out_channels = in_ch + num_layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class ChainedDenseBlock(nn.Module):
    """Keras/Caffe2-style block: the running tensor is re-concatenated after
    every layer (x = cat([x, new])), giving a chain of two-input Concats."""

    def __init__(self, num_layers, in_ch, growth, bn_size):
        super().__init__()
        self.layers = nn.ModuleList(
            BottleneckLayer(in_ch + i * growth, growth, bn_size * growth)
            for i in range(num_layers))
        self.out_channels = in_ch + num_layers * growth

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class Transition(nn.Sequential):
    def __init__(self, in_ch, out_ch, pool):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_ch))
        self.add_module("relu", nn.ReLU(inplace=False))
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False))
        self.add_module("pool", pool)


class DenseNetBCCifar(nn.Module):
    """CIFAR DenseNet-BC (growth 12, 3 blocks x 16 layers, compression 0.5).
    Channel counts 24, 216, 108, 300, 150, 342 are deliberately not multiples of 8."""

    def __init__(self, growth=12, layers_per_block=16, num_classes=10):
        super().__init__()
        ch = 2 * growth
        self.stem = nn.Conv2d(3, ch, 3, padding=1, bias=False)
        stages = []
        for i in range(3):
            block = ListDenseBlock(layers_per_block, ch, growth, 4)
            stages.append(block)
            ch = block.out_channels
            if i < 2:
                stages.append(Transition(ch, ch // 2, nn.AvgPool2d(2, 2)))
                ch //= 2
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(ch)
        self.classifier = nn.Linear(ch, num_classes)

    def embed(self, x):
        x = F.relu(self.norm(self.stages(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x):
        return self.classifier(self.embed(x))


class ChannelAffine(nn.Module):
    """BatchNorm as Caffe2 exports it: already folded to a per-channel scale and
    shift, so it appears in ONNX as Mul + Add rather than BatchNormalization."""

    def __init__(self, ch):
        super().__init__()
        self.register_buffer("scale", torch.ones(1, ch, 1, 1))
        self.register_buffer("shift", torch.zeros(1, ch, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


class ChainedDenseNet(nn.Module):
    """Small DenseNet in Keras/Caffe2 export style: chained concats, Mul/Add BN,
    ReLU6, ceil-mode pooling on odd sizes, ReduceMean pooling and a Softmax head."""

    def __init__(self, growth=20, layers_per_block=4, num_classes=10):
        super().__init__()
        ch = 24
        self.stem = nn.Conv2d(3, ch, 3, stride=1, padding=1, bias=False)
        self.stem_bn = ChannelAffine(ch)
        # 40x40 -> 21x21: ceil_mode keeps the partial last window.
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.block1 = ChainedDenseBlock(layers_per_block, ch, growth, 4)
        ch = self.block1.out_channels
        # 21x21 -> 11x11: the last window hangs over the edge, and
        # count_include_pad=False makes it average only the valid cells.
        self.trans = Transition(ch, ch // 2, nn.AvgPool2d(2, 2, ceil_mode=True,
                                                          count_include_pad=False))
        ch //= 2
        self.block2 = ChainedDenseBlock(layers_per_block, ch, growth, 4)
        ch = self.block2.out_channels
        self.norm = nn.BatchNorm2d(ch)
        self.classifier = nn.Linear(ch, num_classes)

    def embed(self, x):
        x = self.stem_pool(F.relu6(self.stem_bn(self.stem(x))))
        x = self.block2(self.trans(self.block1(x)))
        return F.relu(self.norm(x)).mean(dim=(2, 3))

    def forward(self, x):
        return F.softmax(self.classifier(self.embed(x)), dim=1)


# ---------------------------------------------------------------------------
# Weight randomization and calibration
# ---------------------------------------------------------------------------

def stable_seed(text):
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def init_convs(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)


@torch.no_grad()
def randomize_norms(model):
    """Give every BatchNorm non-trivial statistics and affine params so a runtime
    that mishandles (or drops) BN cannot still match the goldens."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
        elif isinstance(m, ChannelAffine):
            # Scales above 1 push some stem activations past 6 so the ReLU6
            # clip actually changes values.
            m.scale.uniform_(1.0, 3.0)
            m.shift.normal_(0.0, 0.5)


@torch.no_grad()
def calibrate_classifier(classifier, feats, target_std, seed, min_margin=0.1):
    """Random weights give pooled features that are nearly the same for every
    input, so all images would share one top-1 class with tiny margins.  Centre
    the classifier on these inputs' mean feature and scale it to a clear spread.
    Then redraw its weights until every input's top-1 beats the runner-up by
    min_margin logits (so float reordering in a runtime cannot flip top-1) and
    the inputs do not all agree on one class."""
    mean = feats.mean(0)
    centred = feats - mean
    for attempt in range(100):
        g = torch.Generator().manual_seed(seed + attempt)
        weight = torch.randn(classifier.weight.shape, generator=g)
        weight *= target_std / (centred @ weight.t()).std()
        logits = centred @ weight.t()
        top2 = logits.topk(2, dim=1).values
        margin_ok = (top2[:, 0] - top2[:, 1]).min().item() >= min_margin
        if margin_ok and len(set(logits.argmax(1).tolist())) > 1:
            break
    else:
        raise RuntimeError("no classifier draw gave clear top-1 margins")
    classifier.weight.copy_(weight)
    classifier.bias.copy_(-(mean @ weight.t()))


def torchvision_embed(model, x):
    # Same ops as torchvision's DenseNet.forward up to the classifier.
    out = F.relu(model.features(x))
    return torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)


def build_model(key, x):
    """Seeded model for a builder key, with weights fixed up for the inputs x."""
    seed = stable_seed(key)
    torch.manual_seed(seed)
    if key == "densenet_bc_cifar":
        model, embed, spread = DenseNetBCCifar(), None, 3.0
    elif key == "densenet_chained":
        # Moderate spread: softmax outputs should be neither one-hot nor uniform.
        model, embed, spread = ChainedDenseNet(), None, 1.5
    else:
        model = getattr(torchvision.models, key)(weights=None)
        embed, spread = torchvision_embed, 3.0
    if embed is None:
        init_convs(model)
        embed = type(model).embed
    randomize_norms(model)
    model.eval()
    with torch.no_grad():
        calibrate_classifier(model.classifier, embed(model, x), spread, seed)
    return model


# ---------------------------------------------------------------------------
# Fixture table
# ---------------------------------------------------------------------------

def fixture_table():
    """name -> (builder key, input resolution, num_classes, opset)."""
    table = {}
    for arch in ("densenet121", "densenet161", "densenet169", "densenet201"):
        for opset in (11, 13, 17):
            table[f"{arch}_op{opset}"] = (arch, 224, 1000, opset)
    table["densenet_bc_cifar"] = ("densenet_bc_cifar", 32, 10, 13)
    table["densenet_bc_cifar_op9"] = ("densenet_bc_cifar", 32, 10, 9)
    table["densenet_chained"] = ("densenet_chained", 40, 10, 13)
    return table


def make_input(res):
    """Seeded (8,3,R,R) float32 input, roughly N(0,1).  Pure white noise pools
    to almost identical features for every image, so a smooth per-image
    low-frequency field is mixed in to make the images globally distinct."""
    g = torch.Generator().manual_seed(1000 + res)
    noise = torch.randn(NUM_INPUTS, 3, res, res, generator=g)
    coarse = torch.randn(NUM_INPUTS, 3, 4, 4, generator=g)
    smooth = F.interpolate(coarse, size=(res, res), mode="bilinear", align_corners=False)
    x = 0.6 * noise + smooth
    return (x / x.std()).float()


def fixture_files(name, res):
    return {
        "model": f"{name}.onnx",
        "input": f"input_{res}.npy",
        "golden_b1": f"{name}.golden_b1.npy",
        "golden_b3": f"{name}.golden_b3.npy",
    }


def save_npy(path, array):
    # Write-then-rename so an interrupted run never leaves a truncated file
    # that a later run would mistake for a finished fixture.
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def export_onnx(model, x, path, opset):
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, tmp, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
    onnx.checker.check_model(tmp)
    os.replace(tmp, path)


def check_outputs(name, out, is_softmax):
    if not np.all(np.isfinite(out)):
        raise RuntimeError(f"{name}: non-finite outputs")
    if is_softmax:
        if np.abs(out.sum(1) - 1).max() > 1e-4 or out.max(1).min() > 0.999:
            raise RuntimeError(f"{name}: degenerate softmax output")
    elif out.std(1).min() < 0.5:
        raise RuntimeError(f"{name}: near-constant logits")
    top2 = np.sort(out, 1)[:, -2:]
    if (top2[:, 1] - top2[:, 0]).min() < (0.005 if is_softmax else 0.05):
        raise RuntimeError(f"{name}: top-1 too close to runner-up")


def main():
    table = fixture_table()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(table),
                    help="generate only these fixtures")
    ap.add_argument("--force", action="store_true", help="regenerate existing files")
    args = ap.parse_args()

    torch.set_num_threads(min(2, torch.get_num_threads()))
    os.makedirs(args.out, exist_ok=True)
    names = args.only or list(table)
    started = time.time()

    inputs = {}
    # builder key -> (model, outputs): all opsets of one net share weights and goldens
    models = {}
    for name in names:
        key, res, num_classes, opset = table[name]
        files = fixture_files(name, res)
        paths = {k: os.path.join(args.out, v) for k, v in files.items()}
        if not args.force and all(os.path.exists(p) for p in paths.values()):
            print(f"skip   {name}: files exist", flush=True)
            continue
        t0 = time.time()
        if res not in inputs:
            inputs[res] = make_input(res)
        x = inputs[res]
        if args.force or not os.path.exists(paths["input"]):
            save_npy(paths["input"], x.numpy())
        if key not in models:
            model = build_model(key, x)
            with torch.no_grad():
                out8 = model(x).numpy()
                b1 = model(x[0:1]).numpy()
                b3 = model(x[0:3]).numpy()
            check_outputs(name, out8, key == "densenet_chained")
            if np.abs(b1 - b3[0:1]).max() > 1e-3 * max(1.0, np.abs(b3).max()):
                raise RuntimeError(f"{name}: batch-1 and batch-3 outputs disagree")
            models[key] = (model, out8, b1, b3)
        model, out8, b1, b3 = models[key]
        save_npy(paths["golden_b1"], b1.astype(np.float32))
        save_npy(paths["golden_b3"], b3.astype(np.float32))
        export_onnx(model, x[0:3], paths["model"], opset)
        top1 = out8.argmax(1)
        print(f"wrote  {name}: opset {opset}, {os.path.getsize(paths['model']) / 1e6:.1f} MB, "
              f"top-1 of 8 inputs {top1.tolist()} ({len(set(top1.tolist()))} distinct), "
              f"{time.time() - t0:.1f} s", flush=True)

    # The manifest lists every fixture that is complete in DIR, so runs with
    # --only accumulate instead of clobbering each other.
    manifest = []
    for name, (key, res, num_classes, opset) in table.items():
        files = fixture_files(name, res)
        if all(os.path.exists(os.path.join(args.out, v)) for v in files.values()):
            manifest.append({"name": name, **files, "num_classes": num_classes, "opset": opset})
    text = json.dumps(manifest, indent=2) + "\n"
    manifest_path = os.path.join(args.out, "fixtures.json")
    old = open(manifest_path).read() if os.path.exists(manifest_path) else None
    if old != text:
        # Only rewrite when the content changes, so build systems watching the
        # manifest's timestamp do not rerun needlessly.
        with open(manifest_path + ".tmp", "w") as f:
            f.write(text)
        os.replace(manifest_path + ".tmp", manifest_path)
    print(f"done: {len(manifest)} fixtures listed in {manifest_path}, "
          f"{time.time() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
