#!/usr/bin/env python3
"""Writes optimised variants of the user's model files beside them, each verified against its
original, and records them in DIR/prepared.json. `facerelay models prepare` runs this (in
.deps/venv-models, tools/requirements-prepare.txt).

    prepare_models.py --dir DIR --model FILE [--model FILE ...] [--fp16] [--inputs JSON]

For each FILE (a model whose inputs have a leading batch dimension of 1 and whose outputs have
one too, as `inswapper_128.onnx` and the other deep swappers, or fold it into their first of two
dimensions, as SCRFD's `det_10g.onnx` does with its [anchors, C] outputs):

* `STEM.batch.onnx`: the same graph with a symbolic batch dimension `N` on every input and output
  (folded outputs become [N, anchors, C]), and its constant Reshape targets made to keep the
  batch apart (see `batched_graph`). Verified on random inputs and on `--inputs` when given: at
  batch 1, 2 and 4 every item's outputs equal the original's for that item alone within 1e-4
  (absolute). A graph that does not pass is not written.
* with `--fp16`, for swappers (not for detectors), `STEM.batch.fp16.onnx`: the batch variant
  with float16 weights and arithmetic, its inputs and outputs still float32 (so the server feeds
  it as it feeds the original), within 2e-2 (absolute, on outputs in [0,1] or [-1,1]) of the
  float32 original at batch 2, on random inputs and on `--inputs` when given.

prepared.json lists, per variant: its file and sha256, the original's file and sha256, the kind,
the largest difference measured, the tolerance and the inputs measured on (random, real). The
server uses a variant only when both sha256s still match.

Provenance: written for facerelay; onnx, onnxruntime and onnxconverter-common from PyPI at the
versions pinned in tools/requirements-*.txt.
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from packaged_models import sha256_file as sha256

BATCH_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2
BATCHES = (1, 2, 4)


def session(path_or_bytes):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def inputs_of(sess, batch, rng, given=None):
    """Inputs for `batch` items: the given arrays' first `batch` items, else random values in
    [0,1) for images and unit vectors for 2-D inputs; symbolic sizes other than the batch are
    640."""
    feed = {}
    for i in sess.get_inputs():
        if given is not None and i.name in given:
            feed[i.name] = given[i.name][:batch].astype(np.float32)
            continue
        shape = [batch] + [d if isinstance(d, int) and d > 0 else 640 for d in i.shape[1:]]
        x = rng.random(shape, dtype=np.float32)
        if len(shape) == 2:
            x = x - 0.5
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        feed[i.name] = x
    return feed


def reshape_targets(graph):
    """The constant int64 Reshape targets (initializers and Constant nodes) that nothing but
    Reshape nodes read, as (array, write-back function)."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    only_reshape = lambda name: consumers.get(name) == {"Reshape"}
    for init in graph.initializer:
        if only_reshape(init.name) and init.data_type == onnx.TensorProto.INT64:
            yield numpy_helper.to_array(init), \
                lambda a, init=init: init.CopyFrom(numpy_helper.from_array(a, init.name))
    for node in graph.node:
        if node.op_type == "Constant" and only_reshape(node.output[0]):
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.INT64:
                    yield numpy_helper.to_array(attr.t), \
                        lambda a, attr=attr: attr.t.CopyFrom(numpy_helper.from_array(a))


def batched_graph(model):
    """The model with a symbolic batch dimension `N`, and whether its outputs were folded; None
    when it has no batch to give.

    Every input must lead with a batch of 1. Outputs either lead with 1 too (the swappers) or
    are rank 2 with the batch folded into their first dimension (SCRFD's [anchors, C], from
    Reshape targets [-1, C]): those become [N, anchors, C]. Constant Reshape targets follow:
    [1, …] without -1 becomes [-1, …], [1, …] with -1 becomes [0, …] (0: the input's own first
    dimension), and with folded outputs [-1, C] becomes [0, -1, C]. Whether the result is right
    is for the verification to say, not this rewrite."""
    graph = model.graph
    dims = lambda v: v.type.tensor_type.shape.dim
    if not graph.input or not graph.output \
            or any(not dims(v) or dims(v)[0].dim_value != 1 for v in graph.input):
        return None
    folded = [v for v in graph.output if len(dims(v)) == 2 and dims(v)[0].dim_value != 1]
    if any(v not in folded and (not dims(v) or dims(v)[0].dim_value != 1) for v in graph.output):
        return None
    for v in list(graph.input) + [v for v in graph.output if v not in folded]:
        dims(v)[0].Clear()
        dims(v)[0].dim_param = "N"
    for v in folded:
        width = onnx.TensorShapeProto.Dimension()
        width.CopyFrom(dims(v)[1])
        del dims(v)[:]
        dims(v).add().dim_param = "N"
        dims(v).add().dim_param = f"{v.name}_anchors"
        dims(v).add().CopyFrom(width)
    # Shapes inferred for batch 1 no longer hold.
    del graph.value_info[:]
    for shape, write in reshape_targets(graph):
        if shape.ndim != 1 or len(shape) < 2:
            continue
        shape = shape.copy()
        if shape[0] == 1:
            shape[0] = 0 if -1 in shape else -1
        elif folded and len(shape) == 2 and shape[0] == -1:
            shape = np.array([0, -1, shape[1]], dtype=np.int64)
        else:
            continue
        write(shape)
    return model, bool(folded)


