"""Streaming against offline as clips grow: the cost of a live session must not grow with its length.

    python perf/bench_streaming.py [--seconds 8,32,120] [--chunk-ms 40] [--renderer wav2lip|stand-in]
                                   [--device cpu|cuda] [--backend ort|torch] [--json out.json]

For each clip length, on ``--device`` with ``--backend`` (default: the CPU with ONNX
Runtime; Wav2Lip, random weights, seed 0, built once), in one run:
  - offline: ``Pipeline.run`` over the whole clip, every frame consumed where it lies;
  - streaming: ``Pipeline.stream_chunks`` with ``--chunk-ms`` chunks fed back to back;
    streaming / offline wall time is the cost of streaming (goal <= 1.1 at every
    length, and not growing with it);
  - the features per chunk: the resampler and the renderer's feature stream alone
    (what used to be recomputed over the whole prefix), the median per chunk over the
    clip's first and last tenth: flat if each step does the same work;
  - time to first frame with the audio paced in real time (chunk i handed over when it
    has fully arrived), from the first chunk's start.

On CUDA every time is read after ``torch.cuda.synchronize``: the frames stay on the
device, so without it a time would count the launches, not the GPU's work.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import make_pipeline, run_machine, run_problem, runner_backend, stream_parser, synchronize  # noqa: E402  (puts the repository on sys.path)

from talkrt.runtime.pipeline import SAMPLE_RATE, Pipeline  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402


def chunks_of(audio: np.ndarray, chunk_ms: float) -> list[np.ndarray]:
    step = round(SAMPLE_RATE * chunk_ms / 1000)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def wall(pipeline: Pipeline, batches) -> tuple[float, int]:
    """Seconds until every batch's frames are made (on the device too), and the frame count."""
    synchronize(pipeline.device)
    begin, frames = time.perf_counter(), 0
    for batch in batches:
        frames += len(batch.frames)
    synchronize(pipeline.device)
    return time.perf_counter() - begin, frames


def features_per_chunk(pipeline: Pipeline, chunks: list[np.ndarray]) -> list[float]:
    """Seconds per chunk of the front end alone: the resampler and the renderer's feature stream."""
    utterance = pipeline.utterance(SAMPLE_RATE)
    times = []
    with pipeline._on_stream():  # where the utterance runs them
        for chunk in chunks:
            synchronize(pipeline.device)
            begin = time.perf_counter()
            samples = utterance.resampler.push(pipeline._to_device(chunk))
            utterance.features.push(samples)
            synchronize(pipeline.device)
            times.append(time.perf_counter() - begin)
    return times


def paced_first_frame(pipeline: Pipeline, chunks: list[np.ndarray], chunk_ms: float) -> float:
    synchronize(pipeline.device)
    t0 = time.perf_counter()

    def arriving():
        for i, chunk in enumerate(chunks):
            time.sleep(max(0.0, t0 + (i + 1) * chunk_ms / 1000 - time.perf_counter()))
            yield chunk

    batches = pipeline.stream_chunks(arriving(), SAMPLE_RATE)
    next(batches)
    synchronize(pipeline.device)  # the first frames are made, not only queued
    first = time.perf_counter() - t0
    batches.close()
    return first


def tenths(values: list[float]) -> tuple[float, float]:
    tenth = max(1, len(values) // 10)
    return statistics.median(values[:tenth]), statistics.median(values[-tenth:])


def main(argv: list[str] | None = None) -> int:
    from _report import emit, result_header, results_table

    parser = stream_parser(__doc__, devices=True)
    parser.add_argument("--seconds", default="8,32,120")
    args = parser.parse_args(argv)
    problem = run_problem(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2

    pipeline = make_pipeline(args.renderer, device=args.device, backend=args.backend)
    backend = runner_backend(args.renderer, args.backend)
    wall(pipeline, pipeline.run(synthetic_speech(1.0, seed=0), SAMPLE_RATE))  # warm-up
    rows, results = [], []
    for seconds in (float(s) for s in args.seconds.split(",")):
        audio = synthetic_speech(seconds, seed=2)
        chunks = chunks_of(audio, args.chunk_ms)
        offline, frames = wall(pipeline, pipeline.run(audio, SAMPLE_RATE))
        streaming, streamed = wall(pipeline, pipeline.stream_chunks(chunks, SAMPLE_RATE))
        assert streamed == frames, (streamed, frames)
        first, last = tenths(features_per_chunk(pipeline, chunks))
        paced = paced_first_frame(pipeline, chunks, args.chunk_ms)
        results.append({"seconds": seconds, "frames": frames, "offline_s": round(offline, 3), "streaming_s": round(streaming, 3),
                        "streaming_over_offline": round(streaming / offline, 3), "features_ms_per_chunk_first_tenth": round(first * 1000, 3),
                        "features_ms_per_chunk_last_tenth": round(last * 1000, 3), "paced_ttff_ms": round(paced * 1000, 1)})
        rows.append((f"{seconds:g}", str(frames), f"{offline:.2f}", f"{streaming:.2f}", f"{streaming / offline:.3f}", f"{first * 1000:.3f}", f"{last * 1000:.3f}", f"{paced * 1000:.0f}"))
    columns = [("clip s", "right"), ("frames", "right"), ("offline s", "right"), ("streaming s", "right"), ("stream / offline", "right"),
               ("features ms/chunk, first tenth", "right"), ("last tenth", "right"), ("paced TTFF ms", "right")]
    machine = run_machine(args)
    table = results_table(f"streaming ({args.chunk_ms:g} ms chunks) against offline, {args.renderer}, {backend} on {args.device} ({machine['device_name']})", columns, rows)
    result = {**result_header("streaming", machine), "renderer": args.renderer, "device": args.device, "backend": backend, "chunk_ms": args.chunk_ms, "results": results}
    emit(result, table, args.json, width=150)
    return 0


if __name__ == "__main__":
    sys.exit(main())
