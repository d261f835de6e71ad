#!/usr/bin/env bash
# One command for a lent GPU machine: environment, GPU tests, benchmarks and the demo, summed up in one
# Markdown file. Every step runs under its own time limit; a failed step does not stop the next one.
#
#   bash perf/gpu_check.sh                 run every step (results under $OUT, or out/gpu_check/ without it)
#   bash perf/gpu_check.sh --plan          print the steps, their limits and the wheels carried; change nothing
#   bash perf/gpu_check.sh --fetch-wheels  download those wheels into .whl/ and stamp the commit beside them
#   bash perf/gpu_check.sh --only pytest,demo   setup and the steps named (a short rerun after a fix)
#
# The exit status is 0 when no step failed or timed out (skipped steps are not failures).
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/perf/gpu_check.sh"
cd "$REPO" || exit 1

PY=${PYTHON:-python3}
WHEEL_DIR=.whl
WHEEL_PYTHON=3.12
WHEEL_LIMIT_MIB=60  # a device call carries at most 64 MiB
COMMIT_STAMP="$WHEEL_DIR/commit.json"
SITE=/tmp/talkrt-site
BUDGET_S=510        # the whole run; the device call's timeout_s is 570
DEVICE_TIMEOUT_S=570

# What the GPU image lacks, as wheels for CPython 3.12 on x86-64 Linux. This is the only list.
WHEELS=(
    typer==0.29.2 shellingham==1.5.4 annotated-doc==0.0.7  # the CLI (python3 -m talkrt) and what typer needs
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
    av==18.1.0                                             # PyAV: the demo, MP4 output and the avatar tests (34 MiB)
    polygraphy==0.53.6 onnx-graphsurgeon==0.6.1            # engine tooling and constant folding, pure Python
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0
    soundfile==0.14.0 cffi==2.1.1 pycparser==3.12          # test modules import these at collection
    kaldi-native-fbank==1.23.0                             # the fbank GPU test's reference
    librosa==0.11.0 soxr==1.0.0 audioread==3.1.0 pooch==1.8.2 decorator==5.2.1 platformdirs==4.5.1  # audio tests
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 websockets==17.4 opentelemetry-api==1.45.2  # talkrt serve (the image has anyio, h11, click, httpx)
)
# Left out on purpose; each line says what goes missing without it.
NOT_CARRIED=(
    "opencv-python-headless: the image has it since 2026-11 (48 MiB; with PyAV over the 64 MiB a call carries)"
    "tensorrt (the datacenter builder, over 1 GiB): engines are neither built nor run there; the torch and ONNX Runtime (CPU) paths are"
)
# Test modules that fail to import only because of these are not counted as failures.
NOT_CARRIED_MODULES=(cv2)
PIP_DOWNLOAD=(
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$WHEEL_PYTHON" --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
)

# name|limit in seconds|what it runs
STEPS=(
    "setup|60|install .whl/*.whl into $SITE; check that talkrt imports; GPU, driver, torch/CUDA, optional packages"
    "pipeline-fp32|75|perf/bench_pipeline.py --device cuda --backend torch --precision fp32 --seconds 4 --repeats 3"
    "pipeline-fp16|75|perf/bench_pipeline.py --device cuda --backend torch --precision fp16 --seconds 4 --repeats 3"
    "pytest|150|python3 -m pytest -m gpu -q -rfEs -p no:cacheprovider --continue-on-collection-errors tests"
    "features-fp32|50|perf/bench_features.py --device cuda --no-ort --precision fp32 --seconds 10"
    "features-fp16|50|perf/bench_features.py --device cuda --no-ort --precision fp16 --seconds 10"
    "tts-fp32|60|perf/bench_tts.py --device cuda --no-ort --precision fp32 --seconds 4"
    "tts-fp16|60|perf/bench_tts.py --device cuda --no-ort --precision fp16 --seconds 4"
    "demo|90|python3 -m talkrt demo --device cuda --seconds 4 (needs PyAV)"
    "streaming|60|perf/bench_streaming.py --device cuda --backend torch (8, 32, 120 s clips)"
    "context|60|perf/bench_context.py --device cuda (random weights)"
    "gpt-sovits|80|perf/bench_gpt_sovits.py --device cuda --no-ort --preset v2 --tokens 200 --sentences 1 --repeats 3"
    "serve|150|perf/bench_serve.py --device cuda --backend torch --frames raw --modes batched --sessions 1,16,64,128 --seconds 6 --slack-s 15"
)
# The benchmark steps, in the order the summary shows their tables.
BENCHMARKS=(pipeline-fp32 pipeline-fp16 features-fp32 features-fp16 tts-fp32 tts-fp16 streaming context gpt-sovits serve)
SKIPPED=77  # a step's exit status for "skipped", with the reason in its .note file

