"""A long live session: per-chunk cost, resident memory and the A/V offset over time.

    python perf/soak.py [--minutes 60] [--chunk-ms 40] [--renderer stand-in|wav2lip]
                        [--device cpu|cuda] [--backend ort|torch] [--json out.json]

Streams synthetic speech (phrases and pauses, one utterance per ``--utterance-s``
seconds, each flushed) into one `talkrt.runtime.session.Session` on ``--device`` (the
CPU by default), chunk by chunk as fast as it goes, and records for every chunk the
time it took and the state the session holds (resampler history, feature-stream
history, feature columns, audio and frames waiting), and every few seconds the
process's resident memory.

The renderer is by default a stand-in: Wav2Lip's real audio front end, alignment,
windows, paste-back and session clock, with a tiny random linear map in place of the
generator, so an hour of audio streams in minutes on two cores (``--renderer
wav2lip`` runs the real random-weight graph instead, through ONNX Runtime or, with
``--backend torch``, PyTorch; on CUDA each chunk's time includes its GPU work).

Pass: per-chunk cost and memory flat (the last tenth of the session within 10% of
the first tenth, after a warm-up), the state bounded, and the A/V offset 0 samples
at every frame: each batch's first frame is shown at exactly the session time of the
first audio sample delivered with it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import REPO, cuda_problem, machine_info  # noqa: E402  (perf/ is on sys.path when run as a script)

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from talkrt.models.wav2lip.renderer import Wav2LipRenderer  # noqa: E402
from talkrt.runtime.align import num_video_frames  # noqa: E402
from talkrt.runtime.avatar import synthetic_avatar  # noqa: E402
from talkrt.runtime.pipeline import Pipeline, PipelineOptions  # noqa: E402
from talkrt.runtime.session import Session  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402

RATE = 16000


class StandInRenderer(Wav2LipRenderer):
    """Wav2Lip's front end and alignment; a random linear map from each 80x16 mel window to an 8x8
    face, upsampled to 96x96, stands in for the generator (the soak measures everything else)."""

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.feature_channels, self.crop_size, self.face_size = 80, (96, 96), 96
        generator = torch.Generator().manual_seed(seed)
        self.weight = (torch.randn(80 * 16, 3 * 8 * 8, generator=generator) / 40.0).to(self.device)

    @property
    def batch_runners(self) -> tuple:
        return ()

    def prepare(self, avatar, batch_size: int) -> None:
        pass  # no per-frame inputs: the stand-in reads only the windows

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        small = torch.sigmoid(windows.reshape(len(windows), -1) @ self.weight).reshape(-1, 3, 8, 8)
        return torch.nn.functional.interpolate(small, size=self.crop_size, mode="bilinear", align_corners=False)


def resident_mib() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


STATE_KEYS = ("resampler_samples", "feature_samples", "feature_columns", "audio_samples", "waiting_frames")


@dataclass
class SoakRecord:
    """What a soak measured, chunk by chunk (``seconds``, ``state``: one row per push, in arrays filled
    from the start, so that recording does not itself grow the memory it measures) and every few
    seconds (``memory``)."""

    chunk_samples: int
    seconds: np.ndarray  # wall time of each push
    state: np.ndarray  # (pushes, len(STATE_KEYS)): the session's state after each push
    memory: list[tuple[float, float]] = field(default_factory=list)  # (session time in s, resident MiB)
    pushes: int = 0
    frames: int = 0
    audio_samples: int = 0  # delivered with the frames
    pushed_samples: int = 0
    max_offset: int = 0  # largest |pts of a batch's first frame - session time of its first audio sample|
    utterances: int = 0

    def largest(self, key: str, rows: slice = slice(None)) -> int:
        return int(self.state[: self.pushes][rows, STATE_KEYS.index(key)].max())


def make_pipeline(renderer: str, batch_size: int = 8, device: str = "cpu", backend: str = "ort") -> Pipeline:
    """The pipeline on ``device``: the stand-in, or Wav2Lip with random weights (seed 0) run by ``backend``."""
    options = PipelineOptions(batch_size=batch_size, profile=False)  # a profile keeps every frame's records
    avatar = synthetic_avatar(num_frames=8)
    if renderer == "stand-in":
        return Pipeline(avatar, StandInRenderer(device=device), options)
    import tempfile

    from talkrt.runtime.pipeline import pipeline_from_files

    if backend == "torch":  # no file: the torch backend builds the module from seed 0 itself
        return pipeline_from_files(avatar, "wav2lip", "torch", None, device, options)
    # The pipeline loads the graph when it is built, so the file need not outlive this call.
    with tempfile.TemporaryDirectory(prefix="talkrt-soak-") as folder:
        return pipeline_from_files(avatar, "wav2lip", "ort", export_wav2lip(Path(folder)), device, options)


def runner_backend(renderer: str, backend: str) -> str:
    """The backend that runs the generator: the stand-in is a torch map whatever ``--backend`` says."""
    return backend if renderer == "wav2lip" else "torch"


def run_problem(args: argparse.Namespace) -> str | None:
    """Why ``--device``/``--backend`` cannot run here (no GPU, or no CUDA provider for ONNX Runtime), or None."""
    return cuda_problem(args.device, ort=runner_backend(args.renderer, args.backend) == "ort")


def run_machine(args: argparse.Namespace) -> dict:
    """The machine and the device, for the result's header (ONNX Runtime's provider only where it runs)."""
    ort = runner_backend(args.renderer, args.backend) == "ort"
    return machine_info(args.device, [("CUDAExecutionProvider" if args.device == "cuda" else "CPUExecutionProvider")] if ort else [])


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU: a time read after it includes the GPU's work, not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def export_wav2lip(folder: Path) -> Path:
    """Wav2Lip with random weights (seed 0) as ``folder/wav2lip.onnx``."""
    from talkrt.export.onnx import export_onnx
    from talkrt.models.registry import get_spec

    spec = get_spec("wav2lip")
    path = folder / "wav2lip.onnx"
    export_onnx(spec, spec.build_module(None, seed=0), path, validate=False)
    return path


def stream_parser(doc: str, renderer: str | None = "wav2lip", devices: bool = False) -> argparse.ArgumentParser:
    """The options every streaming benchmark shares: chunk length, renderer (no ``--renderer`` when
    ``renderer`` is None: the benchmark's renderer is fixed), JSON output; with ``devices``, the
    device and backend that ``make_pipeline`` takes (only where a benchmark passes them on)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--chunk-ms", type=float, default=40.0)
    if renderer is not None:
        parser.add_argument("--renderer", choices=("stand-in", "wav2lip"), default=renderer)
    if devices:
        parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        parser.add_argument("--backend", choices=("ort", "torch"), default="ort",
                            help="what runs Wav2Lip (torch on a GPU whose onnxruntime has no CUDA provider); the stand-in is torch either way")
    parser.add_argument("--json", type=Path)
    return parser


def soak(pipeline: Pipeline, seconds: float, chunk_ms: float = 40, utterance_s: float = 30, memory_every_s: float = 5) -> SoakRecord:
    """Stream ``seconds`` of speech in ``chunk_ms`` chunks through one session, utterance after utterance."""
    session = Session(pipeline, RATE)
    chunk = round(RATE * chunk_ms / 1000)
    utterance = synthetic_speech(utterance_s, seed=1)  # the same words each time: the cost is what is measured
    utterances = math.ceil(seconds * RATE / len(utterance))
    pushes = utterances * math.ceil(len(utterance) / chunk)
    # np.full writes every page now: the arrays' memory is resident before the first measurement.
    record = SoakRecord(chunk, np.full(pushes, np.nan), np.full((pushes, len(STATE_KEYS)), -1, dtype=np.int64))
    next_memory = 0.0

    def take(batches) -> None:
        for batch in batches:
            record.max_offset = max(record.max_offset, abs(int(batch.pts[0]) - record.audio_samples))
            record.frames += len(batch.pts)
            record.audio_samples += len(batch.audio)

    for _ in range(utterances):
        for start in range(0, len(utterance), chunk):
            piece = utterance[start : start + chunk]
            begin = time.perf_counter()
            take(session.push(piece))
            synchronize(pipeline.device)
            record.seconds[record.pushes] = time.perf_counter() - begin
            sizes = session.state_sizes()
            record.state[record.pushes] = [sizes[key] for key in STATE_KEYS]
            record.pushes += 1
            record.pushed_samples += len(piece)
            if record.pushed_samples / RATE >= next_memory:
                record.memory.append((record.pushed_samples / RATE, resident_mib()))
                next_memory += memory_every_s
        take(session.flush())
        record.utterances += 1
    return record


def flat(values, warmup: int) -> tuple[float, float, float]:
    """(median of the first tenth after ``warmup``, median of the last tenth, last / first)."""
    values = list(values[warmup:])
    tenth = max(1, len(values) // 10)
    first, last = statistics.median(values[:tenth]), statistics.median(values[-tenth:])
    return first, last, last / first if first else float("inf")


def main(argv: list[str] | None = None) -> int:
    from _report import emit, result_header, results_table

    parser = stream_parser(__doc__, renderer="stand-in", devices=True)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--utterance-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    problem = run_problem(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2

    pipeline = make_pipeline(args.renderer, device=args.device, backend=args.backend)
    begin = time.perf_counter()
    record = soak(pipeline, args.minutes * 60, args.chunk_ms, args.utterance_s)
    synchronize(pipeline.device)  # the last flush's frames
    wall = time.perf_counter() - begin
    warmup = min(record.pushes // 20, round(10_000 / args.chunk_ms))  # the first 10 s
    cost = flat(record.seconds, warmup)
    memory = flat([m for _, m in record.memory], max(1, len(record.memory) // 20))
    state_max = {key: record.largest(key) for key in STATE_KEYS}
    state_last = {key: record.largest(key, slice(-(record.pushes // 10), None)) for key in STATE_KEYS}
    expected_frames = record.utterances * num_video_frames(len(synthetic_speech(args.utterance_s, seed=1)), pipeline.fps, RATE)
    passed = cost[2] <= 1.1 and memory[2] <= 1.1 and record.max_offset == 0 and record.frames == expected_frames
    result = {
        **result_header("soak", run_machine(args)),
        "renderer": args.renderer, "device": args.device, "backend": runner_backend(args.renderer, args.backend), "minutes": args.minutes, "chunk_ms": args.chunk_ms, "utterance_s": args.utterance_s, "wall_s": round(wall, 1),
        "frames": record.frames, "expected_frames": expected_frames, "utterances": record.utterances, "max_av_offset_samples": record.max_offset,
        "chunk_ms_first_tenth": round(cost[0] * 1000, 3), "chunk_ms_last_tenth": round(cost[1] * 1000, 3), "chunk_cost_ratio": round(cost[2], 3),
        "rss_mib_first_tenth": round(memory[0], 1), "rss_mib_last_tenth": round(memory[1], 1), "rss_ratio": round(memory[2], 3),
        "state_max": state_max, "state_max_last_tenth": state_last, "memory": record.memory, "passed": passed,
    }
    rows = [
        ("per-chunk cost (median, ms)", f"{cost[0] * 1000:.3f}", f"{cost[1] * 1000:.3f}", f"{cost[2]:.3f}"),
        ("resident memory (MiB)", f"{memory[0]:.1f}", f"{memory[1]:.1f}", f"{memory[2]:.3f}"),
    ]
    table = results_table(f"soak: {args.minutes:g} min of audio in {args.chunk_ms:g} ms chunks ({args.renderer}, {runner_backend(args.renderer, args.backend)} on {args.device})",
                          [("", "left"), ("first tenth", "right"), ("last tenth", "right"), ("last / first", "right")], rows)
    lines = [f"frames {record.frames} (expected {expected_frames}), utterances {record.utterances}, largest A/V offset {record.max_offset} samples, wall {wall:.0f} s",
             f"state, largest over the session: {state_max}", "PASS" if passed else "FAIL"]
    emit(result, table, args.json, width=110, lines=lines)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
