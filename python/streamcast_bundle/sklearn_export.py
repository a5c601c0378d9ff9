"""``from_sklearn``: a fitted scikit-learn regressor (or Pipeline) as a streamcast bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import core
from .errors import BundleError


def _final_estimator(model):
    steps = getattr(model, "steps", None)
    if steps:
        return _final_estimator(steps[-1][1])
    return model


def _fix_output_width(onx, horizon: int) -> None:
    """skl2onnx (1.20) ends an MLPRegressor with ``Reshape(-1, 1)`` even when it has several
    outputs, which turns ``[N, H]`` into ``[N*H, 1]``: give the Reshape that produces the graph
    output the real width."""
    from onnx import numpy_helper

    g = onx.graph
    producer = {o: n for n in g.node for o in n.output}
    name = g.output[0].name
    node = producer.get(name)
    while node is not None and node.op_type in ("Identity", "Cast"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Reshape":
        return
    inits = {i.name: i for i in g.initializer}
    shape_name = node.input[1]
    if shape_name not in inits:
        return
    shape = numpy_helper.to_array(inits[shape_name])
    if list(shape) == [-1, 1] and horizon != 1:
        new = shape_name + "_streamcast_horizon"
        g.initializer.append(numpy_helper.from_array(np.array([-1, horizon], dtype=np.int64), new))
        node.input[1] = new
        if not any(shape_name in n.input for n in g.node):
            g.initializer.remove(inits[shape_name])


def export_sklearn(model, n_inputs: int, horizon: int, opset: int = 17):
    """The ONNX export of ``model``: ``input`` float32 ``[N, n_inputs]`` -> ``output`` float32 ``[N, horizon]``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from .signature import rename_io

    try:
        onx = convert_sklearn(
            model,
            name="streamcast_model",
            initial_types=[("input", FloatTensorType([None, n_inputs]))],
            final_types=[("output", FloatTensorType([None, horizon]))],
            target_opset=opset,
        )
    except Exception as e:  # noqa: BLE001 - skl2onnx raises many kinds
        raise BundleError(f"skl2onnx cannot convert {type(model).__name__}: {e}") from e
    rename_io(onx)
    _fix_output_width(onx, horizon)
    # Recompute the declared output shape from the graph after the fix.
    out = onx.graph.output[0].type.tensor_type
    if out.HasField("shape") and len(out.shape.dim) == 2:
        out.shape.dim[0].Clear()
        out.shape.dim[0].dim_param = "N"
        out.shape.dim[1].Clear()
        out.shape.dim[1].dim_value = horizon
    return onx


def from_sklearn(
    model,
    scaler,
    X_reference,
    *,
    root,
    name,
    features,
    window,
    horizon=1,
    target=None,
    target_scaler=None,
    version=None,
    golden=5,
    reference_size=500,
    frequency=None,
    validation=None,
    metadata=None,
    streamcast=None,
    check=True,
    max_batch_size=256,
) -> Path:
    """Builds ``<root>/<name>/<version>/`` from a fitted scikit-learn regressor or Pipeline.

    ``model`` takes normalized, flattened, time-major windows ``[N, window*F]`` and returns
    normalized targets ``[N]`` or ``[N, horizon]``. ``scaler`` normalizes each of the F features
    (a fitted StandardScaler or MinMaxScaler, or None when the model normalizes itself);
    ``target_scaler`` de-normalizes the output (1 or ``horizon`` columns, None = identity).
    ``X_reference`` holds raw windows ``[n, window, F]`` from the training data: the drift
    reference, the reference predictions and the golden cases are drawn from it. Returns the
    bundle directory; with ``check=True`` the bundle has passed ``streamcast models validate``
    before it appears under ``root``.
    """
    import sklearn

    if not hasattr(model, "predict"):
        raise BundleError(f"model must be a fitted scikit-learn regressor or Pipeline, got {type(model).__name__}")
    final = _final_estimator(model)
    n_features = len(features) if not isinstance(features, str) else 0

    def check_model(n_inputs: int) -> None:
        n_in = getattr(model, "n_features_in_", None)
        if n_in is None and hasattr(model, "steps"):
            n_in = getattr(model.steps[0][1], "n_features_in_", None)
        if n_in is None:
            raise BundleError(f"{type(model).__name__} is not fitted (no n_features_in_)")
        if int(n_in) != n_inputs:
            raise BundleError(
                f"the model was fitted on {n_in} inputs; window {window} x {n_features} features flattened "
                f"time-major is {n_inputs}"
            )

    def predict(z: np.ndarray) -> np.ndarray:
        return model.predict(z.reshape(len(z), -1))

    def export(_example: np.ndarray):
        return export_sklearn(model, int(window) * n_features, int(horizon))

    import skl2onnx

    built_with = {
        "name": "scikit-learn",
        "version": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "estimator": type(final).__name__,
        "model": repr(model)[:2000],
    }
    return core.build(
        framework="scikit-learn",
        export=export,
        predict=predict,
        layout="flat",
        scaler=scaler,
        X_reference=X_reference,
        root=root,
        name=name,
        features=features,
        window=window,
        horizon=horizon,
        target=target,
        target_scaler=target_scaler,
        version=version,
        golden=golden,
        reference_size=reference_size,
        frequency=frequency,
        validation=validation,
        metadata=metadata,
        streamcast=streamcast,
        check=check,
        max_batch_size=max_batch_size,
        built_with=built_with,
        check_model=check_model,
    )
