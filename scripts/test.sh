#!/usr/bin/env bash
# Quick start, tests: set up, then run the whole suite (GPU tests skip without CUDA).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
