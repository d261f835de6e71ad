"""Live sessions through Triton Inference Server against the same sessions in process: what serving
through Triton costs per frame.

    python perf/bench_triton.py [--sessions 1,2] [--seconds 3] [--chunk-ms 40] [--json out.json]

Exports Wav2Lip with random weights to ONNX and a synthetic avatar (8 frames) into a temporary
directory, writes a Triton repository there (`talkrt.triton.write_repository`, on the CPU, the
session model taking up to max(--sessions) sequences per instance) and starts the nvidia-pytriton
wheel's `tritonserver` on loopback with the session model (Python backend; ONNX Runtime on the
CPU inside it). For each N, N clients stream ``--seconds`` of their own speech in ``--chunk-ms``
chunks paced in real time (chunk i sent at begin + i * chunk, the same begin for all), each from
its own thread with its own gRPC client, one request per chunk (the last with END, which flushes).
The same N sessions then run in this process on one pipeline: at each chunk's time the sessions'
chunks go to one SessionBatcher step (what the session model does with the requests of one
execute call), once with torch's default threads and once with torch on one thread: on two
busy CPU cores a run once had ONNX Runtime several times slower in a plain Python process with
torch's default threads than with one (not reproduced since), so the overhead is taken against
the faster of the two.

Per row: aggregate fps (frames / (last response - begin)), call time p50 and p99 (from a chunk
sent to its frames back, ms), call time per frame (all call time / frames) and, for Triton, the
overhead per frame: its call time per frame minus the faster in-process one at the same N (gRPC, the
server's queues, the copies into and out of the Python backend stub), and the median time of
the calls whose chunk completed no frame (a call's fixed cost, rendering aside). The clients run on the same
machine and take CPU from the server. CPU only: no GPU here.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import export_wav2lip, stream_parser  # noqa: E402  (puts the repository on sys.path)

from _machine import machine_info  # noqa: E402
from talkrt.runtime.avatar import synthetic_avatar  # noqa: E402
from talkrt.runtime.pipeline import SAMPLE_RATE  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402


def chunks_of(audio: np.ndarray, chunk: int) -> list[np.ndarray]:
    return [audio[start : start + chunk] for start in range(0, len(audio), chunk)]


def triton_session(url: str, sequence: int, chunks: list[np.ndarray], begin: float, calls: list) -> None:
    """One paced client: (sent, received, frames) per chunk into ``calls``."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    for number, chunk in enumerate(chunks):
        time.sleep(max(0.0, begin + number * len(chunks[0]) / SAMPLE_RATE - time.perf_counter()))
        audio = grpcclient.InferInput("AUDIO", [1, len(chunk)], "FP32")
        audio.set_data_from_numpy(chunk[None])
        sent = time.perf_counter()
        result = client.infer("talkrt_session", [audio], sequence_id=sequence, sequence_start=number == 0, sequence_end=number == len(chunks) - 1)
        calls.append((sent, time.perf_counter(), result.as_numpy("FRAMES").shape[1]))
    client.close()


