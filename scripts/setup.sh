#!/usr/bin/env bash
# Create .venv and install talkrt into it (editable) with the extras in TALKRT_EXTRAS.
#   TALKRT_EXTRAS  default "cpu,rtx,serve,test,triton"; on a datacenter GPU use e.g. "gpu,test"
#   TALKRT_TORCH   default "2.13.0"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${TALKRT_EXTRAS:-cpu,rtx,serve,test,triton}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first, pinned: the project asks for torch>=2.9, and an unpinned resolve on a
# machine without torch pulls the newest CUDA build with several GB of CUDA wheels.
.venv/bin/python -m pip install -q "torch==${TALKRT_TORCH:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[${extras}]"
# triton: Triton's server binary for tests/triton_serving (a CPU build with the Python backend),
# without the wheel's own requirements, which pin NumPy below 2.
if [[ ",${extras}," == *",triton,"* ]]; then
    .venv/bin/python -m pip install -q --no-deps "nvidia-pytriton>=0.5"
fi
