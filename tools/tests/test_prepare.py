"""`facerelay models prepare` (tools/prepare_models.py) on the benchmark models: the graph, tensor
shapes and cost of the public inswapper_128.onnx and det_10g.onnx with random weights
(tools/gen_bench_models.py). The swapper gets a dynamic-batch variant whose every item at batch
1, 2 and 4 equals the original's within 1e-4 and an fp16 variant within 2e-2; the detector, whose
outputs fold the batch into the anchors, is left as it is. About a minute and 3 GB."""

import json
import subprocess
import sys

import onnx

import prepare_models

TOOLS = prepare_models.pathlib.Path(prepare_models.__file__).resolve().parent


def test_the_benchmark_swapper_gets_checked_variants_and_the_detector_is_left(tmp_path, monkeypatch):
    subprocess.run([sys.executable, str(TOOLS / "gen_bench_models.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    monkeypatch.setattr(sys, "argv", ["prepare_models.py", "--dir", str(tmp_path),
                                      "--model", "inswapper_128.onnx", "--model", "det_10g.onnx",
                                      "--fp16"])
    assert prepare_models.main() == 0
    record = json.loads((tmp_path / "prepared.json").read_text())
    by_kind = {v["kind"]: v for v in record["variants"]}
    assert set(by_kind) == {"dynamic-batch", "fp16"}
    assert all(v["source"] == "inswapper_128.onnx" for v in record["variants"])
    batch, half = by_kind["dynamic-batch"], by_kind["fp16"]
    assert batch["batches"] == [1, 2, 4] and batch["max_difference"] <= 1e-4
    assert half["max_difference"] <= 2e-2
    assert batch["source_sha256"] == prepare_models.sha256(tmp_path / "inswapper_128.onnx")
    for v in (batch, half):
        assert v["sha256"] == prepare_models.sha256(tmp_path / v["file"])
    # The variant's inputs and outputs take any batch; its weights are the original's.
    model = onnx.load(tmp_path / batch["file"], load_external_data=False)
    assert all(v.type.tensor_type.shape.dim[0].dim_param == "N"
               for v in list(model.graph.input) + list(model.graph.output))
    assert not (tmp_path / "det_10g.batch.onnx").exists()
    print(f"batch variant: {batch['max_difference']}, fp16: {half['max_difference']}")
