#!/usr/bin/env python3
"""Writes optimised variants of the user's model files beside them, each verified against its
original, and records them in DIR/prepared.json. `facerelay models prepare` runs this (in
.deps/venv-models, tools/requirements-prepare.txt).

    prepare_models.py --dir DIR --model FILE [--model FILE ...] [--fp16]

For each FILE (a model whose inputs and outputs have a leading batch dimension of 1, such as
`inswapper_128.onnx` and the other deep swappers):

* `STEM.batch.onnx`: the same graph with a symbolic batch dimension `N` on every input and output,
  and every constant Reshape target that starts with 1 starting with -1 instead (the per-item
  reshapes of the style inputs). Verified on random inputs and on `--inputs` when given: at
  batch 1, 2 and 4 every item's outputs equal the original's for that item alone within 1e-4
  (absolute). A graph that does not pass is not written.
* with `--fp16`, `STEM.batch.fp16.onnx`: the batch variant with float16 weights and arithmetic,
  its inputs and outputs still float32 (so the server feeds it as it feeds the original), within
  2e-2 (absolute, on outputs in [0,1] or [-1,1]) of the float32 original at batch 2.

prepared.json lists, per variant: its file and sha256, the original's file and sha256, the kind,
the largest difference measured and the tolerance. The server uses a variant only when both
sha256s still match.

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


def batched_graph(model):
    """The model with a symbolic batch dimension; None when it has no leading batch of 1."""
    graph = model.graph
    ends = list(graph.input) + list(graph.output)
    if not ends or any(not v.type.tensor_type.shape.dim or v.type.tensor_type.shape.dim[0].dim_value != 1
                       for v in ends):
        return None
    for v in ends:
        dim = v.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "N"
    # Shapes inferred for batch 1 no longer hold.
    del graph.value_info[:]
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for init in graph.initializer:
        if consumers.get(init.name) and set(consumers[init.name]) == {"Reshape"} \
                and init.data_type == onnx.TensorProto.INT64:
            shape = numpy_helper.to_array(init)
            if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1 and -1 not in shape:
                shape = shape.copy()
                shape[0] = -1
                init.CopyFrom(numpy_helper.from_array(shape, init.name))
    return model


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
                worst = max(worst, float(np.abs(got[k:k + 1] - want).max()))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=pathlib.Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--inputs", type=pathlib.Path,
                        help=".npz of real inputs (by input name, at least 4 items)")
    args = parser.parse_args()
    given = dict(np.load(args.inputs)) if args.inputs else None
    record_path = args.dir / "prepared.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"variants": []}
    failed = False
    for name in args.model:
        source = args.dir / name
        stem = source.name.removesuffix(".onnx")
        source_sha = sha256(source)
        model = onnx.load(source)
        batched = batched_graph(model)
        if batched is None:
            # SCRFD's outputs, for one, fold the batch into the anchors: nothing to vary.
            print(f"{name}: no leading batch dimension of 1 on every input and output: left as it is")
            continue
        target = args.dir / f"{stem}.batch.onnx"
        data = batched.SerializeToString()
        original = session(str(source))
        variant = session(data)
        worst = max(verify_batches(original, variant, np.random.default_rng(seed), given)
                    for seed in (1, 2))
        if worst > BATCH_TOLERANCE:
            print(f"{name}: the batch variant differs by {worst:.3g} (> {BATCH_TOLERANCE}): not written")
            failed = True
            continue
        target.write_bytes(data)
        entries = [dict(kind="dynamic-batch", file=target.name, source=name,
                        source_sha256=source_sha, sha256=sha256(target),
                        max_difference=worst, tolerance=BATCH_TOLERANCE, batches=list(BATCHES))]
        print(f"{name}: {target.name} (batches {', '.join(map(str, BATCHES))}: largest difference {worst:.3g})")
        if args.fp16:
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
            rng = np.random.default_rng(3)
            feed = inputs_of(original, 2, rng, given)
            ref = variant.run(None, feed)
            got = half_session.run(None, feed)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
            if diff > FP16_TOLERANCE:
                print(f"{name}: the fp16 variant differs by {diff:.3g} (> {FP16_TOLERANCE}): not written")
                failed = True
            else:
                half_target.write_bytes(half_data)
                entries.append(dict(kind="fp16", file=half_target.name, source=name,
                                    source_sha256=source_sha, sha256=sha256(half_target),
                                    max_difference=diff, tolerance=FP16_TOLERANCE, batches=[2]))
                print(f"{name}: {half_target.name} (largest difference from float32 {diff:.3g})")
        record["variants"] = [v for v in record["variants"] if v["source"] != name] + entries
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
