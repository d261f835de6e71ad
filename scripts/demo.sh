#!/usr/bin/env bash
# Quick start, main job: set up, then export Wav2Lip (random weights unless
# CHECKPOINT=path/to/wav2lip.pth is given), build its engine and show it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TALKRT_EXTRAS="${TALKRT_EXTRAS:-cpu,rtx}" bash scripts/setup.sh
talkrt=.venv/bin/talkrt
weights=(--random-init)
[ -n "${CHECKPOINT:-}" ] && weights=(--checkpoint "$CHECKPOINT")
"$talkrt" export wav2lip "${weights[@]}" --out out/wav2lip.onnx
"$talkrt" build out/wav2lip.onnx --out out/wav2lip.engine
"$talkrt" inspect out/wav2lip.engine
