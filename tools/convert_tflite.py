#!/usr/bin/env python3
"""Converts a float TFLite model (MediaPipe's face detector and face mesh) into a channel-first
ONNX model, with no TensorFlow: the flatbuffer is read with the `tflite` package and the graph
written with `onnx`.

    convert_tflite.py SRC.tflite DEST.onnx --input image --output landmarks=1x1404 --output presence=1x1

`--input` names the (single) graph input; each `--output NAME[=DIMS]` names the graph outputs in
TFLite's order and optionally reshapes them. The ONNX input is NCHW: a TFLite input of
1xHxWxC becomes 1xCxHxW.

Only the operators those models use are converted (CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD,
MAX_POOL_2D, PAD, RELU, RELU6, DEQUANTIZE of float16 constants, RESHAPE, CONCATENATION, and the
fused activations); anything else stops with an error naming the operator.

Layout: every 4-D activation is kept NCHW in ONNX (weights are transposed once, here), so the
graph needs no Transpose except where TFLite's NHWC element order is observable: before a
RESHAPE, and (back to NCHW) after a RESHAPE that yields 4-D. Tensors of other ranks keep TFLite's
order and their operators' axes unchanged.

The output is deterministic: the same input gives the same bytes (fixed producer, no time
stamps, initializers sorted by name, deterministic protobuf serialization).
"""

import argparse
import hashlib
import sys

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Padding import Padding
from tflite.TensorType import TensorType

OPSET = 13  # Conv, MaxPool, PRelu, Pad (pads as an input), Clip (bounds as inputs)
IR_VERSION = 7  # the IR version that goes with opset 13
PRODUCER = ("facerelay tools/convert_tflite.py", "1")

OP_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
ACT_NAMES = {v: k for k, v in vars(ActivationFunctionType).items() if not k.startswith("_")}
DTYPES = {
    TensorType.FLOAT32: np.float32,
    TensorType.FLOAT16: np.float16,
    TensorType.INT32: np.int32,
    TensorType.INT64: np.int64,
}
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


class ConversionError(Exception):
    pass


