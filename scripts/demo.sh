#!/usr/bin/env bash
# Quick start, main job: set up, then run the whole chain on built-in random-weight
# models, a synthetic face and synthetic speech (CUDA if present, else the CPU):
# out/out.mp4 and the profile report out/profile.{json,md,png}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TALKRT_EXTRAS="${TALKRT_EXTRAS:-cpu,rtx}" bash scripts/setup.sh
exec .venv/bin/talkrt demo --out-dir "${OUT_DIR:-out}" "$@"
