#!/usr/bin/env python3
"""Writes benchmark models: the architecture, tensor shapes and compute cost of insightface's
`inswapper_128.onnx` and `det_10g.onnx`, with random weights, for measuring throughput on a GPU
without the real (licence-restricted, not downloadable here) files.

Provenance: written for facerelay (issue "Benchmark models for GPU capacity"), with the `onnx`
(1.23.2) and `numpy` (2.4.6) packages from PyPI; `scripts/gen-bench-models.sh` sets them up.
No weights of the real models are involved and none of their code: the graphs are built here
from the published architecture descriptions.

Where the architecture comes from:

* inswapper_128: `shared/reference/faceswap-pipelines.md` (research report), sections 1.1 and 6,
  read from the real file's graph tail: a SimSwap-style AdaIN generator.
    target 1x3x128x128 -> reflect-pad 3 -> conv7x7 3->128 @128 -> conv3x3 128->256 @128
    -> conv3x3/2 256->512 @64 -> conv3x3/2 512->1024 @32
    -> 6 AdaIN residual blocks at 1024ch@32 (12 conv3x3, each: reflect-pad 1, conv, InstanceNorm
       written as ReduceMean/Sub/Mul/Sqrt/Div, style Linear 512->2048 from `source` split into
       gamma and beta)
    -> upsample x2 -> conv3x3 1024->512 @64 -> upsample x2 -> conv3x3 512->256 @128
    -> conv3x3 256->128 @128 -> reflect-pad 3 -> conv7x7 128->3 -> Tanh -> (+1) -> (/2) = output.
  Reference totals: ~138.55 M parameters, ~174.6 GMACs (~349 GFLOPs) per call, 116 GMACs in the
  12 residual convs, 38.7 GMACs in the two upsampling convs; the last initializer is the 512x512
  emap (`buff2fs`). BatchNorm of the encoder/decoder is taken as folded into the convs' biases.
  Opset 11 as the real file; I/O `target` [1,3,128,128], `source` [1,512] -> `output`
  [1,3,128,128], all dims fixed.
* det_10g (SCRFD-10GF with keypoints): I/O and cost from the same report, section 1.2 and 6
  (input [1,3,H,W] with H, W dynamic, nine outputs scores [N,1] x3, boxes [N,4] x3, keypoints
  [N,10] x3 for strides 8/16/32 with two anchors per cell; 4.23 M params, "10G" at 640x480,
  about 13.3 G at 640x640, counted as MACs). The layer shapes are those of insightface's SCRFD_10G
  configuration (detection/scrfd, scrfd_10g_bnkps): ResNetV1e backbone with a deep stem (three
  conv3x3, 3->28/2, 28->28, 28->56, then max-pool /2), BasicBlock stages (3, 4, 2, 3) with
  planes (56, 88, 88, 224) and average-pool + 1x1 shortcuts, a PAFPN neck (start level 1,
  56 channels, three levels), and per-stride heads of three conv3x3 with 80 channels followed by
  conv3x3 classification (2), box (8) and keypoint (20) outputs. That the heads are not shared
  between strides is inferred from the parameter count (shared heads give 3.9 M, unshared 4.2 M).
  BatchNorm folded into the convs, as in an exported inference graph.

What differs from the real files on purpose:

* Random weights (fixed seed): the swapper outputs noise, not a face.
* The detector reports exactly one face, at a fixed place of its 640x640 input (a 128 px box
  centred at (320, 160), keypoints on the ArcFace template), so that the whole pipeline (align,
  swap, paste-back) runs in `facerelay bench swap`. Its final head convs have small random
  weights and biases that place the box and keypoints; the score of one stride-32 anchor gets a
  fixed +20 logit from a one-hot map built with CumSum/Equal (a few element-wise ops on a 20x20
  map: no measurable cost). Every other anchor scores about 5e-5.
* The output folder also gets the stand-in recognizer `w600k_r50.onnx` copied from
  models/fixtures/ (the engine loads three models; in the default selection the recognizer runs
  once per source photo, not per frame), unless --no-recognizer.

IR version 6 (opset 11's), under ONNX Runtime 1.31's limit (IR <= 13 there; IR 14 is rejected).

The parameter and MAC counts are kept layer by layer while the graph is built and printed per
layer group; the MAC totals are then checked against ONNX shape inference of the graph itself
(every Conv and MatMul), and a difference is an error. --check does all that and writes nothing.

    python3 tools/gen_bench_models.py [--out models/bench] [--force] [--check] [--seed N]
"""