class Converter:
    def __init__(self, data, input_name, outputs):
        self.data = data
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() != 1:
            raise ConversionError(f"{model.SubgraphsLength()} subgraphs; only 1 is supported")
        self.model = model
        self.g = model.Subgraphs(0)
        self.nodes = []
        self.initializers = {}  # name -> TensorProto
        self.folded = {}  # TFLite tensor index -> constant folded here (DEQUANTIZE)
        self.nchw = set()  # TFLite tensor indices held as NCHW in the ONNX graph
        self.names = {}  # TFLite tensor index -> ONNX value name
        self.input_name = input_name
        self.outputs = outputs  # [(name, dims or None)]

    # --- TFLite side -------------------------------------------------------------------------

    def tensor(self, i):
        return self.g.Tensors(i)

    def shape(self, i):
        t = self.tensor(i)
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def is_const(self, i):
        return i in self.folded or self.buffer_bytes(i) is not None

    def buffer_bytes(self, i):
        buf = self.model.Buffers(self.tensor(i).Buffer())
        if buf.Offset() > 1:  # large models keep buffers after the flatbuffer
            return self.data[buf.Offset() : buf.Offset() + buf.Size()]
        if buf.DataLength():
            return buf.DataAsNumpy().tobytes()
        return None

    def const(self, i):
        if i in self.folded:
            return self.folded[i]
        t = self.tensor(i)
        raw = self.buffer_bytes(i)
        if raw is None:
            raise ConversionError(f"tensor {self.tflite_name(i)!r} is not a constant")
        if t.Type() not in DTYPES:
            raise ConversionError(f"constant {self.tflite_name(i)!r} has unsupported type {t.Type()}")
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            raise ConversionError(f"constant {self.tflite_name(i)!r} is quantized; not supported")
        return np.frombuffer(raw, dtype=np.dtype(DTYPES[t.Type()]).newbyteorder("<")).reshape(self.shape(i))

    def tflite_name(self, i):
        return self.tensor(i).Name().decode()

    def options(self, op, cls):
        table = op.BuiltinOptions()
        opts = cls()
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
        return opts

    # --- ONNX side ---------------------------------------------------------------------------

    def name(self, i):
        """The ONNX value of an activation tensor."""
        if i not in self.names:
            self.names[i] = self.tflite_name(i)
        return self.names[i]

    def node(self, op_type, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))

    def initializer(self, name, array):
        array = np.ascontiguousarray(array)
        if name in self.initializers:
            if not np.array_equal(numpy_helper.to_array(self.initializers[name]), array):
                raise ConversionError(f"two different constants named {name!r}")
        else:
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def weight(self, i, transform=lambda a: a, suffix=""):
        return self.initializer(self.tflite_name(i) + suffix, transform(self.const(i).astype(np.float32)))

    def broadcast_to_layout(self, i, like):
        """A constant operand (PReLU slope, addend) in the layout of the activation `like`."""
        a = self.const(i).astype(np.float32)
        if like in self.nchw:
            a = a.reshape((1,) * (4 - a.ndim) + a.shape).transpose(NHWC_TO_NCHW)
            return self.initializer(self.tflite_name(i) + "/nchw", a)
        return self.initializer(self.tflite_name(i), a)

    def activation(self, fused, src, dst):
        """Writes `dst` = fused activation of `src` (or renames nothing: src is dst)."""
        if fused == ActivationFunctionType.NONE:
            return
        if fused == ActivationFunctionType.RELU:
            self.node("Relu", [src], [dst])
        elif fused in (ActivationFunctionType.RELU6, ActivationFunctionType.RELU_N1_TO_1):
            lo, hi = (0.0, 6.0) if fused == ActivationFunctionType.RELU6 else (-1.0, 1.0)
            bounds = [self.initializer(f"clip/{v:g}", np.array(v, np.float32)) for v in (lo, hi)]
            self.node("Clip", [src] + bounds, [dst])
        elif fused == ActivationFunctionType.TANH:
            self.node("Tanh", [src], [dst])
        else:
            raise ConversionError(f"fused activation {ACT_NAMES.get(fused, fused)} is not supported")

    def out_with_activation(self, fused, out):
        """The name an operator writes to, before its fused activation (if any)."""
        dst = self.name(out)
        return dst if fused == ActivationFunctionType.NONE else dst + "/pre_activation"

    def require_nchw(self, i, op):
        if i not in self.nchw:
            raise ConversionError(f"{op}: input {self.tflite_name(i)!r} is not a 4-D activation")

    # --- operators ---------------------------------------------------------------------------

    @staticmethod
    def same_pads(in_hw, kernel, strides, dilations, padding):
        """ONNX pads [top, left, bottom, right] for TFLite SAME/VALID (the odd pixel goes at the end)."""
        if padding == Padding.VALID:
            return [0, 0, 0, 0]
        begin, end = [], []
        for n, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    def conv(self, op, ins, outs, depthwise):
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else -1
        self.require_nchw(x, "conv")
        o = self.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        kh, kw = self.shape(w)[1:3]
        strides = [o.StrideH(), o.StrideW()]
        dil = [o.DilationHFactor(), o.DilationWFactor()]
        pads = self.same_pads(self.shape(x)[1:3], [kh, kw], strides, dil, o.Padding())
        if depthwise:
            # TFLite [1, KH, KW, C*M] -> ONNX [C*M, 1, KH, KW], one group per input channel.
            weight = self.weight(w, lambda a: a.transpose(3, 0, 1, 2))
            group = self.shape(x)[3]
        else:
            # TFLite [O, KH, KW, I] -> ONNX [O, I, KH, KW].
            weight = self.weight(w, lambda a: a.transpose(0, 3, 1, 2))
            group = 1
        inputs = [self.name(x), weight] + ([self.weight(b)] if b >= 0 else [])
        dst = self.out_with_activation(o.FusedActivationFunction(), outs[0])
        self.node("Conv", inputs, [dst], kernel_shape=[kh, kw], strides=strides, dilations=dil,
                  pads=pads, group=group)
        self.activation(o.FusedActivationFunction(), dst, self.name(outs[0]))
        self.nchw.add(outs[0])

    def max_pool(self, op, ins, outs):
        x = ins[0]
        self.require_nchw(x, "MAX_POOL_2D")
        o = self.options(op, tflite.Pool2DOptions)
        kernel = [o.FilterHeight(), o.FilterWidth()]
        strides = [o.StrideH(), o.StrideW()]
        pads = self.same_pads(self.shape(x)[1:3], kernel, strides, [1, 1], o.Padding())
        dst = self.out_with_activation(o.FusedActivationFunction(), outs[0])
        # ONNX MaxPool ignores padded cells, as TFLite's SAME max pooling does.
        self.node("MaxPool", [self.name(x)], [dst], kernel_shape=kernel, strides=strides, pads=pads)
        self.activation(o.FusedActivationFunction(), dst, self.name(outs[0]))
        self.nchw.add(outs[0])

    def add(self, op, ins, outs):
        o = self.options(op, tflite.AddOptions)
        acts = [i for i in ins if not self.is_const(i)]
        if not acts:
            raise ConversionError("ADD of two constants")
        layouts = {i in self.nchw for i in acts}
        if len(layouts) != 1:
            raise ConversionError("ADD of a 4-D activation and a tensor of another rank")
        inputs = [self.broadcast_to_layout(i, acts[0]) if self.is_const(i) else self.name(i) for i in ins]
        dst = self.out_with_activation(o.FusedActivationFunction(), outs[0])
        self.node("Add", inputs, [dst])
        self.activation(o.FusedActivationFunction(), dst, self.name(outs[0]))
        if acts[0] in self.nchw:
            self.nchw.add(outs[0])

    def prelu(self, op, ins, outs):
        x, alpha = ins
        self.node("PRelu", [self.name(x), self.broadcast_to_layout(alpha, x)], [self.name(outs[0])])
        if x in self.nchw:
            self.nchw.add(outs[0])

    def unary(self, onnx_op, fused):
        def convert(op, ins, outs):
            if onnx_op:
                self.node(onnx_op, [self.name(ins[0])], [self.name(outs[0])])
            else:
                self.activation(fused, self.name(ins[0]), self.name(outs[0]))
            if ins[0] in self.nchw:
                self.nchw.add(outs[0])

        return convert

    def pad(self, op, ins, outs):
        x, paddings = ins[0], self.const(ins[1]).astype(np.int64)
        if len(ins) > 2:
            raise ConversionError("PAD with a padding value is not supported")
        if x in self.nchw:
            paddings = paddings[list(NHWC_TO_NCHW)]
        pads = self.initializer(self.tflite_name(ins[1]) + "/onnx", np.concatenate([paddings[:, 0], paddings[:, 1]]))
        self.node("Pad", [self.name(x), pads], [self.name(outs[0])], mode="constant")
        if x in self.nchw:
            self.nchw.add(outs[0])

    def dequantize(self, op, ins, outs):
        # MediaPipe stores weights as float16 constants behind DEQUANTIZE: fold them to float32.
        t = self.tensor(ins[0])
        if t.Type() != TensorType.FLOAT16 or not self.is_const(ins[0]):
            raise ConversionError("DEQUANTIZE is supported only for float16 constants")
        self.folded[outs[0]] = self.const(ins[0]).astype(np.float32)

    def reshape(self, op, ins, outs):
        x, out_shape = ins[0], self.shape(outs[0])
        src = self.name(x)
        if x in self.nchw:
            # RESHAPE reads elements in NHWC order: restore that order first.
            src = self.name(outs[0]) + "/nhwc"
            self.node("Transpose", [self.name(x)], [src], perm=list(NCHW_TO_NHWC))
        shape = self.initializer(self.name(outs[0]) + "/shape", np.array(out_shape, np.int64))
        if len(out_shape) == 4:
            flat = self.name(outs[0]) + "/reshaped"
            self.node("Reshape", [src, shape], [flat])
            self.node("Transpose", [flat], [self.name(outs[0])], perm=list(NHWC_TO_NCHW))
            self.nchw.add(outs[0])
        else:
            self.node("Reshape", [src, shape], [self.name(outs[0])])

    def concat(self, op, ins, outs):
        o = self.options(op, tflite.ConcatenationOptions)
        if any(self.is_const(i) for i in ins):
            raise ConversionError("CONCATENATION of constants is not supported")
        layouts = {i in self.nchw for i in ins}
        if len(layouts) != 1:
            raise ConversionError("CONCATENATION of tensors of different ranks")
        axis = o.Axis() % len(self.shape(outs[0]))
        if ins[0] in self.nchw:
            axis = NHWC_TO_NCHW.index(axis)
            self.nchw.add(outs[0])
        dst = self.out_with_activation(o.FusedActivationFunction(), outs[0])
        self.node("Concat", [self.name(i) for i in ins], [dst], axis=axis)
        self.activation(o.FusedActivationFunction(), dst, self.name(outs[0]))

    # --- the graph ---------------------------------------------------------------------------

    def convert(self):
        handlers = {
            BuiltinOperator.CONV_2D: lambda op, i, o: self.conv(op, i, o, depthwise=False),
            BuiltinOperator.DEPTHWISE_CONV_2D: lambda op, i, o: self.conv(op, i, o, depthwise=True),
            BuiltinOperator.MAX_POOL_2D: self.max_pool,
            BuiltinOperator.ADD: self.add,
            BuiltinOperator.PRELU: self.prelu,
            BuiltinOperator.RELU: self.unary("Relu", None),
            BuiltinOperator.RELU6: self.unary(None, ActivationFunctionType.RELU6),
            BuiltinOperator.PAD: self.pad,
            BuiltinOperator.DEQUANTIZE: self.dequantize,
            BuiltinOperator.RESHAPE: self.reshape,
            BuiltinOperator.CONCATENATION: self.concat,
        }
        g = self.g
        if g.InputsLength() != 1:
            raise ConversionError(f"{g.InputsLength()} graph inputs; only 1 is supported")
        if g.OutputsLength() != len(self.outputs):
            raise ConversionError(f"the model has {g.OutputsLength()} outputs, {len(self.outputs)} were named")

        x = int(g.InputsAsNumpy()[0])
        in_shape = self.shape(x)
        if len(in_shape) != 4 or self.tensor(x).Type() != TensorType.FLOAT32:
            raise ConversionError(f"input must be float32 NHWC, is {in_shape} of type {self.tensor(x).Type()}")
        self.names[x] = self.input_name
        self.nchw.add(x)
        graph_inputs = [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT,
                                                      [in_shape[d] for d in NHWC_TO_NCHW])]

        # An output that needs no reshape keeps its TFLite producer; name it directly.
        out_ids = [int(i) for i in g.OutputsAsNumpy()]
        for i, (name, dims) in zip(out_ids, self.outputs):
            if dims is None or (dims == self.shape(i) and len(dims) != 4):
                self.names[i] = name

        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin not in handlers:
                what = OP_NAMES.get(builtin, f"code {builtin}")
                if builtin == BuiltinOperator.CUSTOM:
                    what = f"CUSTOM ({code.CustomCode().decode()})"
                raise ConversionError(f"operator {k}: TFLite operator {what} is not supported by this converter")
            ins = [int(i) for i in op.InputsAsNumpy()]
            outs = [int(i) for i in op.OutputsAsNumpy()]
            handlers[builtin](op, ins, outs)

        graph_outputs = []
        for i, (name, dims) in zip(out_ids, self.outputs):
            if self.names.get(i) != name:
                dims = dims or self.shape(i)
                src = self.name(i)
                shape = self.shape(i)
                # A 1x1 spatial map has the same element order in NCHW and NHWC; otherwise
                # restore TFLite's order before flattening.
                if i in self.nchw and shape[1] * shape[2] != 1:
                    self.node("Transpose", [src], [name + "/nhwc"], perm=list(NCHW_TO_NHWC))
                    src = name + "/nhwc"
                if int(np.prod(dims)) != int(np.prod(shape)):
                    raise ConversionError(f"output {name}: cannot reshape {shape} to {dims}")
                self.node("Reshape", [src, self.initializer(name + "/shape", np.array(dims, np.int64))], [name])
            else:
                shape = self.shape(i)
                dims = [shape[d] for d in NHWC_TO_NCHW] if i in self.nchw else shape
            graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

        graph = helper.make_graph(
            self.nodes,
            "main",
            graph_inputs,
            graph_outputs,
            initializer=[self.initializers[n] for n in sorted(self.initializers)],
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=PRODUCER[0],
            producer_version=PRODUCER[1],
        )
        helper.set_model_props(model, {"source_sha256": hashlib.sha256(self.data).hexdigest()})
        onnx.checker.check_model(model, full_check=True)
        return model


def convert(data, input_name, outputs):
    """TFLite flatbuffer bytes -> serialized ONNX bytes."""
    model = Converter(data, input_name, outputs).convert()
    return model.SerializeToString(deterministic=True)


def parse_output(text):
    name, _, dims = text.partition("=")
    return name, [int(d) for d in dims.split("x")] if dims else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--input", default="image", help="name of the graph input")
    p.add_argument("--output", action="append", type=parse_output, required=True,
                   help="NAME[=DIMS, e.g. 1x1404] for each graph output, in TFLite's order")
    args = p.parse_args()
    with open(args.src, "rb") as f:
        data = f.read()
    try:
        out = convert(data, args.input, args.output)
    except ConversionError as e:
        sys.exit(f"convert_tflite.py: {args.src}: {e}")
    with open(args.dest, "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
