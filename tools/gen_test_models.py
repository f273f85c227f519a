#!/usr/bin/env python3
"""Writes the tiny stand-in models and test pictures under models/fixtures/.

Provenance: written for facerelay (issue 3, swap engine); run with the `onnx` package from PyPI
(1.23.2 when the committed files were made) and numpy/Pillow:

    python3 -m venv .deps/venv && .deps/venv/bin/pip install onnx numpy pillow
    .deps/venv/bin/python tools/gen_test_models.py

No weights of the real models are involved. Each file has the real model's input/output names,
ranks, fixed dimensions and opset (11), so the Rust side loads and validates it exactly as it
would `det_10g.onnx`, `w600k_r50.onnx` and `inswapper_128.onnx`:

* det_10g.onnx (SCRFD contract): input `input.1` [1,3,H,W] (H, W dynamic), (x-127.5)/128, RGB.
  Nine outputs in SCRFD order, scores [N,1] x3, boxes [N,4] x3, keypoints [N,10] x3 for strides
  8/16/32 with two anchors per cell. What fires is computed from the picture with real ONNX ops:
  a pixel is "marker" when it is magenta (R and B high, G low). For each anchor at (j*s, i*s) the
  model sums the marker mass in a 3s window and in a 4s window around it; the score is high only
  when the 3s window holds the whole marker (ratio^4), and the box/keypoints are placed around
  the marker's centroid (sub-pixel, from CumSum coordinate maps) with a size from sqrt(mass).
  So a magenta "nose" of side a makes a face box nose +- 2a and five keypoints at fixed
  multiples of a around it, wherever the picture puts it.
* w600k_r50.onnx (ArcFace contract): input `input.1` [N,3,112,112], output [N,512]: 16x16 average
  pooling, flatten, a fixed random 147x512 matrix. Different faces give different embeddings.
* inswapper_128.onnx: inputs `target` [1,3,128,128] in [0,1] and `source` [1,512], output
  `output` [1,3,128,128]: output = 0.3*target + 0.7*colour, colour = sigmoid(source @ Wc + bc),
  a green-leaning colour that depends on the latent. Its LAST initializer is the 512x512 emap
  (named `buff2fs` as in the real file) with the closed form emap[i][j] = sin(0.37 i + 0.11 j)/16,
  so tests can check the values read back without trusting the reader.
* inswapper_128_batched.onnx: the same stand-in with a symbolic batch dimension `N` on both
  inputs and the output (the shape a dynamic-batch variant of the real file has), so the live
  stage's swapper runs several streams' faces in one call; per item it computes exactly what
  inswapper_128.onnx does.
* hyperswap_1a_256.onnx and simswap_256.onnx: stand-ins of the 256 px families with their pixel
  scales (hyperswap: `target` and the output in [-1,1]; simswap: `target` scaled by the ImageNet
  mean and deviation, output in [0,1]). Their inputs are named `source` and `target`, listed in
  that order, and the output is called `swapped` (the code takes inputs by name and the first
  output by position). On the [0,1] scale both return what the inswapper stand-in does,
  0.3*target + 0.7*sigmoid(source @ Wc + bc), so a wrong scale in or out shows as a wrong colour.
* crossface_simswap.onnx (simswap's embedding converter): `input` [1,512] -> [1,512],
  input + b with b[i] = cos(0.3 i)/2, so what the server feeds it (the raw ArcFace output, not
  the unit vector) shows in the result.

IR version 6 (opset 11's IR), well under ONNX Runtime's limit of 13.
"""

import math
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "fixtures"
OPSET = 11
IR_VERSION = 6
STRIDES = (8, 16, 32)
# Keypoint offsets from the nose in units of the marker side a: left eye, right eye, nose,
# left mouth corner, right mouth corner (the order of insightface's five points).
KPS_DX = [-0.9, 0.9, 0.0, -0.75, 0.75]
KPS_DY = [-1.0, -1.0, 0.0, 1.05, 1.05]
MIN_MASS = 150.0  # marker pixels a window must hold before it scores at all


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def save(model, name):
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = OUT / name
    onnx.save(model, path)
    print(f"{path} {path.stat().st_size} bytes")


