"""Make streamcast model bundles from trained scikit-learn and PyTorch models.

    from streamcast_bundle import from_sklearn, from_torch, validate, next_version

A bundle is ``<root>/<name>/<version>/model.onnx`` plus ``bundle.json`` (the scaler, the
reference sample, golden cases, ``model_sha256``). See python/README.md for the tensor contract.
Only numpy and onnx are needed to import this package; scikit-learn/skl2onnx and torch are
imported by the functions that use them.
"""

__version__ = "0.1.0"

from .core import next_version, validate
from .errors import BundleError
from .scalers import spec_of as scaler_spec
from .sklearn_export import from_sklearn
from .torch_export import from_torch

__all__ = ["BundleError", "from_sklearn", "from_torch", "next_version", "scaler_spec", "validate", "__version__"]
