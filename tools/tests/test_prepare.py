"""`facerelay models prepare` (tools/prepare_models.py) on the benchmark models: the graph, tensor
shapes and cost of the public inswapper_128.onnx and det_10g.onnx with random weights
(tools/gen_bench_models.py). The swapper gets a dynamic-batch variant whose every item at batch
1, 2 and 4 equals the original's within 1e-4 and an fp16 variant within 2e-2; the detector, whose
outputs fold the batch into the anchors ([anchors, C]), gets a dynamic-batch variant with
[N, anchors, C] outputs under the same check. A rewrite that would mix the items of a batch is
refused, not written. About a minute and 3 GB."""

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

import prepare_models

TOOLS = prepare_models.pathlib.Path(prepare_models.__file__).resolve().parent


def run(monkeypatch, tmp_path, *models, fp16=False):
    argv = ["prepare_models.py", "--dir", str(tmp_path)]
    for m in models:
        argv += ["--model", m]
    monkeypatch.setattr(sys, "argv", argv + (["--fp16"] if fp16 else []))
    return prepare_models.main()


def dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_the_benchmark_swapper_and_detector_get_checked_variants(tmp_path, monkeypatch):
    subprocess.run([sys.executable, str(TOOLS / "gen_bench_models.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert run(monkeypatch, tmp_path, "inswapper_128.onnx", "det_10g.onnx", fp16=True) == 0
    record = json.loads((tmp_path / "prepared.json").read_text())
    by = {(v["source"], v["kind"]): v for v in record["variants"]}
    assert set(by) == {("inswapper_128.onnx", "dynamic-batch"), ("inswapper_128.onnx", "fp16"),
                       ("det_10g.onnx", "dynamic-batch")}
    batch, half = by["inswapper_128.onnx", "dynamic-batch"], by["inswapper_128.onnx", "fp16"]
    det = by["det_10g.onnx", "dynamic-batch"]
    for v in (batch, det):
        assert v["batches"] == [1, 2, 4] and v["max_difference"] <= 1e-4
    assert half["max_difference"] <= 2e-2
    for v in (batch, half, det):
        assert v["source_sha256"] == prepare_models.sha256(tmp_path / v["source"])
        assert v["sha256"] == prepare_models.sha256(tmp_path / v["file"])
        assert v["inputs"] == ["random"]
    # The variants' inputs and outputs take any batch; their weights are the originals'.
    model = onnx.load(tmp_path / batch["file"], load_external_data=False)
    assert all(dims(v)[0] == "N" for v in list(model.graph.input) + list(model.graph.output))
    model = onnx.load(tmp_path / det["file"])
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert [dims(v)[0] for v in model.graph.output] == ["N"] * 9
    assert [dims(v)[2] for v in model.graph.output] == [1, 1, 1, 4, 4, 4, 10, 10, 10]
    assert not (tmp_path / "det_10g.batch.fp16.onnx").exists()
    print(f"swapper batch variant: {batch['max_difference']}, fp16: {half['max_difference']}, "
          f"detector batch variant: {det['max_difference']}")


def test_a_rewrite_that_mixes_the_items_of_a_batch_is_refused(tmp_path, monkeypatch):
    # Two anchors made after the reshape to [cells, 1] (Concat on its second axis): with the
    # batch kept apart, the Concat joins the anchors of different cells instead.
    n = helper.make_node
    graph = helper.make_graph(
        [n("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
         n("Reshape", ["t", "shape"], ["cells"]),
         n("Concat", ["cells", "cells"], ["two"], axis=1),
         n("Reshape", ["two", "shape"], ["scores"])],
        "mixer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["A", 1])],
        [onnx.numpy_helper.from_array(np.array([-1, 1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "mixer.onnx")
    assert run(monkeypatch, tmp_path, "mixer.onnx") == 1
    assert not (tmp_path / "mixer.batch.onnx").exists()
    assert json.loads((tmp_path / "prepared.json").read_text())["variants"] == []