def detector():
    nodes, inits = [], []
    inits += [
        const("k_two", [2.0]),
        const("k_three", [3.0]),
        const("k_gain", [1.0 / 0.984375]),
        const("k_one", [1.0]),
        const("k_zero", [0.0]),
        const("k_eps", [1e-6]),
        const("k_min_mass", [MIN_MASS]),
        const("axis_w", 3, np.int64),
        const("axis_h", 2, np.int64),
        const("shape_1", [-1, 1], np.int64),
        const("shape_4", [-1, 4], np.int64),
        const("shape_10", [-1, 10], np.int64),
        const("kps_dx", np.array(KPS_DX).reshape(1, 5, 1, 1)),
        const("kps_dy", np.array(KPS_DY).reshape(1, 5, 1, 1)),
    ]
    n = helper.make_node
    nodes += [
        n("Split", ["input.1"], ["r", "g", "b"], axis=1, split=[1, 1, 1]),
        # markerness m in [0,1]: 1 for pure magenta after the (x-127.5)/128 normalisation.
        n("Add", ["r", "b"], ["rb"]),
        n("Mul", ["g", "k_two"], ["g2"]),
        n("Sub", ["rb", "g2"], ["t0"]),
        n("Sub", ["t0", "k_three"], ["t1"]),
        n("Mul", ["t1", "k_gain"], ["t2"]),
        n("Relu", ["t2"], ["t3"]),
        n("Min", ["t3", "k_one"], ["m"]),
        # Pixel coordinate maps (x = column index, y = row index) from the input's own shape.
        n("Mul", ["r", "k_zero"], ["zeros"]),
        n("Add", ["zeros", "k_one"], ["ones"]),
        n("CumSum", ["ones", "axis_w"], ["xc"]),
        n("Sub", ["xc", "k_one"], ["X"]),
        n("CumSum", ["ones", "axis_h"], ["yc"]),
        n("Sub", ["yc", "k_one"], ["Y"]),
        n("Mul", ["m", "X"], ["mX"]),
        n("Mul", ["m", "Y"], ["mY"]),
    ]
    scores, boxes, kpss = [], [], []
    for s in STRIDES:
        p = f"s{s}_"
        inits += [
            const(p + "area3", [(3.0 * s) ** 2]),
            const(p + "area4", [(4.0 * s) ** 2]),
            const(p + "inv_s", [1.0 / s]),
            const(p + "starts", [0, 0], np.int64),
            const(p + "ends", [1 << 30, 1 << 30], np.int64),
            const(p + "axes", [2, 3], np.int64),
            const(p + "steps", [s, s], np.int64),
        ]

        def pool3(src, dst):
            # Window [j*s - 1.5s, j*s + 1.5s): centred on the anchor at j*s. Sum = mean * area.
            b, e = 3 * s // 2, s // 2
            nodes.append(n("AveragePool", [src], [dst + "_mean"], kernel_shape=[3 * s, 3 * s],
                           strides=[s, s], pads=[b, b, e, e], count_include_pad=1))
            nodes.append(n("Mul", [dst + "_mean", p + "area3"], [dst]))

        pool3("m", p + "mass3")
        pool3("mX", p + "sumx")
        pool3("mY", p + "sumy")
        nodes += [
            n("AveragePool", ["m"], [p + "mass4_mean"], kernel_shape=[4 * s, 4 * s],
              strides=[s, s], pads=[2 * s, 2 * s, s, s], count_include_pad=1),
            n("Mul", [p + "mass4_mean", p + "area4"], [p + "mass4"]),
            n("Add", [p + "mass3", "k_eps"], [p + "mass3e"]),
            n("Add", [p + "mass4", "k_eps"], [p + "mass4e"]),
            # centroid of the marker inside the window, in pixels
            n("Div", [p + "sumx", p + "mass3e"], [p + "cx"]),
            n("Div", [p + "sumy", p + "mass3e"], [p + "cy"]),
            # anchor centres j*s, i*s, sampled from the coordinate maps
            n("Slice", ["X", p + "starts", p + "ends", p + "axes", p + "steps"], [p + "ax"]),
            n("Slice", ["Y", p + "starts", p + "ends", p + "axes", p + "steps"], [p + "ay"]),
            # score = (mass3/mass4)^4 * min(mass3/MIN_MASS, 1)
            n("Div", [p + "mass3", p + "mass4e"], [p + "ratio"]),
            n("Mul", [p + "ratio", p + "ratio"], [p + "ratio2"]),
            n("Mul", [p + "ratio2", p + "ratio2"], [p + "ratio4"]),
            n("Div", [p + "mass3", "k_min_mass"], [p + "massn"]),
            n("Min", [p + "massn", "k_one"], [p + "massg"]),
            n("Mul", [p + "ratio4", p + "massg"], [p + "score_map"]),
            # offsets in stride units: dx, dy of the centroid from the anchor; h = 2a/s
            n("Sub", [p + "cx", p + "ax"], [p + "dxp"]),
            n("Mul", [p + "dxp", p + "inv_s"], [p + "dx"]),
            n("Sub", [p + "cy", p + "ay"], [p + "dyp"]),
            n("Mul", [p + "dyp", p + "inv_s"], [p + "dy"]),
            n("Sqrt", [p + "mass3"], [p + "side"]),
            n("Mul", [p + "side", p + "inv_s"], [p + "side_s"]),
            n("Mul", [p + "side_s", "k_two"], [p + "h"]),
            n("Sub", [p + "h", p + "dx"], [p + "d0"]),
            n("Sub", [p + "h", p + "dy"], [p + "d1"]),
            n("Add", [p + "h", p + "dx"], [p + "d2"]),
            n("Add", [p + "h", p + "dy"], [p + "d3"]),
            n("Concat", [p + "d0", p + "d1", p + "d2", p + "d3"], [p + "box_map"], axis=1),
            n("Mul", [p + "side_s", "kps_dx"], [p + "kx_off"]),
            n("Add", [p + "kx_off", p + "dx"], [p + "kx"]),
            n("Mul", [p + "side_s", "kps_dy"], [p + "ky_off"]),
            n("Add", [p + "ky_off", p + "dy"], [p + "ky"]),
            n("Unsqueeze", [p + "kx"], [p + "kx5"], axes=[2]),
            n("Unsqueeze", [p + "ky"], [p + "ky5"], axes=[2]),
            n("Concat", [p + "kx5", p + "ky5"], [p + "kxy"], axis=2),  # [1,5,2,h,w]
            n("Transpose", [p + "kxy"], [p + "kxy_t"], perm=[0, 3, 4, 1, 2]),  # [1,h,w,5,2]
            n("Unsqueeze", [p + "kxy_t"], [p + "kxy_a"], axes=[3]),  # [1,h,w,1,5,2]
            n("Concat", [p + "kxy_a", p + "kxy_a"], [p + "kps_2"], axis=3),  # [1,h,w,2,5,2]
        ]
        # Two anchors per cell as SCRFD's heads give them, [1, 2*C, h, w] transposed to
        # [1, h, w, 2*C], so that the output Reshape to [-1, C] is position-major and every
        # operation before it keeps the batch dimension apart.
        for src, dst in (("score_map", "score_2"), ("box_map", "box_2")):
            nodes += [
                n("Concat", [p + src, p + src], [p + src + "_2"], axis=1),
                n("Transpose", [p + src + "_2"], [p + dst], perm=[0, 2, 3, 1]),
            ]
        scores.append((p + "score_2", "shape_1"))
        boxes.append((p + "box_2", "shape_4"))
        kpss.append((p + "kps_2", "shape_10"))
    # Output names as numbered in the buffalo_l export; facerelay, like insightface, reads the
    # detector's outputs by position, not by name.
    names = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    widths = [1, 1, 1, 4, 4, 4, 10, 10, 10]
    outputs = []
    for (src, shape), name, width in zip(scores + boxes + kpss, names, widths):
        nodes.append(n("Reshape", [src, shape], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{name}", width]))
    graph = helper.make_graph(
        nodes, "scrfd_fixture",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])],
        outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="facerelay tools/gen_test_models.py")


