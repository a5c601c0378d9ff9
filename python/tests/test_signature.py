"""The tensor contract: float32, [N, T*F] or [N, T, F] in, [N, H] out, a dynamic batch axis."""

import unittest

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamcast_bundle import BundleError
from streamcast_bundle.signature import check_signature, rename_io


def linear(in_shape, out_shape, *, in_type=TensorProto.FLOAT, out_type=None, width=6, horizon=2, names=("x", "y")):
    """x @ W as an ONNX model with the given declared shapes (None = dynamic)."""
    out_type = in_type if out_type is None else out_type
    dtype = helper.tensor_dtype_to_np_dtype(in_type)
    w = numpy_helper.from_array(np.ones((width, horizon), dtype=dtype), "W")
    nodes = [helper.make_node("MatMul", [names[0], "W"], [names[1]])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(names[0], in_type, in_shape)],
        [helper.make_tensor_value_info(names[1], out_type, out_shape)],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


FLAT = {"layout": "flat", "window": 3, "n_features": 2, "horizon": 2}


class SignatureTest(unittest.TestCase):
    def test_a_dynamic_float32_model_passes(self):
        check_signature(linear(["N", 6], ["N", 2]), **FLAT)
        check_signature(linear([None, 6], [None, 2]), **FLAT)

    def test_a_fixed_batch_axis_is_refused_with_the_fix(self):
        with self.assertRaises(BundleError) as e:
            check_signature(linear([1, 6], [1, 2]), **FLAT)
        msg = str(e.exception)
        self.assertIn("fixed batch axis (1)", msg)
        self.assertIn("dynamic_axes", msg)
        self.assertIn("FloatTensorType([None", msg)
        with self.assertRaisesRegex(BundleError, r"output `y` has a fixed batch axis \(8\)"):
            check_signature(linear(["N", 6], [8, 2]), **FLAT)

    def test_float64_is_refused(self):
        with self.assertRaisesRegex(BundleError, r"input `x` is DOUBLE; streamcast feeds float32"):
            check_signature(linear(["N", 6], ["N", 2], in_type=TensorProto.DOUBLE), **FLAT)
        m = linear(["N", 6], ["N", 2])
        m.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
        with self.assertRaisesRegex(BundleError, r"output `y` is DOUBLE; streamcast reads float32"):
            check_signature(m, **FLAT)

    def test_shapes_must_match_the_bundle(self):
        with self.assertRaisesRegex(BundleError, r"axis 1 is 5, not 6"):
            check_signature(linear(["N", 5], ["N", 2], width=5), **FLAT)
        with self.assertRaisesRegex(BundleError, r"a `sequence` bundle needs \[N, T, F\] = \[\?, 3, 2\]"):
            check_signature(linear(["N", 6], ["N", 2]), **{**FLAT, "layout": "sequence"})
        with self.assertRaisesRegex(BundleError, r"horizon 4 needs \[\?, 4\]"):
            check_signature(linear(["N", 6], ["N", 2]), **{**FLAT, "horizon": 4})
        with self.assertRaisesRegex(BundleError, r"needs \[N, horizon\]"):
            check_signature(linear(["N", 6], ["N"]), **FLAT)

    def test_rename_io_renames_inputs_outputs_and_their_uses(self):
        m = linear(["N", 6], ["N", 2])
        rename_io(m)
        self.assertEqual(m.graph.input[0].name, "input")
        self.assertEqual(m.graph.output[0].name, "output")
        self.assertEqual(list(m.graph.node[0].input), ["input", "W"])
        self.assertEqual(list(m.graph.node[0].output), ["output"])
        onnx.checker.check_model(m)

    def test_two_inputs_are_refused(self):
        m = linear(["N", 6], ["N", 2])
        m.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 6]))
        with self.assertRaisesRegex(BundleError, r"2 inputs"):
            rename_io(m)


if __name__ == "__main__":
    unittest.main()
