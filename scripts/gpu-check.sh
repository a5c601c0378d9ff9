#!/usr/bin/env bash
# Runs `streamcast models gpu-check` (arguments passed on) against the CUDA build of ONNX Runtime
# that `make ort-gpu` installs into $GPU_VENV (default .venv-gpu).
#
# The Rust binary loads ONNX Runtime itself, so nothing preloads the CUDA libraries as the Python
# package can: ORT_DYLIB_PATH names the GPU build's libonnxruntime.so, and LD_LIBRARY_PATH gets
# every lib/ folder of the nvidia-* wheels (CUDA runtime, cuBLAS, cuFFT, cuRAND, NVRTC, cuDNN) so
# that libonnxruntime_providers_cuda.so finds them. Set the same two variables to run the worker
# on CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_VENV=${GPU_VENV:-.venv-gpu}
BIN=${STREAMCAST_BIN:-target/release/streamcast}

site=$(ls -d "$GPU_VENV"/lib/python3*/site-packages 2>/dev/null | head -n 1 || true)
if [[ -z "$site" || ! -d "$site/onnxruntime/capi" ]]; then
  echo "error: no onnxruntime-gpu in $GPU_VENV: run \`make ort-gpu\` first" >&2
  exit 2
fi
lib=$(ls "$site"/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | sort | tail -n 1 || true)
if [[ -z "$lib" || ! -f "$site/onnxruntime/capi/libonnxruntime_providers_cuda.so" ]]; then
  echo "error: $site/onnxruntime holds no CUDA build of ONNX Runtime: run \`make ort-gpu\`" >&2
  exit 2
fi
cuda_dirs=$(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: - || true)
if [[ -z "$cuda_dirs" ]]; then
  echo "warning: no nvidia-* library wheels in $site; relying on the system's CUDA libraries" >&2
fi

export ORT_DYLIB_PATH="$PWD/$lib"
export LD_LIBRARY_PATH="${cuda_dirs:+$cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
else
  echo "warning: nvidia-smi not found: is this a machine with an NVIDIA GPU and driver?" >&2
fi
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH" >&2
exec "$BIN" models gpu-check "$@"