def recognizer():
    rng = np.random.default_rng(1)
    w = rng.normal(0.0, 1.0, (147, 512)).astype(np.float32)
    b = rng.normal(0.0, 0.1, (512,)).astype(np.float32)
    n = helper.make_node
    nodes = [
        n("AveragePool", ["input.1"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
        n("Flatten", ["pooled"], ["flat"], axis=1),
        n("MatMul", ["flat", "fc.weight"], ["fc"]),
        n("Add", ["fc", "fc.bias"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "arcface_fixture",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [None, 512])],
        [const("fc.weight", w), const("fc.bias", b)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="facerelay tools/gen_test_models.py")


def emap():
    i = np.arange(512, dtype=np.float64).reshape(512, 1)
    j = np.arange(512, dtype=np.float64).reshape(1, 512)
    return (np.sin(0.37 * i + 0.11 * j) / 16.0).astype(np.float32)


def swapper(batch=1):
    """The stand-in swapper; `batch`: 1, or a name for a symbolic batch dimension."""
    rng = np.random.default_rng(2)
    wc = rng.normal(0.0, 1.0, (512, 3)).astype(np.float32)
    n = helper.make_node
    nodes = [
        n("MatMul", ["source", "style.weight"], ["style"]),
        n("Add", ["style", "style.bias"], ["style_b"]),
        n("Sigmoid", ["style_b"], ["colour"]),
        n("Reshape", ["colour", "colour_shape"], ["colour4"]),
        n("Mul", ["target", "keep"], ["kept"]),
        n("Mul", ["colour4", "tint"], ["tinted"]),
        n("Add", ["kept", "tinted"], ["output"]),
    ]
    inits = [
        const("style.weight", wc),
        const("style.bias", [-1.5, 1.5, -1.5]),
        const("colour_shape", [1 if batch == 1 else -1, 3, 1, 1], np.int64),
        const("keep", [0.3]),
        const("tint", [0.7]),
        # Last initializer: the 512x512 emap, as insightface reads it (graph.initializer[-1]).
        const("buff2fs", emap()),
    ]
    graph = helper.make_graph(
        nodes, "inswapper_fixture",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [batch, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [batch, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 128, 128])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="facerelay tools/gen_test_models.py")


SCALES = {
    # family: (input mean, input deviation, output on the input's scale)
    "hyperswap": ([0.5] * 3, [0.5] * 3, True),
    "simswap": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], False),
}


def swapper_256(family):
    """A stand-in of a 256 px swapper family (see SCALES)."""
    mean, std, scaled_out = SCALES[family]
    rng = np.random.default_rng(2)
    wc = rng.normal(0.0, 1.0, (512, 3)).astype(np.float32)
    n = helper.make_node
    channel = lambda v: np.asarray(v, np.float32).reshape(1, 3, 1, 1)
    nodes = [
        n("MatMul", ["source", "style.weight"], ["style"]),
        n("Add", ["style", "style.bias"], ["style_b"]),
        n("Sigmoid", ["style_b"], ["colour"]),
        n("Reshape", ["colour", "colour_shape"], ["colour4"]),
        # The target back on the [0,1] scale.
        n("Mul", ["target", "in_std"], ["t_scaled"]),
        n("Add", ["t_scaled", "in_mean"], ["t01"]),
        n("Mul", ["t01", "keep"], ["kept"]),
        n("Mul", ["colour4", "tint"], ["tinted"]),
        n("Add", ["kept", "tinted"], ["y01"]),
    ]
    if scaled_out:
        nodes += [n("Sub", ["y01", "in_mean"], ["y_centred"]),
                  n("Div", ["y_centred", "in_std"], ["swapped"])]
    else:
        nodes += [n("Identity", ["y01"], ["swapped"])]
    inits = [
        const("style.weight", wc),
        const("style.bias", [-1.5, 1.5, -1.5]),
        const("colour_shape", [1, 3, 1, 1], np.int64),
        const("in_std", channel(std)),
        const("in_mean", channel(mean)),
        const("keep", [0.3]),
        const("tint", [0.7]),
    ]
    graph = helper.make_graph(
        nodes, f"{family}_fixture",
        [helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
         helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("swapped", TensorProto.FLOAT, [1, 3, 256, 256])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="facerelay tools/gen_test_models.py")


def converter():
    """simswap's embedding converter stand-in: input + b, b[i] = cos(0.3 i)/2."""
    b = (np.cos(0.3 * np.arange(512, dtype=np.float64)) / 2.0).astype(np.float32).reshape(1, 512)
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "shift"], ["converted"])], "crossface_fixture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("converted", TensorProto.FLOAT, [1, 512])],
        [const("shift", b)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="facerelay tools/gen_test_models.py")