import argparse
import math
import pathlib
import shutil
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OPSET = 11
IR_VERSION = 6
REF = {  # figures from shared/reference/faceswap-pipelines.md, section 6
    "inswapper_128.onnx": {"params": 138.55e6, "macs": 174.6e9},
    "det_10g.onnx": {"params": 4.23e6, "macs": 13.3e9},
}


class Net:
    """A graph under construction that also counts parameters and multiply-accumulates per
    layer group. With `weights=False` the weight tensors have shapes but no data."""

    def __init__(self, name, seed, weights):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.weights = weights
        self.nodes, self.inits = [], []
        self.group = "other"
        self.macs = {}    # group -> MACs (a function of the input size for the detector)
        self.params = {}  # group -> parameter count
        self.n = 0

    def fresh(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def count(self, params=0, macs=0):
        self.params[self.group] = self.params.get(self.group, 0) + params
        self.macs[self.group] = self.macs.get(self.group, 0) + macs

    def const(self, name, value, dtype=np.float32, params=0):
        """An initializer; `params` > 0 counts it as learned weights of the current group."""
        from onnx import numpy_helper

        self.count(params=params)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def random(self, name, shape, std):
        """Random normal weights. Without `weights`, a tensor with the shape and no data: enough
        for shape inference (the cross-check of the count), not for running."""
        from onnx import TensorProto

        size = int(np.prod(shape))
        if not self.weights:
            self.count(params=size)
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
            self.inits.append(t)
            return name
        w = self.rng.standard_normal(size, dtype=np.float32)
        w *= np.float32(std)
        return self.const(name, w.reshape(shape), params=size)

    def op(self, op_type, inputs, n_out=1, name_hint=None, outputs=None, **attrs):
        from onnx import helper

        if outputs is None:
            hint = name_hint or op_type.lower()
            outputs = [self.fresh(hint) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def conv(self, x, name, cin, cout, k, out_hw, stride=1, pad=0, std=None, bias=None):
        """Conv with bias (BatchNorm folded). `out_hw` is the output's cells: an int pair, or a
        function of the input size for graphs with dynamic input."""
        fan_in = cin * k * k
        w = self.random(name + ".weight", [cout, cin, k, k],
                        std if std is not None else math.sqrt(2.0 / fan_in))
        if bias is None:
            b = self.random(name + ".bias", [cout], 0.01)
        else:
            b = self.const(name + ".bias", np.asarray(bias, np.float32).reshape(cout),
                           params=cout)
        self.count(macs=Macs(out_hw, cout * fan_in))
        return self.op("Conv", [x, w, b], name_hint=name, kernel_shape=[k, k],
                       strides=[stride, stride], pads=[pad] * 4)


class Macs:
    """MACs of one layer: output cells x (cout * cin * k * k), cells as a function of size."""

    def __init__(self, out_hw, per_cell):
        self.out_hw, self.per_cell = out_hw, per_cell

    def at(self, size):
        hw = self.out_hw(size) if callable(self.out_hw) else self.out_hw
        return hw[0] * hw[1] * self.per_cell

    def __add__(self, other):
        return Sum([self, other])

    def __radd__(self, other):
        return self if other == 0 else Sum([other, self])


class Sum(Macs):
    def __init__(self, parts):
        self.parts = parts

    def at(self, size):
        return sum(p.at(size) if isinstance(p, Macs) else p for p in self.parts)


def macs_at(v, size):
    return v.at(size) if isinstance(v, Macs) else v


# ---------------------------------------------------------------------------------------------
# inswapper_128

def swapper(seed, weights):
    net = Net("inswapper_128", seed, weights)
    c = net.const
    c("pad3", [0, 0, 3, 3, 0, 0, 3, 3], np.int64)
    c("pad1", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    c("one", [1.0])
    c("two", [2.0])
    c("eps", [1e-8])
    c("roi_empty", np.zeros([0], np.float32))
    c("scale_x2", [1.0, 1.0, 2.0, 2.0])
    c("gb_shape", [1, 1024, 1, 1], np.int64)

    def relu(x):
        return net.op("Relu", [x])

    def instance_norm(x):
        # As the real graph writes it: ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div.
        mean = net.op("ReduceMean", [x], axes=[2, 3], keepdims=1)
        d = net.op("Sub", [x, mean])
        var = net.op("ReduceMean", [net.op("Mul", [d, d])], axes=[2, 3], keepdims=1)
        return net.op("Div", [d, net.op("Sqrt", [net.op("Add", [var, "eps"])])])

    def style(x, name):
        # Linear 512 -> 2048 on the latent, split into gamma and beta: x * (1 + gamma) + beta.
        w = net.random(name + ".linear.weight", [512, 2048], 0.02 / math.sqrt(512))
        b = net.random(name + ".linear.bias", [2048], 0.01)
        net.count(macs=512 * 2048)
        s = net.op("Add", [net.op("MatMul", ["source", w]), b])
        gamma, beta = net.op("Split", [s], n_out=2, axis=1, split=[1024, 1024])
        gamma = net.op("Reshape", [net.op("Add", [gamma, "one"]), "gb_shape"])
        beta = net.op("Reshape", [beta, "gb_shape"])
        return net.op("Add", [net.op("Mul", [x, gamma]), beta])

    net.group = "encoder (conv7x7 + three conv3x3)"
    x = net.op("Pad", ["target", "pad3"], mode="reflect")
    x = relu(net.conv(x, "enc.0", 3, 128, 7, (128, 128)))
    x = relu(net.conv(x, "enc.1", 128, 256, 3, (128, 128), pad=1))
    x = relu(net.conv(x, "enc.2", 256, 512, 3, (64, 64), stride=2, pad=1))
    x = relu(net.conv(x, "enc.3", 512, 1024, 3, (32, 32), stride=2, pad=1))

    for i in range(6):
        block_in = x
        for j in (1, 2):
            name = f"blocks.{i}.conv{j}"
            net.group = "style blocks: 12 res-block conv3x3 1024->1024 @32"
            y = net.op("Pad", [x if j == 1 else y, "pad1"], mode="reflect")
            y = net.conv(y, name, 1024, 1024, 3, (32, 32), std=math.sqrt(1.0 / (1024 * 9)))
            y = instance_norm(y)
            net.group = "style blocks: 12 style Linear 512->2048"
            y = style(y, f"blocks.{i}.style{j}")
            if j == 1:
                y = relu(y)
        x = net.op("Add", [block_in, y])

    net.group = "upsampling convs (1024->512 @64, 512->256 @128)"
    x = net.op("Resize", [x, "roi_empty", "scale_x2"], mode="linear")
    x = relu(net.conv(x, "dec.up1", 1024, 512, 3, (64, 64), pad=1))
    x = net.op("Resize", [x, "roi_empty", "scale_x2"], mode="linear")
    x = relu(net.conv(x, "dec.up2", 512, 256, 3, (128, 128), pad=1))

    net.group = "decoder (conv3x3 256->128 + conv7x7 128->3)"
    x = relu(net.conv(x, "dec.0", 256, 128, 3, (128, 128), pad=1))
    x = net.op("Pad", [x, "pad3"], mode="reflect")
    x = net.conv(x, "dec.out", 128, 3, 7, (128, 128), std=math.sqrt(1.0 / (128 * 49)))
    x = net.op("Add", [net.op("Tanh", [x]), "one"])
    net.op("Div", [x, "two"], outputs=["output"])

    # Last initializer: the 512x512 emap, as insightface reads it (graph.initializer[-1]).
    net.group = "emap (512x512, last initializer, not used in the graph)"
    net.random("buff2fs", [512, 512], 1.0 / math.sqrt(512))

    def io():
        from onnx import TensorProto, helper

        v = helper.make_tensor_value_info
        return ([v("target", TensorProto.FLOAT, [1, 3, 128, 128]),
                 v("source", TensorProto.FLOAT, [1, 512])],
                [v("output", TensorProto.FLOAT, [1, 3, 128, 128])])

    return net, io, None


# ---------------------------------------------------------------------------------------------
# det_10g (SCRFD-10GF with keypoints)

STRIDES = (8, 16, 32)
# The planted face: stride-32 cell (row 5, column 10) -> centre (320, 160) in the 640x640 input.
PLANT_STRIDE, PLANT_ROW, PLANT_COL = 32, 5, 10
PLANT_HALF = 2.0  # box half-side in stride units: 64 px, a 128 px box
# Five points (eyes, nose, mouth corners) of the 112 px ArcFace template, scaled to the 128 px
# box and taken relative to its centre, in stride-32 units.
ARCFACE_112 = [(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
               (41.5493, 92.3655), (70.7299, 92.2041)]
PLANT_KPS = [v for (x, y) in ARCFACE_112
             for v in ((x - 56.0) * 128 / 112 / 32, (y - 56.0) * 128 / 112 / 32)]


def cells(stride):
    return lambda size: (size[0] // stride, size[1] // stride)


def detector(seed, weights):
    net = Net("det_10g", seed, weights)
    c = net.const
    c("zero", [0.0])
    c("one", [1.0])
    c("plant_logit", [20.0])
    c("plant_row", [float(PLANT_ROW)])
    c("plant_col", [float(PLANT_COL)])
    c("roi_empty", np.zeros([0], np.float32))
    c("scales_empty", np.zeros([0], np.float32))
    c("shape_1", [-1, 1], np.int64)
    c("shape_4", [-1, 4], np.int64)
    c("shape_10", [-1, 10], np.int64)

    def relu(x):
        return net.op("Relu", [x])

    net.group = "backbone stem (3 conv3x3 + max-pool)"
    x = relu(net.conv("input.1", "stem.0", 3, 28, 3, cells(2), stride=2, pad=1))
    x = relu(net.conv(x, "stem.1", 28, 28, 3, cells(2), pad=1))
    x = relu(net.conv(x, "stem.2", 28, 56, 3, cells(2), pad=1))
    x = net.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    feats = []
    cin, at = 56, 4
    for si, (blocks, planes) in enumerate(zip((3, 4, 2, 3), (56, 88, 88, 224))):
        net.group = f"backbone stage {si + 1} ({blocks} BasicBlocks, {planes} ch, /{at * (1 if si == 0 else 2)})"
        stride = 1 if si == 0 else 2
        at *= stride
        for bi in range(blocks):
            name = f"layer{si + 1}.{bi}"
            s = stride if bi == 0 else 1
            y = relu(net.conv(x, name + ".conv1", cin, planes, 3, cells(at), stride=s, pad=1))
            y = net.conv(y, name + ".conv2", planes, planes, 3, cells(at), pad=1,
                         std=math.sqrt(1.0 / (planes * 9)))
            if s != 1 or cin != planes:
                sc = x
                if s != 1:
                    sc = net.op("AveragePool", [sc], kernel_shape=[s, s], strides=[s, s],
                                ceil_mode=1)
                sc = net.conv(sc, name + ".downsample", cin, planes, 1, cells(at),
                              std=math.sqrt(1.0 / cin))
            else:
                sc = x
            x = relu(net.op("Add", [y, sc]))
            cin = planes
        feats.append(x)

    net.group = "neck (PAFPN, 56 ch, strides 8/16/32)"
    ins = list(zip(feats[1:], (88, 88, 224), STRIDES))
    lat = [net.conv(f, f"neck.lateral.{i}", ch, 56, 1, cells(s), std=math.sqrt(1.0 / ch))
           for i, (f, ch, s) in enumerate(ins)]
    for i in (2, 1):  # top-down: nearest upsample to the finer level's size, add
        up = net.op("Resize", [lat[i], "roi_empty", "scales_empty", net.op("Shape", [lat[i - 1]])],
                    mode="nearest")
        lat[i - 1] = net.op("Add", [lat[i - 1], up])
    inter = [net.conv(l, f"neck.fpn.{i}", 56, 56, 3, cells(s), pad=1, std=math.sqrt(1.0 / 504))
             for i, (l, s) in enumerate(zip(lat, STRIDES))]
    for i in (0, 1):  # bottom-up: stride-2 conv of the finer level, add
        down = net.conv(inter[i], f"neck.down.{i}", 56, 56, 3, cells(STRIDES[i + 1]), stride=2,
                        pad=1, std=math.sqrt(1.0 / 504))
        inter[i + 1] = net.op("Add", [inter[i + 1], down])
    outs = [inter[0]] + [
        net.conv(inter[i], f"neck.pafpn.{i - 1}", 56, 56, 3, cells(STRIDES[i]), pad=1,
                 std=math.sqrt(1.0 / 504))
        for i in (1, 2)]

    scores, boxes, kpss = [], [], []
    tiny = 1e-3 / math.sqrt(80 * 9)
    for f, s in zip(outs, STRIDES):
        net.group = f"head stride {s} (3 conv3x3 80 ch + cls/box/kps conv3x3)"
        p = f"head.s{s}"
        y = f
        for j in range(3):
            y = relu(net.conv(y, f"{p}.stack.{j}", 56 if j == 0 else 80, 80, 3, cells(s), pad=1))
        cls = net.conv(y, p + ".cls", 80, 2, 3, cells(s), pad=1, std=tiny, bias=[-10.0, -10.0])
        reg = net.conv(y, p + ".reg", 80, 8, 3, cells(s), pad=1, std=tiny,
                       bias=[PLANT_HALF] * 8)
        kps = net.conv(y, p + ".kps", 80, 20, 3, cells(s), pad=1, std=tiny,
                       bias=PLANT_KPS * 2)
        if s == PLANT_STRIDE:
            # One-hot at (anchor 0, PLANT_ROW, PLANT_COL), from the map's own shape.
            ones = net.op("Add", [net.op("Mul", [cls, "zero"]), "one"])
            idx = [net.op("Sub", [net.op("CumSum", [ones, c(f"axis{a}", a, np.int64)]), "one"])
                   for a in (1, 2, 3)]
            hit = net.op("And", [net.op("Equal", [idx[0], "zero"]),
                                 net.op("Equal", [idx[1], "plant_row"])])
            hit = net.op("And", [hit, net.op("Equal", [idx[2], "plant_col"])])
            plant = net.op("Mul", [net.op("Cast", [hit], to=1), "plant_logit"])
            cls = net.op("Add", [cls, plant])
        score = net.op("Sigmoid", [cls])
        for src, shape, dst in ((score, "shape_1", scores), (reg, "shape_4", boxes),
                                (kps, "shape_10", kpss)):
            dst.append((net.op("Transpose", [src], perm=[0, 2, 3, 1]), shape))

    # Output names as numbered in the buffalo_l export (read by position, as insightface does).
    names = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    widths = [1, 1, 1, 4, 4, 4, 10, 10, 10]
    for (src, shape), name in zip(scores + boxes + kpss, names):
        net.op("Reshape", [src, shape], outputs=[name])

    def io():
        from onnx import TensorProto, helper

        v = helper.make_tensor_value_info
        return ([v("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])],
                [v(n, TensorProto.FLOAT, [f"n{n}", w]) for n, w in zip(names, widths)])

    return net, io, [(640, 640), (480, 640)]


# ---------------------------------------------------------------------------------------------

def report(fname, net, sizes):
    print(f"{fname}: analytic count (convs and linears; element-wise ops not counted)")
    ref = REF[fname]
    sizes = sizes or [None]
    head = "  " + "layer group".ljust(66) + "params".rjust(13)
    for sz in sizes:
        head += ("GMACs" if sz is None else f"GMACs @{sz[1]}x{sz[0]}").rjust(16)
    print(head)
    groups = list(dict.fromkeys(list(net.params) + list(net.macs)))
    for g in groups:
        if not net.params.get(g) and not net.macs.get(g):
            continue
        line = "  " + g.ljust(66) + f"{net.params.get(g, 0):>13,}"
        for sz in sizes:
            line += f"{macs_at(net.macs.get(g, 0), sz) / 1e9:>16.3f}"
        print(line)
    total_p = sum(net.params.values())
    line = "  " + "TOTAL".ljust(66) + f"{total_p:>13,}"
    totals = []
    for sz in sizes:
        t = sum(macs_at(v, sz) for v in net.macs.values())
        totals.append(t)
        line += f"{t / 1e9:>16.3f}"
    print(line)
    print(f"  = {total_p / 1e6:.2f} M parameters (reference {ref['params'] / 1e6:.2f} M), "
          f"{totals[0] / 1e9:.2f} GMACs = {2 * totals[0] / 1e9:.1f} GFLOPs per call "
          f"(reference {ref['macs'] / 1e9:.1f} GMACs); fp32 weights {4 * total_p / 1e6:.1f} MB")
    return total_p, totals


def build(maker, seed, weights):
    """The model; with `weights=False` its weight tensors have shapes and no data."""
    from onnx import helper

    net, io, sizes = maker(seed, weights)
    inputs, outputs = io()
    graph = helper.make_graph(net.nodes, net.name + "_bench", inputs, outputs, net.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facerelay tools/gen_bench_models.py",
                              doc_string="facerelay benchmark model: random weights, the cost "
                                         "of the real model, not the real model")
    model.ir_version = IR_VERSION
    return net, sizes, model


def inferred_macs(model, size):
    """MACs of every Conv and MatMul from ONNX shape inference of `model` (input resized to
    `size` where it is dynamic): an independent check of the counts kept while building."""
    from onnx import shape_inference

    m = type(model)()
    m.CopyFrom(model)
    if size is not None:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = size
    m = shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    weights = {t.name: list(t.dims) for t in m.graph.initializer}
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = weights[n.input[1]]
            total += int(np.prod(shapes[n.output[0]])) * w[1] * w[2] * w[3]
        elif n.op_type == "MatMul":
            total += int(np.prod(weights[n.input[1]]))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "models" / "bench"),
                    help="output folder (default models/bench/)")
    ap.add_argument("--force", action="store_true", help="overwrite files that exist")
    ap.add_argument("--check", action="store_true",
                    help="print the analytic counts only; write nothing")
    ap.add_argument("--seed", type=int, default=20261126, help="random seed (default fixed)")
    ap.add_argument("--no-recognizer", action="store_true",
                    help="do not copy the stand-in recognizer from models/fixtures/")
    args = ap.parse_args()
    import onnx

    out = pathlib.Path(args.out)
    if not args.check:
        out.mkdir(parents=True, exist_ok=True)
    for i, (fname, maker) in enumerate((("inswapper_128.onnx", swapper),
                                        ("det_10g.onnx", detector))):
        net, sizes, shape_only = build(maker, args.seed + i, weights=False)
        _, totals = report(fname, net, sizes)
        for size, total in zip(sizes or [None], totals):
            inferred = inferred_macs(shape_only, size)
            if inferred != total:
                sys.exit(f"{fname}: the count kept while building ({total}) differs from shape "
                         f"inference ({inferred}) at {size}: fix the generator")
        print("  (shape inference of the graph gives the same MAC totals)")
        del shape_only
        path = out / fname
        if args.check:
            pass
        elif args.force or not path.exists():
            _, _, model = build(maker, args.seed + i, weights=True)
            onnx.checker.check_model(model)
            tmp = path.with_name(path.name + ".part")
            onnx.save(model, tmp)
            tmp.replace(path)
            del model
            print(f"  wrote {path} ({path.stat().st_size:,} bytes)")
        else:
            print(f"  {path} exists, kept (--force to overwrite)")
        print()
    rec = out / "w600k_r50.onnx"
    if not args.check and not args.no_recognizer:
        if args.force or not rec.exists():
            shutil.copyfile(ROOT / "models" / "fixtures" / "w600k_r50.onnx", rec)
            print(f"copied the stand-in recognizer to {rec} (not a benchmark model: it runs once "
                  "per source photo)")
        else:
            print(f"{rec} exists, kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