# --------------------------------------------------------------------------- --plan and --fetch-wheels

plan() {
    local line name limit what total=0
    echo "perf/gpu_check.sh: steps, in order (each under its own limit; no step starts after ${BUDGET_S} s)"
    for line in "${STEPS[@]}"; do
        IFS='|' read -r name limit what <<<"$line"
        printf '  %-14s %4s s  %s\n' "$name" "$limit" "$what"
        total=$((total + limit))
    done
    echo "  limits add up to ${total} s; the run's budget is ${BUDGET_S} s, and a step never gets more than is left"
    echo "device call: command 'bash perf/gpu_check.sh', carry [\"$WHEEL_DIR\"], timeout_s $DEVICE_TIMEOUT_S"
    echo
    echo "wheels carried in $WHEEL_DIR (CPython $WHEEL_PYTHON, manylinux x86-64, installed with --no-deps into $SITE):"
    printf '  %s\n' "${WHEELS[@]}"
    echo "not carried:"
    printf '  %s\n' "${NOT_CARRIED[@]}"
    echo "'bash perf/gpu_check.sh --fetch-wheels' fetches them (and stamps the commit in $COMMIT_STAMP) with:"
    echo "  ${PIP_DOWNLOAD[*]} -d $WHEEL_DIR ${WHEELS[*]}"
    if compgen -G "$WHEEL_DIR/*.whl" >/dev/null; then
        echo "now in $WHEEL_DIR: $(ls "$WHEEL_DIR"/*.whl | wc -l) wheels, $(wheel_mib) MiB (limit $WHEEL_LIMIT_MIB MiB)"
    else
        echo "now in $WHEEL_DIR: nothing"
    fi
    echo
    echo "results: \$OUT/gpu_check.md (summary), \$OUT/<step>.json (benchmarks), \$OUT/logs.tar.gz (every step's output); without \$OUT: out/gpu_check/"
}