def verify_batches(original, variant, rng, given):
    """The largest difference of any item's outputs at batch 1, 2, 4 from the original alone."""
    worst = 0.0
    feeds = inputs_of(variant, max(BATCHES), rng, given)
    alone = []
    for k in range(max(BATCHES)):
        item = {name: x[k:k + 1] for name, x in feeds.items()}
        alone.append(original.run(None, item))
    for n in BATCHES:
        out = variant.run(None, {name: x[:n] for name, x in feeds.items()})
        for k in range(n):
            for got, want in zip(out, alone[k]):
                worst = max(worst, float(np.abs(got[k].reshape(want.shape) - want).max()))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=pathlib.Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--inputs", type=pathlib.Path,
                        help="JSON of real inputs, {model file: {input name: {file, shape}}}, "
                             "each file raw little-endian float32 beside the JSON, 4 items")
    args = parser.parse_args()
    real = json.loads(args.inputs.read_text()) if args.inputs else {}
    record_path = args.dir / "prepared.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"variants": []}
    failed = False
    for name in args.model:
        source = args.dir / name
        stem = source.name.removesuffix(".onnx")
        source_sha = sha256(source)
        given = {input_name: np.fromfile(args.inputs.parent / spec["file"], "<f4").reshape(spec["shape"])
                 for input_name, spec in real.get(name, {}).items()} or None
        checked = ["random", "real"] if given else ["random"]
        model = onnx.load(source)
        made = batched_graph(model)
        if made is None:
            print(f"{name}: inputs without a leading batch of 1, or outputs neither leading with 1 "
                  "nor [anchors, C]: left as it is")
            continue
        batched, folded = made
        target = args.dir / f"{stem}.batch.onnx"
        data = batched.SerializeToString()
        original = session(str(source))
        variant = session(data)
        worst = max(verify_batches(original, variant, np.random.default_rng(seed), inputs)
                    for seed, inputs in ((1, None), (2, given)))
        if worst > BATCH_TOLERANCE:
            print(f"{name}: the batch variant differs by {worst:.3g} (> {BATCH_TOLERANCE}): not written")
            failed = True
            continue
        target.write_bytes(data)
        entries = [dict(kind="dynamic-batch", file=target.name, source=name,
                        source_sha256=source_sha, sha256=sha256(target),
                        max_difference=worst, tolerance=BATCH_TOLERANCE, batches=list(BATCHES),
                        inputs=checked)]
        print(f"{name}: {target.name} (batches {', '.join(map(str, BATCHES))}, "
              f"{' and '.join(checked)} inputs: largest difference {worst:.3g})")
        if args.fp16 and folded:
            # A detector's boxes are in anchor strides, not in [0,1], and float16 arithmetic
            # on the CPU takes minutes on a 640 px input: TensorRT's own fp16 mode serves it.
            print(f"{name}: no fp16 variant for a detector")
        elif args.fp16:
            import warnings
            from onnxconverter_common import float16
            # The converter names its Cast nodes after the nodes it wraps: every node needs a
            # name of its own.
            taken = {n.name for n in batched.graph.node if n.name}
            for i, node in enumerate(batched.graph.node):
                if not node.name:
                    node.name = f"{node.op_type}_{i}"
                    while node.name in taken:
                        node.name += "_"
                    taken.add(node.name)
            with warnings.catch_warnings():
                # Weights below float16's smallest step are rounded to it; said once per file.
                warnings.simplefilter("ignore")
                half = float16.convert_float_to_float16(batched, keep_io_types=True)
            half_target = args.dir / f"{stem}.batch.fp16.onnx"
            half_data = half.SerializeToString()
            half_session = session(half_data)
            diff = 0.0
            for seed, inputs in ((3, None), (4, given)):
                feed = inputs_of(original, 2, np.random.default_rng(seed), inputs)
                pairs = zip(half_session.run(None, feed), variant.run(None, feed))
                diff = max([diff] + [float(np.abs(a - b).max()) for a, b in pairs])
            if diff > FP16_TOLERANCE:
                print(f"{name}: the fp16 variant differs by {diff:.3g} (> {FP16_TOLERANCE}): not written")
                failed = True
            else:
                half_target.write_bytes(half_data)
                entries.append(dict(kind="fp16", file=half_target.name, source=name,
                                    source_sha256=source_sha, sha256=sha256(half_target),
                                    max_difference=diff, tolerance=FP16_TOLERANCE, batches=[2],
                                    inputs=checked))
                print(f"{name}: {half_target.name} ({' and '.join(checked)} inputs: largest "
                      f"difference from float32 {diff:.3g})")
        record["variants"] = [v for v in record["variants"] if v["source"] != name] + entries
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