def draw_face(d, cx, cy, a, skin, eye, mouth):
    """A face-like figure whose magenta nose (side a, centred on cx, cy) the fixture detects."""
    d.ellipse([cx - 1.8 * a, cy - 2.4 * a, cx + 1.8 * a, cy + 2.2 * a], fill=skin)
    for dx, dy in zip(KPS_DX[:2], KPS_DY[:2]):
        ex, ey = cx + dx * a, cy + dy * a
        d.ellipse([ex - 0.3 * a, ey - 0.2 * a, ex + 0.3 * a, ey + 0.2 * a], fill=(255, 255, 255))
        d.ellipse([ex - 0.13 * a, ey - 0.13 * a, ex + 0.13 * a, ey + 0.13 * a], fill=eye)
    d.line([cx + KPS_DX[3] * a, cy + KPS_DY[3] * a, cx + KPS_DX[4] * a, cy + KPS_DY[4] * a],
           fill=mouth, width=max(2, int(a / 6)))
    h = a / 2
    # Box corners are inclusive in PIL: [x0, x1] covers a pixels when x1 = x0 + a - 1.
    d.rectangle([round(cx - h), round(cy - h), round(cx - h) + a - 1, round(cy - h) + a - 1],
                fill=(255, 0, 255))


def test_card():
    """640x480 target: colour bars, a grey ramp, a grid, and one face (nose at 400, 250, a=36)."""
    w, h = 640, 480
    img = Image.new("RGB", (w, h), (40, 40, 48))
    d = ImageDraw.Draw(img)
    bars = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192),
            (192, 0, 0), (0, 0, 192)]
    for k, c in enumerate(bars):
        d.rectangle([k * w // 7, 0, (k + 1) * w // 7 - 1, 59], fill=c)
    for x in range(w):
        v = x * 255 // (w - 1)
        d.line([x, 420, x, 479], fill=(v, v, v))
    for x in range(0, 240, 20):
        d.line([x, 80, x, 400], fill=(90, 90, 100))
    for y in range(80, 401, 20):
        d.line([0, y, 239, y], fill=(90, 90, 100))
    draw_face(d, 400, 250, 36, skin=(224, 172, 140), eye=(60, 40, 20), mouth=(150, 40, 40))
    return img


def source_photo():
    """320x400 source: a differently coloured face (nose at 160, 210, a=40)."""
    img = Image.new("RGB", (320, 400), (200, 220, 235))
    d = ImageDraw.Draw(img)
    draw_face(d, 160, 210, 40, skin=(120, 80, 50), eye=(20, 60, 160), mouth=(90, 20, 30))
    return img


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    save(detector(), "det_10g.onnx")
    save(recognizer(), "w600k_r50.onnx")
    save(swapper(), "inswapper_128.onnx")
    save(swapper("N"), "inswapper_128_batched.onnx")
    save(swapper_256("hyperswap"), "hyperswap_1a_256.onnx")
    save(swapper_256("simswap"), "simswap_256.onnx")
    save(converter(), "crossface_simswap.onnx")
    test_card().save(OUT / "testcard_target.png")
    source_photo().save(OUT / "testcard_source.jpg", quality=92)
    print("emap[1][2] =", float(emap()[1][2]), "expected", math.sin(0.37 + 0.22) / 16)


if __name__ == "__main__":
    main()
