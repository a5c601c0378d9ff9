"""What every bundle needs, whatever trained its model: arguments, reference sample, golden
cases, bundle.json, publication into the model root, and `streamcast models validate`."""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import functools
import math
import os
import platform
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from . import scalers as _scalers
from .errors import BundleError
from .signature import check_signature

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# How close the exported model must come to the training framework, as streamcast's golden check.
TOLERANCE = 1e-4
# Windows compared between the export and the framework when onnxruntime is installed.
EXPORT_CHECK_MAX = 512


# ---------------------------------------------------------------------------
# numbers


def r9(x) -> float:
    """``x`` rounded to 9 significant digits (and -0.0 turned into 0.0)."""
    v = float(f"{float(x):.9g}")
    if not math.isfinite(v):
        raise BundleError(f"non-finite value {x!r}")
    return v + 0.0


def r9_array(a: np.ndarray) -> np.ndarray:
    return np.vectorize(r9, otypes=[np.float64])(np.asarray(a, dtype=np.float64)) if np.size(a) else np.asarray(a, dtype=np.float64)


def evenly(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices spread evenly over ``range(n)``, first and last included."""
    if k <= 0:
        return np.arange(0)
    if n <= k:
        return np.arange(n)
    if k == 1:
        return np.array([n - 1])
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def is_close(got, want, tol: float = TOLERANCE) -> np.ndarray:
    """streamcast's golden rule: ``|got - want| <= tol * max(1, |want|)``."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return np.abs(got - want) <= tol * np.maximum(1.0, np.abs(want))


# ---------------------------------------------------------------------------
# arguments


def _check_name(value, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise BundleError(f"{what} {value!r} must match {NAME_RE.pattern} (it is a directory name)")
    return value


def _check_int(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise BundleError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_features(features) -> list:
    if isinstance(features, str) or not isinstance(features, Sequence) or len(features) == 0:
        raise BundleError(f"features must be a non-empty list of names, got {features!r}")
    out = []
    for f in features:
        if not isinstance(f, str) or not f:
            raise BundleError(f"features: {f!r} is not a non-empty string")
        if f in out:
            raise BundleError(f"features: `{f}` is listed twice")
        out.append(f)
    return out


def check_windows(x, window: int, n_features: int, what: str = "X_reference") -> np.ndarray:
    """``x`` as float64 ``[n, window, F]``, or a ``BundleError`` naming what is wrong."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{what} cannot be read as an array: {e}") from e
    if arr.dtype.kind not in "biuf":
        raise BundleError(f"{what} has dtype {arr.dtype}; expected real numbers (raw, unnormalized feature values)")
    if arr.ndim != 3:
        raise BundleError(
            f"{what} must be 3-D raw windows [n, window, features] = [n, {window}, {n_features}]; got shape {list(arr.shape)}"
        )
    if arr.shape[1] != window or arr.shape[2] != n_features:
        raise BundleError(
            f"{what} has shape {list(arr.shape)}; expected [n, window, features] = [n, {window}, {n_features}]"
        )
    if arr.shape[0] == 0:
        raise BundleError(f"{what} holds no windows")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        i = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise BundleError(f"{what}[{i}] holds a non-finite value")
    return arr


def _check_validation(validation) -> Optional[dict]:
    if validation is None:
        return None
    if not isinstance(validation, dict) or set(validation) != {"rmse", "mae"}:
        raise BundleError(f"validation must be a dict with exactly rmse and mae (hold-out metrics in target units), got {validation!r}")
    out = {}
    for k in ("rmse", "mae"):
        v = float(validation[k])
        if not math.isfinite(v) or v < 0:
            raise BundleError(f"validation.{k} must be a finite number >= 0, got {validation[k]!r}")
        out[k] = r9(v)
    return out


def _check_frequency(frequency) -> Optional[str]:
    if frequency is None:
        return None
    if not isinstance(frequency, str) or not re.match(r"^[0-9]", frequency):
        raise BundleError(f"frequency must be a duration string such as \"7d\" or \"1h\", got {frequency!r}")
    return frequency


# ---------------------------------------------------------------------------
# the streamcast binary


def _repo_candidates() -> list:
    here = [Path.cwd(), *Path.cwd().parents]
    pkg = Path(__file__).resolve()
    return here + list(pkg.parents)


def find_streamcast(streamcast=None) -> str:
    """The binary: ``streamcast``, else ``$STREAMCAST_BIN``, else ``target/release/streamcast`` of
    the repository this runs in (looked for from the working directory and from this package up),
    else ``streamcast`` on PATH."""
    if streamcast:
        return str(streamcast)
    env = os.environ.get("STREAMCAST_BIN")
    if env:
        return env
    for d in _repo_candidates():
        exe = d / "target" / "release" / "streamcast"
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    on_path = shutil.which("streamcast")
    if on_path:
        return on_path
    raise BundleError(
        "cannot find the streamcast binary: pass streamcast=PATH, set STREAMCAST_BIN, build it "
        "(cargo build --release), or skip the check with check=False"
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate(bundle_dir, *, streamcast=None, max_batch_size: int = 256) -> None:
    """Runs ``streamcast models validate <bundle_dir> --batch-size N``: the manifest, the model's
    signature (names, float32, shapes, a dynamic batch axis, a batch of N windows) and every golden
    case within 1e-4. Raises ``BundleError`` with streamcast's own message on failure."""
    d = Path(bundle_dir)
    manifest = d / "bundle.json"
    if not manifest.is_file():
        raise BundleError(f"{d} holds no bundle.json")
    if not (d / "model.onnx").is_file():
        raise BundleError(f"{d} holds no model.onnx")
    max_batch_size = _check_int(max_batch_size, "max_batch_size", 1)
    try:
        declared = json.loads(manifest.read_text(encoding="utf-8")).get("model_sha256")
    except (OSError, ValueError) as e:
        raise BundleError(f"{manifest}: {e}") from e
    if declared is not None and declared.lower() != sha256_file(d / "model.onnx"):
        raise BundleError(f"{d}: model.onnx does not match bundle.json's model_sha256 {declared}")
    exe = find_streamcast(streamcast)
    cmd = [exe, "models", "validate", str(d), "--batch-size", str(max_batch_size)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except OSError as e:
        raise BundleError(f"cannot run {exe}: {e}") from e
    if r.returncode != 0:
        detail = (r.stderr.strip() or r.stdout.strip() or "(no output)")
        raise BundleError(f"`{' '.join(cmd)}` failed (exit {r.returncode}):\n{detail}")


# ---------------------------------------------------------------------------
# versions and publication


def compare_versions(a: str, b: str) -> int:
    """streamcast's version order (`latest`): runs of digits compare as numbers, everything else
    byte by byte; so 2 < 10 < 10a and 1.9 < 1.10. Returns -1, 0 or 1."""
    x, y = a.encode(), b.encode()
    i = j = 0
    while True:
        if i == len(x) or j == len(y):
            return (i < len(x)) - (j < len(y))
        if chr(x[i]).isdigit() and chr(y[j]).isdigit():
            ei, ej = i, j
            while ei < len(x) and chr(x[ei]).isdigit():
                ei += 1
            while ej < len(y) and chr(y[ej]).isdigit():
                ej += 1
            na, nb = x[i:ei].lstrip(b"0"), y[j:ej].lstrip(b"0")
            if (len(na), na) != (len(nb), nb):
                return -1 if (len(na), na) < (len(nb), nb) else 1
            i, j = ei, ej
        else:
            if x[i] != y[j]:
                return -1 if x[i] < y[j] else 1
            i, j = i + 1, j + 1


def version_key(v: str):
    """A sort key for `compare_versions`."""
    return functools.cmp_to_key(compare_versions)(v)


def versions(root, name: str) -> list:
    """The version directories of ``root/name`` in streamcast's order (hidden ones skipped)."""
    d = Path(root) / name
    if not d.is_dir():
        return []
    return sorted((p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=version_key)


def next_version(root, name: str) -> str:
    """``"1"`` when ``root/name`` holds no version, else the highest version + 1 — in streamcast's
    own order, so that the new version is what `latest` picks. When the highest version is not a
    plain number (``2.0``, ``v3``) there is no safe next number: pass ``version=`` instead."""
    _check_name(name, "name")
    found = versions(root, name)
    if not found:
        return "1"
    if not found[-1].isdigit():
        raise BundleError(
            f"cannot number the version after `{found[-1]}` (the highest under {Path(root) / name}): "
            "pass version= with a name that sorts above it"
        )
    return str(int(found[-1]) + 1)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode("utf-8")


def publish(staging: Path, root: Path, name: str, version: Optional[str], manifest: dict) -> Path:
    """Moves the complete bundle in ``staging`` (a directory beside the versions, holding
    model.onnx) to ``root/name/version`` in one atomic rename, after writing its bundle.json: a
    watching worker sees either no version or a complete one, never model.onnx without
    bundle.json nor a half-written file. With ``version=None`` the next numeric version is taken
    (and the one after it if another builder took it meanwhile)."""
    parent = root / name
    for _ in range(100):
        v = version if version is not None else next_version(root, name)
        target = parent / v
        if target.exists():
            if version is not None:
                raise BundleError(f"{target} already exists: versions are immutable, pick another version")
            continue
        tmp = staging / ".bundle.json.tmp"
        _write_file(tmp, _manifest_bytes({**manifest, "version": v}))
        os.replace(tmp, staging / "bundle.json")
        _fsync_dir(staging)
        try:
            os.rename(staging, target)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                if version is not None:
                    raise BundleError(f"{target} already exists: versions are immutable, pick another version") from None
                continue
            raise
        _fsync_dir(parent)
        return target
    raise BundleError(f"could not claim a new version under {parent}")


# ---------------------------------------------------------------------------
# the builder


def _float_list(a) -> list:
    return [r9(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _onnx_predict(model_bytes: bytes, x: np.ndarray) -> Optional[np.ndarray]:
    """The export's own output on ``x``, when onnxruntime is installed (None otherwise)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    (y,) = sess.run(["output"], {"input": x})
    return np.asarray(y, dtype=np.float64)


def build(
    *,
    framework: str,
    export: Callable[[np.ndarray], "object"],
    predict: Callable[[np.ndarray], np.ndarray],
    layout: str,
    scaler,
    X_reference,
    root,
    name: str,
    features,
    window: int,
    horizon: int,
    target,
    target_scaler,
    version,
    golden: int,
    reference_size: int,
    frequency,
    validation,
    metadata,
    streamcast,
    check: bool,
    max_batch_size: int,
    built_with: dict,
    check_model: Optional[Callable[[int], None]] = None,
) -> Path:
    """The common builder.

    ``predict(z)`` runs the training framework on normalized windows ``z`` (float32
    ``[n, T, F]``) and returns normalized outputs ``[n, H]``; ``export(example)`` returns the
    ``onnx.ModelProto``, with the input and output named ``input`` and ``output``.
    """
    import onnx

    name = _check_name(name, "name")
    if version is not None:
        version = _check_name(str(version), "version")
        if version == "latest":
            raise BundleError("version must not be \"latest\" (it names the highest version)")
    features = check_features(features)
    window = _check_int(window, "window", 1)
    horizon = _check_int(horizon, "horizon", 1)
    golden = _check_int(golden, "golden", 1)
    reference_size = _check_int(reference_size, "reference_size", 1)
    max_batch_size = _check_int(max_batch_size, "max_batch_size", 1)
    if layout not in ("flat", "sequence"):
        raise BundleError(f"layout must be \"flat\" or \"sequence\", got {layout!r}")
    target = features[0] if target is None else target
    if not isinstance(target, str) or not target:
        raise BundleError(f"target must be a non-empty name, got {target!r}")
    frequency = _check_frequency(frequency)
    validation = _check_validation(validation)
    if metadata is not None and not isinstance(metadata, dict):
        raise BundleError(f"metadata must be a dict (free-form, JSON-serializable), got {type(metadata).__name__}")
    n_features = len(features)
    root = Path(root)
    if version is not None and (root / name / version).exists():
        raise BundleError(f"{root / name / version} already exists: versions are immutable, pick another version")
    if check_model is not None:
        check_model(window * n_features)

    x = check_windows(X_reference, window, n_features)
    in_scaler = _scalers.convert(scaler, (n_features,), "scaler", identity_columns=n_features)
    out_scaler = _scalers.convert(target_scaler, (1, horizon), "target_scaler", identity_columns=1)
    _scalers.check_exact(in_scaler, x[evenly(len(x), reference_size)].reshape(-1, n_features), "scaler")
    _scalers.check_exact(out_scaler, np.zeros((1, out_scaler.columns)), "target_scaler")

    def framework_predict(raw: np.ndarray) -> np.ndarray:
        """De-normalized [n, H] predictions by the framework itself, from raw windows."""
        z = in_scaler.transform(raw).astype(np.float32)  # the worker feeds float32
        outs = []
        for start in range(0, len(z), 1024):
            y = np.asarray(predict(z[start : start + 1024]), dtype=np.float64)
            if y.ndim == 1 and horizon == 1:
                y = y[:, None]
            if y.shape != (len(z[start : start + 1024]), horizon):
                raise BundleError(
                    f"the {framework} model returns shape {list(y.shape)} for {len(z[start:start + 1024])} windows; "
                    f"expected [N, horizon] = [{len(z[start:start + 1024])}, {horizon}]"
                )
            outs.append(y)
        return out_scaler.inverse(np.concatenate(outs))

    # Golden cases: windows rounded as written to JSON, predictions recomputed from exactly them.
    g_idx = evenly(len(x), golden)
    g_windows = r9_array(x[g_idx])
    g_pred = framework_predict(g_windows)
    if not np.isfinite(g_pred).all():
        raise BundleError(f"the {framework} model predicts a non-finite value on a golden window")
    golden_cases = [
        {"window": [[float(v) for v in row] for row in w], "prediction": _float_list(p)} for w, p in zip(g_windows, g_pred)
    ]

    # The reference sample: each window's newest row, and step-1 predictions.
    ref_idx = evenly(len(x), reference_size)
    ref_raw = x[ref_idx]
    ref_pred = framework_predict(ref_raw)
    if not np.isfinite(ref_pred).all():
        raise BundleError(f"the {framework} model predicts a non-finite value on a reference window")
    reference = {
        "features": {f: _float_list(ref_raw[:, -1, j]) for j, f in enumerate(features)},
        "predictions": _float_list(ref_pred[:, 0]),
    }

    # Export, and hold it to the framework's numbers before anything is written.
    example = in_scaler.transform(x[evenly(len(x), 2)]).astype(np.float32)
    model = export(example)
    check_signature(model, layout=layout, window=window, n_features=n_features, horizon=horizon)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - onnx raises several types
        raise BundleError(f"the exported ONNX model is invalid: {e}") from e
    model_bytes = model.SerializeToString()
    cmp_idx = np.unique(np.concatenate([ref_idx[evenly(len(ref_idx), EXPORT_CHECK_MAX)], g_idx]))
    z = in_scaler.transform(x[cmp_idx]).astype(np.float32)
    onnx_out = _onnx_predict(model_bytes, z.reshape(len(z), -1) if layout == "flat" else z)
    export_error = None
    if onnx_out is not None:
        if onnx_out.shape != (len(z), horizon):
            raise BundleError(f"the exported model returns shape {list(onnx_out.shape)} for {len(z)} windows; expected [{len(z)}, {horizon}]")
        want = framework_predict(x[cmp_idx])
        got = out_scaler.inverse(onnx_out)
        bad = ~is_close(got, want)
        export_error = float(np.max(np.abs(got - want)))
        if bad.any():
            i, h = (int(v) for v in np.argwhere(bad)[0])
            raise BundleError(
                f"the exported ONNX model does not reproduce {framework}: window {int(cmp_idx[i])} of X_reference, "
                f"step {h + 1}: ONNX gives {got[i, h]!r}, {framework} {want[i, h]!r} "
                f"(tolerance {TOLERANCE} x max(1, |expected|)); {int(bad.sum())} of {bad.size} values differ"
            )

    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    auto_meta = {
        "builder": {"package": "streamcast_bundle", "version": _package_version()},
        "framework": built_with,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "reference_windows": int(len(x)),
    }
    if export_error is not None:
        auto_meta["export_max_abs_error"] = export_error
    manifest = {
        "name": name,
        "version": version or "",
        "created_at": created,
        "features": features,
        "window": window,
        "horizon": horizon,
    }
    if frequency is not None:
        manifest["frequency"] = frequency
    manifest.update(
        {
            "input": {"name": "input", "layout": layout},
            "output": {"name": "output"},
            "scaler": in_scaler.spec,
            "target": {"name": target, "scaler": out_scaler.spec},
            "reference": reference,
        }
    )
    if validation is not None:
        manifest["validation"] = validation
    manifest["golden"] = golden_cases
    manifest["model_sha256"] = hashlib.sha256(model_bytes).hexdigest()
    manifest["metadata"] = {"built_with": auto_meta, **(metadata or {})}
    try:
        json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BundleError(f"metadata is not JSON-serializable: {e}") from e

    # Build and validate in a hidden directory beside the versions (workers skip names that start
    # with "."), model.onnx first and bundle.json last, then rename it into place: a bundle that
    # fails validation never reaches the model root, and a watching worker never sees half of one.
    (root / name).mkdir(parents=True, exist_ok=True)
    staging = root / name / f".build-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(staging)
    try:
        _write_file(staging / "model.onnx", model_bytes)
        _write_file(staging / "bundle.json", _manifest_bytes({**manifest, "version": version or next_version(root, name)}))
        if check:
            validate(staging, streamcast=streamcast, max_batch_size=max_batch_size)
        return publish(staging, root, name, version, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _package_version() -> str:
    from . import __version__

    return __version__
