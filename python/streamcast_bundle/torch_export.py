"""``from_torch``: a trained ``torch.nn.Module`` as a streamcast bundle."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np

from . import core
from .errors import BundleError


def export_torch(module, example: np.ndarray, opset: int = 17):
    """The ONNX export of ``module`` (float32, CPU, eval mode) with a dynamic batch axis, through
    the TorchScript-based exporter (``dynamo=False``: no onnxscript needed, works offline)."""
    import onnx
    import torch

    from .signature import rename_io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter warns about batch_first RNNs and its own deprecation.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)),),
                buf,
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
            raise BundleError(f"torch.onnx.export failed: {e}") from e
    onx = onnx.load_from_string(buf.getvalue())
    rename_io(onx)
    return onx


def from_torch(
    module,
    scaler,
    X_reference,
    *,
    layout="sequence",
    opset=17,
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
    """Builds ``<root>/<name>/<version>/`` from a trained ``torch.nn.Module``.

    ``module`` takes float32 ``[N, T, F]`` (``layout="sequence"``) or ``[N, T*F]``
    (``layout="flat"``, time-major) normalized windows and returns ``[N, horizon]`` normalized
    targets. It is copied, moved to the CPU, cast to float32 and put in eval mode for the export
    and the golden predictions; the module you pass is not changed. The other arguments are
    those of :func:`from_sklearn`.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise BundleError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if layout not in ("flat", "sequence"):
        raise BundleError(f"layout must be \"flat\" or \"sequence\", got {layout!r}")
    opset = core._check_int(opset, "opset", 7)
    m = copy.deepcopy(module).to("cpu").float().eval()

    def predict(z: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        if layout == "flat":
            x = x.reshape(len(z), -1)
        with torch.no_grad():
            y = m(x)
        if not isinstance(y, torch.Tensor):
            raise BundleError(f"the module returns {type(y).__name__}; it must return one [N, horizon] tensor")
        if y.dtype != torch.float32:
            raise BundleError(f"the module returns {y.dtype}; it must return float32")
        return y.detach().cpu().numpy()

    def export(example: np.ndarray):
        x = example.reshape(len(example), -1) if layout == "flat" else example
        return export_torch(m, x, opset)

    built_with = {
        "name": "pytorch",
        "version": torch.__version__,
        "exporter": "torch.onnx.export(dynamo=False)",
        "opset": opset,
        "module": repr(module)[:2000],
    }
    return core.build(
        framework="PyTorch",
        export=export,
        predict=predict,
        layout=layout,
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
    )
