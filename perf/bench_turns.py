"""Host cost of the server's turn, per session: what the device thread spends outside the renderer.

    python perf/bench_turns.py [--sessions 16,64] [--seconds 4] [--chunk-ms 40] [--rate 16000]
                               [--repeat 3] [--profile] [--json out.json]

N sessions, each streaming its own speech at ``--rate`` in ``--chunk-ms`` chunks, run turn by
turn through one `SessionBatcher` (the server's stepper) on the stand-in generator (perf/soak.py)
on the CPU, and the turn's frames are encoded "raw" as the server's worker does. Reported per
session-turn (one session's chunk in one turn): host time of each stage (``prepare``: resampler,
features, windows, with the features the batcher computes for all sessions at once; ``render``: the pooled batches, shared by all sessions; ``complete``: frames,
their audio, silence; ``encode``: raw bytes) and the torch operators launched in each (on a GPU
each is a kernel launch or an allocation, ~5-10 us of host time), with those that read a device
value on the host (``_local_scalar_dense``: ``.item()``, ``bool(tensor)``; a stall on a GPU).
Times are the least of ``--repeat`` runs (a shared machine is noisy); ``--profile`` adds cProfile's
top functions for the largest N.
"""

from __future__ import annotations

import cProfile
import collections
import io
import pstats
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import make_pipeline, stream_parser  # noqa: E402  (puts the repository on sys.path)

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from talkrt.runtime.batching import SessionBatcher  # noqa: E402
from talkrt.runtime.session import Session  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402
from talkrt.runtime.audio import resample  # noqa: E402
from talkrt.serve.worker import DeviceWorker  # noqa: E402

STAGES = ("prepare", "render", "complete", "encode")
SYNCS = {"aten._local_scalar_dense.default"}  # a device value read on the host


class OpCounter(TorchDispatchMode):
    """Counts the torch operators dispatched, by the stage that runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = "other"
        self.ops: collections.Counter = collections.Counter()
        self.names: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[self.stage] += 1
        self.names[(self.stage, str(func))] += 1
        return func(*args, **(kwargs or {}))


def schedule(count: int, seconds: float, chunk_ms: float, rate: int) -> list[list]:
    """Turn t: the t-th chunk of every session's speech (each says something else), then a flush."""
    chunk = round(rate * chunk_ms / 1000)
    clips = [synthetic_speech(seconds, seed=10 + index) for index in range(count)]
    if rate != 16000:
        clips = [resample(torch.from_numpy(clip), 16000, rate).numpy() for clip in clips]
    turns = [[clip[start : start + chunk] for clip in clips] for start in range(0, len(clips[0]), chunk)]
    return [*turns, [None] * count]


def run(pipeline, turns: list[list], rate: int, counter: OpCounter | None = None) -> tuple[dict[str, float], int]:
    """Seconds spent in each stage over all turns, and the frames made."""
    from talkrt.serve.server import encoder

    encode = encoder(90)
    spent = dict.fromkeys(STAGES, 0.0)
    sessions = [Session(pipeline, rate) for _ in turns[0]]
    batcher = SessionBatcher(pipeline)

    def timed(stage: str, function):
        def wrapper(*args, **kwargs):
            if counter is not None:
                counter.stage = stage
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - begin
                if counter is not None:
                    counter.stage = "other"

        return wrapper

    for session in sessions:  # the batcher calls these through the instances
        session.prepare, session.complete = timed("prepare", session.prepare), timed("complete", session.complete)
    batcher._features = timed("prepare", batcher._features)  # the sessions' mel columns, in shared calls
    batcher._render = timed("render", batcher._render)
    # The worker's encoding of a turn's frames, as for sessions that asked for raw frames.
    worker = SimpleNamespace(encode=encode)
    slots = [SimpleNamespace(video=None, frames="raw") for _ in sessions]
    encode_turn = timed("encode", lambda done: DeviceWorker._encode_together(worker, done))
    frames = 0
    for chunks in turns:
        results = batcher.step(list(zip(sessions, chunks)))
        frames += sum(len(pictures) for pictures in encode_turn(list(zip(slots, results))).values())
    return spent, frames


def main(argv: list[str] | None = None) -> int:
    from _machine import machine_info
    from _report import emit, result_header, results_table

    parser = stream_parser(__doc__, renderer=None)
    parser.add_argument("--sessions", default="16,64")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=int, default=16000, help="the sessions' input rate (16000: no resampling)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per N; each stage's time is the least of them")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # the server's device thread; steadier numbers on a small machine
    pipeline = make_pipeline("stand-in")
    run(pipeline, schedule(2, 1.0, args.chunk_ms, args.rate), args.rate)  # warm-up
    rows, results = [], []
    counts = [int(n) for n in args.sessions.split(",")]
    for count in counts:
        turns = schedule(count, args.seconds, args.chunk_ms, args.rate)
        runs = [run(pipeline, turns, args.rate) for _ in range(args.repeat)]
        spent, frames = {stage: min(r[0][stage] for r in runs) for stage in STAGES}, runs[0][1]
        counter = OpCounter()
        with counter:
            run(pipeline, turns, args.rate, counter)
        session_turns = count * len(turns)
        per = {stage: 1e6 * spent[stage] / session_turns for stage in STAGES}
        ops = {stage: counter.ops[stage] / session_turns for stage in STAGES}
        syncs = sum(n for (stage, name), n in counter.names.items() if name in SYNCS) / session_turns
        top = collections.Counter({f"{stage}:{name}": n / session_turns for (stage, name), n in counter.names.items() if stage != "render"})
        results.append({"sessions": count, "turns": len(turns), "frames": frames, "us_per_session_turn": {k: round(v, 1) for k, v in per.items()},
                        "ops_per_session_turn": {k: round(v, 2) for k, v in ops.items()}, "scalar_reads_per_session_turn": round(syncs, 2),
                        "top_ops": {name: round(n, 2) for name, n in top.most_common(15)}})
        host = per["prepare"] + per["complete"] + per["encode"]
        rows.append((str(count), str(frames), *(f"{per[s]:.0f}" for s in STAGES), f"{host:.0f}",
                     *(f"{ops[s]:.1f}" for s in STAGES), f"{syncs:.2f}"))
    columns = [("sessions", "right"), ("frames", "right"), *((f"{s} us", "right") for s in STAGES), ("host us (no render)", "right"),
               *((f"{s} ops", "right") for s in STAGES), ("scalar reads", "right")]
    table = results_table(f"per session-turn: {args.chunk_ms:g} ms chunks at {args.rate} Hz, stand-in, CPU, 1 thread", columns, rows)
    lines = [f"{name}  {n}" for name, n in results[-1]["top_ops"].items()]
    if args.profile:
        turns = schedule(counts[-1], args.seconds, args.chunk_ms, args.rate)
        profile = cProfile.Profile()
        profile.runcall(run, pipeline, turns, args.rate)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
        lines.append(text.getvalue())
    result = {**result_header("turns", machine_info("cpu", [])), "chunk_ms": args.chunk_ms, "rate": args.rate, "seconds": args.seconds, "results": results}
    emit(result, table, args.json, width=170, lines=lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
