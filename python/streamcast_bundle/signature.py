"""The tensor contract between streamcast and an exported ONNX model.

* one input, float32: ``[N, T*F]`` (layout ``flat``, time-major: step 0's F features, then step
  1's, ...) or ``[N, T, F]`` (layout ``sequence``);
* one output, float32, ``[N, H]``;
* ``N`` is a dynamic axis: the worker scores micro-batches of up to ``batching.max_batch_size``.

``check_signature`` refuses a model that breaks it, naming the tensor and what to change in the
export; ``rename_io`` gives the graph's input and output the names the bundle declares.
"""

from __future__ import annotations

from typing import List, Optional

from .errors import BundleError

DYNAMIC_HINT = (
    "skl2onnx: FloatTensorType([None, ...]); torch.onnx.export: "
    "dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}}"
)


def graph_inputs(graph) -> list:
    """The graph's real inputs (older exporters also list initializers as inputs)."""
    init = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in init]


def _rename_everywhere(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            # Subgraphs (Loop, Scan, If) may read outer-scope names.
            if attr.HasField("g"):
                _rename_everywhere(attr.g, old, new)
            for g in attr.graphs:
                _rename_everywhere(g, old, new)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new


def _names(graph) -> set:
    names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def rename_io(model, input_name: str = "input", output_name: str = "output") -> None:
    """Renames the single graph input and output in place."""
    g = model.graph
    inputs = graph_inputs(g)
    if len(inputs) != 1:
        raise BundleError(f"the exported model has {len(inputs)} inputs ({[i.name for i in inputs]}); streamcast feeds exactly one")
    if len(g.output) != 1:
        raise BundleError(
            f"the exported model has {len(g.output)} outputs ({[o.name for o in g.output]}); streamcast reads exactly one [N, horizon] tensor"
        )
    for vi, new in ((inputs[0], input_name), (g.output[0], output_name)):
        old = vi.name
        if old == new:
            continue
        if new in _names(g):
            raise BundleError(f"cannot rename `{old}` to `{new}`: the graph already has a tensor named `{new}`")
        _rename_everywhere(g, old, new)


def _dims(vi) -> Optional[List[Optional[int]]]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _fmt(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _type_name(elem_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def check_signature(model, *, layout: str, window: int, n_features: int, horizon: int) -> None:
    """Raises ``BundleError`` unless the model honours the tensor contract for this bundle."""
    from onnx import TensorProto

    g = model.graph
    inputs = graph_inputs(g)
    if len(inputs) != 1 or len(g.output) != 1:
        raise BundleError(f"the model has {len(inputs)} inputs and {len(g.output)} outputs; streamcast needs one of each")
    inp, out = inputs[0], g.output[0]
    if not inp.type.HasField("tensor_type"):
        raise BundleError(f"model input `{inp.name}` is not a tensor")
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise BundleError(
            f"model input `{inp.name}` is {_type_name(inp.type.tensor_type.elem_type)}; streamcast feeds float32 "
            "(export in float32: skl2onnx FloatTensorType, torch module.float() with a float32 example input)"
        )
    want = [None, window * n_features] if layout == "flat" else [None, window, n_features]
    shape = "[N, T*F]" if layout == "flat" else "[N, T, F]"
    dims = _dims(inp)
    if dims is not None:
        if len(dims) != len(want):
            raise BundleError(
                f"model input `{inp.name}` has shape {_fmt(dims)}; a `{layout}` bundle needs {shape} = {_fmt(want)} "
                f"(window {window}, {n_features} features)"
            )
        if dims[0] is not None:
            raise BundleError(
                f"model input `{inp.name}` has a fixed batch axis ({dims[0]}): streamcast scores batches of up to "
                f"max_batch_size windows, so the first axis must be dynamic ({DYNAMIC_HINT})"
            )
        for i, (d, w) in enumerate(zip(dims[1:], want[1:]), start=1):
            if d is not None and d != w:
                raise BundleError(
                    f"model input `{inp.name}` has shape {_fmt(dims)}; a `{layout}` bundle needs {shape} = {_fmt(want)} "
                    f"(window {window}, {n_features} features): axis {i} is {d}, not {w}"
                )
    if not out.type.HasField("tensor_type"):
        raise BundleError(f"model output `{out.name}` is not a tensor")
    if out.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise BundleError(
            f"model output `{out.name}` is {_type_name(out.type.tensor_type.elem_type)}; streamcast reads float32"
        )
    dims = _dims(out)
    if dims is None:
        try:
            import onnx

            inferred = onnx.shape_inference.infer_shapes(model)
            dims = _dims(inferred.graph.output[0])
        except Exception:  # noqa: BLE001 - shape inference is a best effort; validate runs the model
            dims = None
    if dims is not None:
        if len(dims) != 2:
            raise BundleError(f"model output `{out.name}` has shape {_fmt(dims)}; streamcast needs [N, horizon] = [?, {horizon}]")
        if dims[0] is not None:
            raise BundleError(
                f"model output `{out.name}` has a fixed batch axis ({dims[0]}); the first axis must be dynamic ({DYNAMIC_HINT})"
            )
        if dims[1] is not None and dims[1] != horizon:
            raise BundleError(f"model output `{out.name}` has shape {_fmt(dims)}; horizon {horizon} needs [?, {horizon}]")
