#!/bin/sh
# Installs rlserve into the image's virtualenv: the README's set-up (Makefile, $(VENV)/.installed)
# step for step -- pip upgraded, torch first and pinned, then the project -- plus the CUDA
# variant's swap of onnxruntime for onnxruntime-gpu. tests/test_dockerfile.py runs this script
# with a stand-in python and compares its pip commands with `make -n`.
#
#   VARIANT               cpu or cuda
#   TORCH_SPEC            torch requirement (the Makefile's TORCH_SPEC)
#   TORCH_INDEX_URL       where torch comes from; empty: the variant's default (cpu: PyTorch's
#                         CPU-only wheel index; cuda: the ordinary index, whose Linux x86_64
#                         torch wheels are CUDA builds)
#   ONNXRUNTIME_GPU_SPEC  onnxruntime-gpu requirement (cuda only)
#   PYTHON                the virtualenv's python (default: python on PATH)
set -eu

PYTHON="${PYTHON:-python}"
TORCH_CPU_INDEX_URL="https://download.pytorch.org/whl/cpu"

case "${VARIANT:-}" in
    cpu) index="${TORCH_INDEX_URL:-$TORCH_CPU_INDEX_URL}" ;;
    cuda) index="${TORCH_INDEX_URL:-}" ;;
    *)
        echo "error: VARIANT must be cpu or cuda, not '${VARIANT:-}'" >&2
        exit 2
        ;;
esac

pip() {
    "$PYTHON" -m pip "$@"
}

pip install --quiet --upgrade pip
# torch first, pinned: installing the project first would let pip pick whatever torch build
# its index offers.
if [ -n "$index" ]; then
    pip install --quiet "$TORCH_SPEC" --index-url "$index"
else
    pip install --quiet "$TORCH_SPEC"
fi
# The project itself (the Makefile's `pip install -e .`; an image installs it for real).
pip install --quiet .
if [ "$VARIANT" = cuda ]; then
    # onnxruntime and onnxruntime-gpu install the same `onnxruntime` package: one must go.
    pip uninstall --yes onnxruntime
    pip install --quiet "$ONNXRUNTIME_GPU_SPEC"
fi

# Fail the build, not the first request, when the wrong builds went in.
"$PYTHON" - "$VARIANT" <<'PY'
import sys

import onnxruntime
import torch

variant = sys.argv[1]
providers = onnxruntime.get_available_providers()
if variant == "cpu" and torch.version.cuda is not None:
    sys.exit(f"the cpu image got a CUDA torch build ({torch.__version__})")
if variant == "cuda" and (torch.version.cuda is None or "CUDAExecutionProvider" not in providers):
    sys.exit(f"the cuda image lacks CUDA: torch {torch.__version__}, onnxruntime {providers}")
print(f"rlserve image ({variant}): torch {torch.__version__}, onnxruntime providers {providers}")
PY
