"""Builds tests/fixtures/models/co2-flaky/1: a bundle whose inference fails on demand.

The model reads the newest step's normalized co2 `x` and returns `x + 1 + 0 * sqrt(K - x)`:
a last-value forecast shifted up by one target standard deviation (so its predictions are easy
to tell apart from the naive fallback's), that turns NaN when the newest co2 is above
FAIL_ABOVE ppm. NaN output is an inference failure for the worker, so a test fails whole batches
by sending an event with co2 = 1000, the way a model with a numerical blow-up fails in practice.

Run with the bundle tooling (`pip install -r scripts/requirements-bundles.txt`):
    python scripts/make_fault_fixture.py
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "co2-mlp" / "1" / "bundle.json"
OUT = ROOT / "tests" / "fixtures" / "models" / "co2-flaky" / "1"
FAIL_ABOVE = 900.0


def main() -> None:
    src = json.loads(SOURCE.read_text())
    window, features = src["window"], len(src["features"])
    mean, std = src["scaler"]["mean"][0], src["scaler"]["std"][0]
    k = (FAIL_ABOVE - mean) / std
    last = (window - 1) * features  # newest step's co2 in the flat, time-major input

    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["x"]),
        helper.make_node("Sub", ["k", "x"], ["room"]),
        helper.make_node("Sqrt", ["room"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["poison"]),
        helper.make_node("Add", ["x", "one"], ["shifted"]),
        helper.make_node("Add", ["shifted", "poison"], ["output"]),
    ]
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [last]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [last + 1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("k", TensorProto.FLOAT, [], [k]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "co2_flaky",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", window * features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "model.onnx").write_bytes(model.SerializeToString())

    # Golden cases from the shipped bundle's windows, scored by onnxruntime itself.
    sess = ort.InferenceSession(str(OUT / "model.onnx"), providers=["CPUExecutionProvider"])
    sm, ss = np.array(src["scaler"]["mean"]), np.array(src["scaler"]["std"])
    golden = []
    for case in src["golden"][:3]:
        raw = np.array(case["window"], dtype=np.float64)
        x = ((raw - sm) / ss).astype(np.float32).reshape(1, -1)
        y = sess.run(None, {"input": x})[0][0, 0]
        golden.append({"window": case["window"], "prediction": [float(y) * std + mean]})
    bundle = dict(src)
    bundle.update(
        {
            "name": "co2-flaky",
            "version": "1",
            "golden": golden,
            "validation": src["validation"],
        }
    )
    (OUT / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    print(f"wrote {OUT} (fails when the newest co2 > {FAIL_ABOVE} ppm, k = {k:.4f})")


if __name__ == "__main__":
    main()