def run_triton(url: str, streams: list[list[np.ndarray]], first_id: int) -> tuple[float, list]:
    calls: list = []
    begin = time.perf_counter() + 0.2
    threads = [threading.Thread(target=triton_session, args=(url, first_id + index, chunks, begin, calls)) for index, chunks in enumerate(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return begin, calls


def run_in_process(pipeline, streams: list[list[np.ndarray]]) -> tuple[float, list]:
    """The same paced sessions on one pipeline: each tick's chunks in one SessionBatcher step."""
    from talkrt.runtime.batching import SessionBatcher
    from talkrt.runtime.session import Session

    batcher = SessionBatcher(pipeline)
    sessions = [Session(pipeline, SAMPLE_RATE) for _ in streams]
    calls: list = []
    begin = time.perf_counter()
    for number in range(max(len(chunks) for chunks in streams)):
        time.sleep(max(0.0, begin + number * len(streams[0][0]) / SAMPLE_RATE - time.perf_counter()))
        live = [(session, chunks) for session, chunks in zip(sessions, streams) if number < len(chunks)]
        sent = time.perf_counter()
        results = batcher.step([(session, chunks[number]) for session, chunks in live])
        ending = [(index, session) for index, (session, chunks) in enumerate(live) if number == len(chunks) - 1]
        if ending:
            for (index, _), frames in zip(ending, batcher.step([(session, None) for _, session in ending])):
                results[index] = results[index] + frames
        received = time.perf_counter()
        calls += [(sent, received, sum(len(f.images) for f in frames)) for frames in results]
    return begin, calls


def row(how: str, count: int, begin: float, calls: list) -> dict:
    times = 1000 * np.array([received - sent for sent, received, _ in calls])
    empty = [t for t, (_, _, n) in zip(times, calls) if n == 0]  # calls that completed no frame: the fixed cost of a call
    frames = sum(n for _, _, n in calls)
    return {"how": how, "sessions": count, "frames": frames,
            "aggregate_fps": round(frames / (max(received for _, received, _ in calls) - begin), 1),
            "call_ms_p50": round(float(np.percentile(times, 50)), 1), "call_ms_p99": round(float(np.percentile(times, 99)), 1),
            "call_ms_per_frame": round(float(times.sum()) / frames, 2),
            "empty_call_ms_p50": round(float(np.median(empty)), 2) if empty else None}


def main(argv: list[str] | None = None) -> int:
    from _report import emit, result_header, results_table
    from talkrt.runtime.runs import RunRequest, open_pipeline
    from talkrt.triton.repository import write_repository
    import torch

    from talkrt.triton.server import LocalTriton

    parser = stream_parser(__doc__, renderer=None)
    parser.add_argument("--sessions", default="1,2")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.sessions.split(",")]
    chunk = round(SAMPLE_RATE * args.chunk_ms / 1000)
    results = []
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-triton-") as name:
        folder = Path(name)
        (folder / "models").mkdir()
        export_wav2lip(folder / "models")
        avatar = synthetic_avatar(num_frames=8).save(folder / "face.npz")
        write_repository(folder / "repo", folder / "models", avatar=avatar, gpu=False, max_sessions=max(counts))
        warm = [chunks_of(synthetic_speech(1.0, seed=99), SAMPLE_RATE)]
        server = LocalTriton(folder / "repo", folder / "server", models=["talkrt_session"])
        try:
            run_triton(server.grpc_url, warm, 1000)
            for count in counts:
                streams = [chunks_of(synthetic_speech(args.seconds, seed=index), chunk) for index in range(count)]
                results.append(row("triton", count, *run_triton(server.grpc_url, streams, 1 + 100 * count)))
        finally:
            code = server.stop()
        request = RunRequest(avatar=folder / "repo" / "talkrt_session" / "1" / "avatar.npz", backend="ort", device="cpu")
        pipeline = open_pipeline(request, {"generator": folder / "repo" / "wav2lip" / "1" / "model.onnx"}, profile=False)
        default_threads = torch.get_num_threads()
        try:
            run_in_process(pipeline, warm)
            for how, threads in (("in process", default_threads), ("in process, torch 1 thread", 1)):
                torch.set_num_threads(threads)
                for count in counts:
                    streams = [chunks_of(synthetic_speech(args.seconds, seed=index), chunk) for index in range(count)]
                    results.append(row(how, count, *run_in_process(pipeline, streams)))
        finally:
            pipeline.close()
            torch.set_num_threads(default_threads)  # the machine info below records torch's default
    for r in results:
        if r["how"] == "triton":  # against the faster in-process row: the overhead is not understated
            local = min(q["call_ms_per_frame"] for q in results if q["how"] != "triton" and q["sessions"] == r["sessions"])
            r["overhead_ms_per_frame"] = round(r["call_ms_per_frame"] - local, 2)
    results.sort(key=lambda r: (r["sessions"], r["how"]))
    columns = [("sessions", "right"), ("how", "left"), ("fps", "right"), ("call p50 ms", "right"), ("call p99 ms", "right"), ("call ms / frame", "right"), ("overhead ms / frame", "right"), ("frameless call p50 ms", "right")]
    rows = [(str(r["sessions"]), r["how"], f"{r['aggregate_fps']:.1f}", f"{r['call_ms_p50']:.0f}", f"{r['call_ms_p99']:.0f}", f"{r['call_ms_per_frame']:.1f}",
             f"{r['overhead_ms_per_frame']:+.1f}" if "overhead_ms_per_frame" in r else "",
             "n/a" if r["empty_call_ms_p50"] is None else f"{r['empty_call_ms_p50']:.1f}") for r in results]
    table = results_table(f"Triton session model against in process: {args.seconds:g} s per session in {args.chunk_ms:g} ms chunks paced in real time, Wav2Lip (random weights), ort, cpu",
                          columns, rows, caption="call: a chunk sent to its frames back; overhead: Triton's call time per frame minus the faster in-process row at the same N; "
                                  "frameless: calls whose chunk completed no frame (the fixed cost of a call)")
    result = {**result_header("triton", machine_info("cpu", ["CPUExecutionProvider"])), "seconds": args.seconds, "chunk_ms": args.chunk_ms,
              "server_exit_code": code, "results": results}
    worst = max((r for r in results if r["how"] == "triton"), key=lambda r: r["overhead_ms_per_frame"])
    emit(result, table, args.json, width=150, lines=[f"largest overhead: {worst['overhead_ms_per_frame']:+.1f} ms per frame at {worst['sessions']} sessions"])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
