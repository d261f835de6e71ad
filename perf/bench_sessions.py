"""Several live sessions on one pipeline: each rendered on its own against all batched together.

    python perf/bench_sessions.py [--sessions 1,2,4,8] [--seconds 8] [--chunk-ms 40] [--renderer wav2lip|stand-in] [--json out.json]

For N sessions, each streaming ``--seconds`` of its own speech in ``--chunk-ms`` chunks,
turn by turn (one chunk per session per turn), through one pipeline (Wav2Lip, random
weights, ort on the CPU, batch 8):
  - one by one: each session's push renders its own frames (``Session.push``);
  - batched: ``SessionBatcher.step`` renders the frames due in every session of a turn in
    shared batches.
Reported: wall time, frames per second over all sessions, the batches' fill, and
batched / one-by-one. With 40 ms chunks a session completes about one frame a turn, so
one by one every render call runs a batch of one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import make_pipeline, stream_parser  # noqa: E402  (puts the repository on sys.path)

from talkrt.runtime.batching import SessionBatcher  # noqa: E402
from talkrt.runtime.pipeline import SAMPLE_RATE, Pipeline  # noqa: E402
from talkrt.runtime.session import Session  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402


def turns(count: int, seconds: float, chunk_ms: float) -> list[list]:
    """Turn t: the t-th chunk of every session's speech (each session says something else)."""
    chunk = round(SAMPLE_RATE * chunk_ms / 1000)
    clips = [synthetic_speech(seconds, seed=10 + index) for index in range(count)]
    return [[clip[start : start + chunk] for clip in clips] for start in range(0, len(clips[0]), chunk)]


def one_by_one(pipeline: Pipeline, schedule: list[list]) -> tuple[float, int]:
    sessions = [Session(pipeline, SAMPLE_RATE) for _ in schedule[0]]
    begin, frames = time.perf_counter(), 0
    for chunks in schedule:
        for session, chunk in zip(sessions, chunks):
            frames += sum(len(f.images) for f in session.push(chunk))
    frames += sum(len(f.images) for session in sessions for f in session.flush())
    return time.perf_counter() - begin, frames


def batched(pipeline: Pipeline, schedule: list[list]) -> tuple[float, int, float]:
    sessions = [Session(pipeline, SAMPLE_RATE) for _ in schedule[0]]
    batcher = SessionBatcher(pipeline)
    begin, frames = time.perf_counter(), 0
    for chunks in [*schedule, [None] * len(sessions)]:
        for result in batcher.step(list(zip(sessions, chunks))):
            frames += sum(len(f.images) for f in result)
    return time.perf_counter() - begin, frames, batcher.fill


def main(argv: list[str] | None = None) -> int:
    from _machine import machine_info
    from _report import emit, result_header, results_table

    parser = stream_parser(__doc__)
    parser.add_argument("--sessions", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)

    pipeline = make_pipeline(args.renderer)
    one_by_one(pipeline, turns(1, 1.0, args.chunk_ms))  # warm-up
    rows, results = [], []
    for count in (int(n) for n in args.sessions.split(",")):
        schedule = turns(count, args.seconds, args.chunk_ms)
        alone, frames = one_by_one(pipeline, schedule)
        together, batched_frames, fill = batched(pipeline, schedule)
        assert batched_frames == frames, (batched_frames, frames)
        results.append({"sessions": count, "frames": frames, "one_by_one_s": round(alone, 3), "batched_s": round(together, 3),
                        "one_by_one_fps": round(frames / alone, 1), "batched_fps": round(frames / together, 1),
                        "batch_fill": round(fill, 3), "batched_over_one_by_one": round(together / alone, 3)})
        rows.append((str(count), str(frames), f"{alone:.2f}", f"{together:.2f}", f"{frames / alone:.1f}", f"{frames / together:.1f}", f"{fill:.2f}", f"{together / alone:.3f}"))
    columns = [("sessions", "right"), ("frames", "right"), ("one by one s", "right"), ("batched s", "right"), ("one by one fps", "right"),
               ("batched fps", "right"), ("batch fill", "right"), ("batched / one by one", "right")]
    table = results_table(f"{args.seconds:g} s per session in {args.chunk_ms:g} ms chunks, {args.renderer}, CPU", columns, rows)
    result = {**result_header("sessions", machine_info("cpu", ["CPUExecutionProvider"])), "renderer": args.renderer, "chunk_ms": args.chunk_ms,
              "seconds": args.seconds, "results": results}
    emit(result, table, args.json, width=150)
    return 0


if __name__ == "__main__":
    sys.exit(main())