wheel_mib() {
    du -cb "$WHEEL_DIR"/*.whl | tail -n 1 | awk '{printf "%.1f", $1 / 1048576}'
}

fetch_wheels() {
    local fresh mib
    fresh=$(mktemp -d) || return 1
    if ! "${PIP_DOWNLOAD[@]}" -d "$fresh" "${WHEELS[@]}"; then
        rm -rf "$fresh"
        echo "pip download failed" >&2
        return 1
    fi
    mkdir -p "$WHEEL_DIR"
    rm -f "$WHEEL_DIR"/*.whl
    mv "$fresh"/*.whl "$WHEEL_DIR"/ && rmdir "$fresh"
    ls -l "$WHEEL_DIR"/*.whl
    mib=$(wheel_mib)
    echo "total: $mib MiB in $(ls "$WHEEL_DIR"/*.whl | wc -l) wheels (limit $WHEEL_LIMIT_MIB MiB)"
    stamp_commit
    if ! git check-ignore -q "$WHEEL_DIR/x.whl"; then
        echo "warning: git does not ignore $WHEEL_DIR/: add '$WHEEL_DIR/' to .gitignore so that the wheels are never committed" >&2
    fi
    if ! awk -v mib="$mib" -v limit="$WHEEL_LIMIT_MIB" 'BEGIN { exit !(mib <= limit) }'; then
        echo "the wheels exceed $WHEEL_LIMIT_MIB MiB: a device call would not carry them" >&2
        return 1
    fi
}

stamp_commit() {
    # The device's copy of the checkout has no git: the benchmarks and the summary read this instead.
    local commit dirty
    commit=$(git rev-parse --short HEAD) || return 1
    if [ -n "$(git status --porcelain)" ]; then dirty=true; else dirty=false; fi
    printf '{"commit": "%s", "uncommitted_changes": %s, "stamped": "%s"}\n' "$commit" "$dirty" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$COMMIT_STAMP"
    echo "stamped $COMMIT_STAMP: $(cat "$COMMIT_STAMP")"
}

# --------------------------------------------------------------------------- steps (each runs as: gpu_check.sh --step NAME)

step_setup() {
    local rc=0 version wheel
    if compgen -G "$WHEEL_DIR/*.whl" >/dev/null; then
        version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        if [ "$version" = "$WHEEL_PYTHON" ]; then
            echo "installing $(ls "$WHEEL_DIR"/*.whl | wc -l) wheels into $SITE"
            if "$PY" -m pip --version >/dev/null 2>&1; then
                "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                    --target "$SITE" "$WHEEL_DIR"/*.whl || { echo "pip install failed"; rc=1; }
            else
                echo "no pip: unpacking the wheels instead"
                for wheel in "$WHEEL_DIR"/*.whl; do
                    "$PY" -m zipfile -e "$wheel" "$SITE" || { echo "cannot unpack $wheel"; rc=1; }
                done
            fi
        else
            echo "not installing $WHEEL_DIR: the wheels are for Python $WHEEL_PYTHON, $PY is $version"
        fi
    else
        echo "no wheels in $WHEEL_DIR"
    fi
    echo "PYTHONPATH=$PYTHONPATH"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | sed 's/^/nvidia-smi: /'
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" perf/gpu_check_env.py || rc=1
    if "$PY" -m talkrt --help >/dev/null; then echo "python3 -m talkrt: ok"; else echo "python3 -m talkrt --help failed"; rc=1; fi
    return "$rc"
}

step_pytest() {
    local log="$WORK/pytest.log" rc errors tolerated=0 module
    "$PY" -m pytest -m gpu -q -rfEs -p no:cacheprovider --continue-on-collection-errors tests >"$log" 2>&1
    rc=$?
    cat "$log"
    [ "$rc" -eq 0 ] && return 0
    # Test modules that cannot be collected only because a package is not carried are reported, not failed.
    errors=$(grep -c '^ERROR ' "$log")
    for module in "${NOT_CARRIED_MODULES[@]}"; do
        tolerated=$((tolerated + $(grep -c "^E   ModuleNotFoundError: No module named '$module'" "$log")))
    done
    if [ "$rc" -eq 1 ] && [ "$errors" -gt 0 ] && [ "$errors" -eq "$tolerated" ] && ! grep -q '^FAILED \|^ERROR .*::' "$log"; then
        echo "$errors test module(s) not collected, needing a package that is not carried: $(grep '^ERROR ' "$log" | cut -d' ' -f2 | tr '\n' ' ')" >"$LOGS/pytest.note"
        return 0
    fi
    return "$rc"
}

bench() {
    local script=$1 name=$2
    shift 2
    "$PY" "perf/$script" --device cuda --json "$OUT_DIR/$name.json" "$@"
}

step_pipeline-fp32() { bench bench_pipeline.py pipeline-fp32 --backend torch --precision fp32 --seconds 4 --repeats 3; }
step_pipeline-fp16() { bench bench_pipeline.py pipeline-fp16 --backend torch --precision fp16 --seconds 4 --repeats 3; }
step_features-fp32() { bench bench_features.py features-fp32 --no-ort --precision fp32 --seconds 10; }
step_features-fp16() { bench bench_features.py features-fp16 --no-ort --precision fp16 --seconds 10; }
step_tts-fp32() { bench bench_tts.py tts-fp32 --no-ort --precision fp32 --seconds 4; }
step_tts-fp16() { bench bench_tts.py tts-fp16 --no-ort --precision fp16 --seconds 4; }
step_streaming() { bench bench_streaming.py streaming --backend torch; }
step_context() { bench bench_context.py context; }
step_serve() { bench bench_serve.py serve --backend torch --frames raw --modes batched --sessions 1,16,64,128 --seconds 6 --slack-s 15; }
step_gpt-sovits() { bench bench_gpt_sovits.py gpt-sovits --no-ort --preset v2 --tokens 200 --sentences 1 --repeats 3; }

step_demo() {
    if ! "$PY" -c "import av" 2>/dev/null; then
        echo "skipped: no PyAV (the MP4 needs it; av is not carried)" >"$LOGS/demo.note"
        return "$SKIPPED"
    fi
    "$PY" -m talkrt demo --device cuda --seconds 4 --out-dir "$WORK/demo" || return 1
    cp "$WORK/demo"/profile.* "$LOGS"/
}

# --------------------------------------------------------------------------- running and summing up

run_step() {
    local name=$1 limit=$2 left start rc status
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        record "$name" "skipped" 0 "$limit" "out of budget (${left} s left)"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name (limit ${limit} s)" >&2
    start=$(date +%s)
    timeout -k 5 "$limit" bash "$SELF" --step "$name" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
    rc=$?
    case $rc in
        0) status=ok ;;
        "$SKIPPED") status=skipped ;;
        124 | 137) status=TIMEOUT; FAILED=1 ;;
        *) status="FAIL (exit $rc)"; FAILED=1 ;;
    esac
    record "$name" "$status" $(($(date +%s) - start)) "$limit" "$(cat "$LOGS/$name.note" 2>/dev/null)"
    echo "   $status" >&2
}

record() {
    printf '%s|%s|%s|%s|%s\n' "$@" >>"$LOGS/steps.txt"
}

device_line() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1 | sed 's/, / (driver /; s/$/)/'
    else
        echo "no nvidia-smi on this machine (see Environment)"
    fi
}

fence() {
    echo '```text'
    cat "$@"
    echo '```'
}

write_summary() {
    local md="$OUT_DIR/gpu_check.md" name status seconds limit note
    {
        echo "# GPU check"
        echo
        echo "- Device: $(device_line)"
        echo "- Date: $STARTED (UTC). Commit: $("$PY" perf/gpu_check_env.py --commit 2>&1)"
        echo "- Command: \`bash perf/gpu_check.sh\`; $(($(date +%s) - START)) s of the ${BUDGET_S} s budget; exit status $FAILED"
        echo
        echo "| step | status | seconds | limit s | note |"
        echo "|---|---|---:|---:|---|"
        while IFS='|' read -r name status seconds limit note; do
            echo "| $name | $status | $seconds | $limit | $note |"
        done <"$LOGS/steps.txt"
        echo
        echo "## Environment"
        echo
        fence "$LOGS/setup.out"
        if [ -s "$LOGS/pytest.out" ]; then
            echo
            echo "## pytest -m gpu"
            echo
            fence <(grep -E '^(FAILED|ERROR|SKIPPED) ' "$LOGS/pytest.out"; tail -n 1 "$LOGS/pytest.out")
        fi
        echo
        echo "## Benchmarks (tables as printed; JSON beside this file)"
        for name in "${BENCHMARKS[@]}"; do
            if [ -s "$LOGS/$name.out" ]; then
                echo
                echo "### $name"
                echo
                fence "$LOGS/$name.out"
            fi
        done
        while IFS='|' read -r name status seconds limit note; do
            case $status in
                FAIL* | TIMEOUT)
                    echo
                    echo "## $name: $status, last lines"
                    echo
                    fence <(tail -n 25 "$LOGS/$name.err"; echo "--- stdout:"; tail -n 15 "$LOGS/$name.out")
                    ;;
            esac
        done <"$LOGS/steps.txt"
    } >"$md"
    echo "wrote $md" >&2
}

run_all() {
    local line name limit what
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
    if [ -f "$COMMIT_STAMP" ]; then
        export TALKRT_PERF_COMMIT_FILE="$REPO/$COMMIT_STAMP"
    fi
    START=$(date +%s)
    DEADLINE=$((START + BUDGET_S))
    STARTED=$(date -u +%Y-%m-%dT%H:%M:%S)
    FAILED=0
    OUT_DIR=${OUT:-$REPO/out/gpu_check}
    [ -n "${OUT:-}" ] || rm -rf "$OUT_DIR"
    mkdir -p "$OUT_DIR" || exit 1
    WORK=$(mktemp -d) || exit 1
    LOGS="$WORK/logs"
    mkdir -p "$LOGS"
    : >"$LOGS/steps.txt"
    export OUT_DIR WORK LOGS
    for line in "${STEPS[@]}"; do
        IFS='|' read -r name limit what <<<"$line"
        if [ -n "${ONLY:-}" ] && [ "$name" != setup ] && [[ ",$ONLY," != *",$name,"* ]]; then
            continue
        fi
        run_step "$name" "$limit"
    done
    write_summary
    tar -czf "$OUT_DIR/logs.tar.gz" -C "$WORK" logs
    rm -rf "$WORK"
    echo "results in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')" >&2
    exit "$FAILED"
}

case "${1:-}" in
    --plan) plan ;;
    --fetch-wheels) fetch_wheels ;;
    --step) "step_${2:?--step needs a step name}" ;;
    --only) ONLY=${2:?--only needs step names, e.g. pytest,demo} run_all ;;
    "") run_all ;;
    *)
        echo "usage: bash perf/gpu_check.sh [--plan | --fetch-wheels | --only STEP,STEP]" >&2
        exit 2
        ;;
esac
