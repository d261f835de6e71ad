"""Live sessions through a real `talkrt serve`: N WebSocket clients at once, audio paced in real time.

    python perf/bench_serve.py [--sessions 1,2,4,8] [--seconds 8] [--chunk-ms 40] [--modes batched,one-at-a-time]
                               [--backend ort|torch] [--device cpu|cuda] [--frames jpeg|raw] [--slack-s 120] [--json out.json]

Makes Wav2Lip with random weights (``--backend ort``: exported to ONNX; ``--backend torch``: the
PyTorch module's own random weights, so a GPU without onnxruntime's CUDA provider runs it) and a
synthetic avatar (8 frames, 256x256) in a temporary directory, and for each mode starts `talkrt
serve --backend B --device D --port 0 --max-sessions max(64, N) --max-load 1`
(``--batch-sessions`` or ``--one-at-a-time``), waits for /healthz, streams one warm-up session
(1 s of audio at once), then for each N opens N sessions on /v1/stream at once. Every client
asks for ``--frames`` (JPEG as a browser would; ``raw`` RGB24 costs the server no encoding, which
otherwise runs on its device thread, about 0.3 ms a frame, and the client no decoding: the
format for finding how many sessions the device carries) and streams ``--seconds`` of its own
speech (PCM16 at 16 kHz) in ``--chunk-ms`` chunks paced in real time (chunk i is sent at begin +
i * chunk, the same begin for all), then flushes and takes frames until ``end``, or until
``--slack-s`` after its audio's length, when it stops there (the frames it missed show in frames
received / expected). At the end the server gets SIGTERM and must exit 0.

The clients run in forked processes of this one, 16 sessions to a process (one asyncio loop
each), so that 128 sessions' frames at 25 fps are taken as they come; their clocks
(time.perf_counter: CLOCK_MONOTONIC) are the machine's, shared. They still share its CPU with
the server.

Per frame k (shown from sample s_k = pts to s_(k+1), one frame period later), with
"sent(x)" the time the chunk carrying sample x - 1 was sent (the flush's time when x lies
past the audio's end):
  - latency = received - sent(s_(k+1)): from the moment the frame's own audio was all sent;
  - deadline miss: received > sent(s_k + lookahead) + one frame period, where lookahead is
    the audio after a frame's start that the renderer needs (Wav2Lip: 212.5 ms), i.e. the
    frame came more than one frame period after the last audio it depends on was sent
    (the server's own talkrt_deadline_misses_total budget, seen from the client).
A session keeps real time when it received all its frames and at most 1 % of them missed their
deadline; the share of such sessions is the row's "real time" (the largest N where every
session keeps it is what one device carries). Time to first frame: first frame received -
first chunk sent. Frames received against expected (num_video_frames of the clip: ceil(seconds
* fps)) per session, summed.

Throughput: aggregate fps = all frames received / (last frame received - common begin).
Before the paced runs, each mode's server serves one session with all its audio sent at once
(``--seconds`` long, in 1 s messages, so its frames fill whole batches): its frames / (last
frame - first chunk sent) is the single-stream maximum. Paced sessions cannot ask for more than N x fps, so a row's efficiency is its
aggregate fps / min(N x fps, single-stream maximum): 1.0 means the server delivered all
that was asked or all the device can do. Memory: the server's resident set (VmRSS) before
the N sessions open and 1 s after the last one closed; on a GPU also the server's
talkrt_gpu_memory_allocated_bytes and _reserved_bytes before, halfway through the audio, and
1 s after the last session closed (allocated after returning to before: the sessions' memory
came back; during - before, over N: what a session holds).

From /metrics, read before and after each N: frames dropped (the difference), the batch
fill of that N alone (talkrt_batch_fill_ratio is since the start, so the run's rows and
slots come from the differences of frames rendered = sent + dropped and of rendered / fill)
and talkrt_device_load_ratio right after the last ``end`` (the device's busy share of the
last 5 s).
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import export_wav2lip, stream_parser  # noqa: E402  (puts the repository on sys.path)

from _machine import REPO, cuda_problem, machine_info  # noqa: E402
from _process import stop_process  # noqa: E402
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL  # noqa: E402
from talkrt.runtime.align import frame_start_sample, num_video_frames  # noqa: E402
from talkrt.runtime.avatar import synthetic_avatar  # noqa: E402
from talkrt.runtime.pipeline import SAMPLE_RATE  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402

MODES = {"batched": "--batch-sessions", "one-at-a-time": "--one-at-a-time"}
STARTUP_DEADLINE_S = 180.0  # loading the graph on a busy 2-core machine
STOP_DEADLINE_S = 60.0
RECEIVE_SLACK_S = 120.0  # after the last chunk, for a machine far slower than real time
SESSIONS_PER_PROCESS = 16  # clients on one asyncio loop: 400 frames a second at 25 fps, far from its limit
BEGIN_MARGIN_S = 0.05  # the common begin, after every client process has been told it
REALTIME_MISS_SHARE = 0.01  # a session keeps real time with at most this share of its frames late (and none missing)
GPU_METRICS = ("talkrt_gpu_memory_allocated_bytes", "talkrt_gpu_memory_reserved_bytes")
METRICS = ("talkrt_frames_sent_total", "talkrt_frames_dropped_total", "talkrt_batch_fill_ratio", "talkrt_device_load_ratio", *GPU_METRICS)
MIB = 1 << 20


@dataclass
class Client:
    """One session: its speech (synthetic, from ``seed``) and timeline (time.perf_counter seconds)."""

    seed: int
    seconds: float
    chunk: int  # samples per message
    length: int = 0  # samples of speech, once streamed
    sent: list[float] = field(default_factory=list)  # when chunk i was sent
    flushed: float = math.nan
    frames: list[tuple[int, float]] = field(default_factory=list)  # (pts, received)
    fps: Fraction = Fraction(25)
    begin: float = math.nan  # when streaming began (the same for sessions opened together)

    def speech(self) -> np.ndarray:
        return synthetic_speech(self.seconds, seed=self.seed)

    def sent_by(self, sample_end: int) -> float:
        """When the audio up to ``sample_end`` (exclusive) had all been sent."""
        return self.flushed if sample_end > self.length else self.sent[(sample_end - 1) // self.chunk]

    def latencies(self) -> list[float]:
        return [received - self.sent_by(frame_start_sample(k + 1, self.fps, SAMPLE_RATE)) for k, (_, received) in enumerate(self.frames)]

    def misses(self, lookahead: int) -> int:
        period = 1 / float(self.fps)
        return sum(received > self.sent_by(pts + lookahead) + period for pts, received in self.frames)

    @property
    def expected(self) -> int:
        return num_video_frames(self.length, self.fps, SAMPLE_RATE)

    def keeps_real_time(self, lookahead: int) -> bool:
        return len(self.frames) == self.expected and self.misses(lookahead) <= REALTIME_MISS_SHARE * self.expected


class Server:
    """`talkrt serve` in a subprocess, its output in a log file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as sink:
            self.process = subprocess.Popen([sys.executable, "-m", "talkrt", "serve", *args], stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
                                            env={**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        """The URL the CLI prints, once /healthz answers."""
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        url = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"talkrt serve exited with {self.process.returncode}:\n{self.log.read_text(errors='replace')}")
            found = re.search(r"listening on (http://\S+)", self.log.read_text(errors="replace"))
            url = url or (found and found.group(1))
            try:
                if url and httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"talkrt serve did not answer /healthz in {STARTUP_DEADLINE_S:.0f} s:\n{self.log.read_text(errors='replace')}")

    def metrics(self) -> dict[str, float]:
        """The few /metrics series read here (label sets summed)."""
        values = dict.fromkeys(METRICS, 0.0)
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            sample = re.fullmatch(r"(\w+)(\{.*\})? (\S+)", line)  # name{labels} value; comments do not match
            if sample and sample.group(1) in values:
                values[sample.group(1)] += float(sample.group(3))
        return values

    def resident_mib(self) -> float:
        """The server process's resident set (VmRSS), MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after a deadline)."""
        return stop_process(self.process, STOP_DEADLINE_S)


async def stream(websocket, client: Client, speech: np.ndarray, begin: float, paced: bool, slack: float) -> None:
    """Send ``speech`` (chunk i at ``begin`` + i * chunk when ``paced``), flush, and take frames
    until ``end``, or until ``slack`` after the speech's length."""

    async def send() -> None:
        pcm = (np.clip(speech, -1.0, 1.0) * 32767.0).round().astype("<i2")
        for number, start in enumerate(range(0, len(pcm), client.chunk)):
            if paced:
                await asyncio.sleep(max(0.0, begin + number * client.chunk / SAMPLE_RATE - time.perf_counter()))
            client.sent.append(time.perf_counter())
            await websocket.send(pcm[start : start + client.chunk].tobytes())
        client.flushed = time.perf_counter()
        await websocket.send(json.dumps({"type": "flush"}))

    async def receive() -> None:
        while True:
            message = json.loads(await websocket.recv())
            if message["type"] == "end":
                return
            if message["type"] != "frame":
                raise RuntimeError(f"unexpected message {message}")
            await websocket.recv()  # the picture
            client.frames.append((message["pts"], time.perf_counter()))

    try:
        await asyncio.wait_for(asyncio.gather(send(), receive()), len(speech) / SAMPLE_RATE + slack)
    except asyncio.TimeoutError:
        pass  # the frames that did not come count as missing


async def client_group(pipe, ws_url: str, clients: list[Client], frames: str, paced: bool, slack: float) -> None:
    """One client process: open its sessions, say ready, stream them all from the begin it is
    sent, then send back the clients with their timelines."""
    sockets = [await websockets.connect(ws_url, max_size=None) for _ in clients]
    try:
        for websocket, client in zip(sockets, clients):
            await websocket.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "format": "pcm16", "frames": frames}))
            ready = json.loads(await websocket.recv())
            if ready["type"] != "ready":
                raise RuntimeError(f"session refused: {ready}")
            client.fps = Fraction(ready["fps"])
        speeches = [client.speech() for client in clients]  # made before the begin: a few ms each
        pipe.send("ready")
        begin = await asyncio.to_thread(pipe.recv)
        for client, speech in zip(clients, speeches):
            client.begin, client.length = begin, len(speech)
        await asyncio.gather(*(stream(websocket, client, speech, begin, paced, slack) for websocket, client, speech in zip(sockets, clients, speeches)))
    finally:
        for websocket in sockets:
            await websocket.close()
    pipe.send(clients)


def client_process(pipe, *args) -> None:
    try:
        asyncio.run(client_group(pipe, *args))
    except BaseException:
        pipe.send(traceback.format_exc())


def answer(pipe, timeout: float):
    """A client process's next message; its traceback raised here."""
    if not pipe.poll(timeout):
        raise RuntimeError(f"a client process said nothing in {timeout:.0f} s")
    message = pipe.recv()
    if isinstance(message, str) and message != "ready":
        raise RuntimeError(f"a client process failed:\n{message}")
    return message


def sessions(ws_url: str, clients: list[Client], frames: str, paced: bool = True, slack: float = RECEIVE_SLACK_S,
             meanwhile: Callable[[float], None] = lambda begin: None) -> list[Client]:
    """Open a session per client, then stream them all from one common begin (``meanwhile(begin)``
    runs here as they stream); the clients with their timelines. Forked processes take
    SESSIONS_PER_PROCESS clients each (this process holds no GPU context: the server has it)."""
    context = multiprocessing.get_context("fork")
    groups = [clients[first : first + SESSIONS_PER_PROCESS] for first in range(0, len(clients), SESSIONS_PER_PROCESS)]
    pipes, processes, done = [], [], False
    for group in groups:
        ours, theirs = context.Pipe()
        processes.append(context.Process(target=client_process, args=(theirs, ws_url, group, frames, paced, slack), daemon=True))
        processes[-1].start()
        theirs.close()
        pipes.append(ours)
    try:
        for pipe in pipes:
            answer(pipe, STARTUP_DEADLINE_S)
        begin = time.perf_counter() + BEGIN_MARGIN_S
        for pipe in pipes:
            pipe.send(begin)
        meanwhile(begin)
        longest = max(client.seconds for client in clients)
        streamed = [client for pipe in pipes for client in answer(pipe, longest + slack + STOP_DEADLINE_S)]
        done = True
        return streamed
    finally:
        for process in processes:  # after a failure the others may wait for a begin that will not come
            process.join(STOP_DEADLINE_S if done else 0)
            if process.is_alive():
                process.kill()


def run_fill(before: dict[str, float], after: dict[str, float]) -> float:
    """The batch fill of the frames rendered between two /metrics reads (the gauge covers the server's whole life)."""
    rendered = [m["talkrt_frames_sent_total"] + m["talkrt_frames_dropped_total"] for m in (before, after)]
    slots = [frames / m["talkrt_batch_fill_ratio"] if frames else 0.0 for frames, m in zip(rendered, (before, after))]
    return (rendered[1] - rendered[0]) / (slots[1] - slots[0]) if slots[1] > slots[0] else math.nan


def aggregate_fps(clients: list[Client]) -> float:
    """All frames received over the time from the common begin to the last frame."""
    last = max(client.frames[-1][1] for client in clients if client.frames)
    return sum(len(client.frames) for client in clients) / (last - clients[0].begin)


def ws_url(server: Server) -> str:
    return "ws" + server.url[len("http"):] + "/v1/stream"


def single_stream_fps(server: Server, seconds: float, frames: str) -> float:
    """One session with all its audio sent at once, in 1 s messages (so that its frames fill the
    server's batches): the most frames per second one stream gets."""
    return aggregate_fps(sessions(ws_url(server), [Client(1000, seconds, SAMPLE_RATE)], frames, paced=False))


def gpu_memory(metrics: dict[str, float], when: str) -> dict[str, float]:
    """The server's GPU memory (MiB) in one /metrics read, keys named for ``when`` it was read."""
    return {f"gpu_{kind}_mib_{when}": round(metrics[f"talkrt_gpu_memory_{kind}_bytes"] / MIB, 1) for kind in ("allocated", "reserved")}


def measure(server: Server, count: int, seconds: float, chunk: int, lookahead_ms: float, single_fps: float, frames: str, slack: float, gpu: bool) -> dict:
    """N paced sessions at once on ``server``: the row of one mode and N."""
    during: dict[str, float] = {}

    def halfway(begin: float) -> None:
        time.sleep(max(0.0, begin + seconds / 2 - time.perf_counter()))
        during.update(server.metrics())

    before, memory_before = server.metrics(), server.resident_mib()
    clients = sessions(ws_url(server), [Client(index, seconds, chunk) for index in range(count)], frames, slack=slack, meanwhile=halfway)
    after = server.metrics()
    time.sleep(1.0)  # the sessions' release runs on the server's loop after the sockets close
    released, memory_after = server.metrics(), server.resident_mib()
    fps = clients[0].fps
    lookahead = math.ceil(lookahead_ms * SAMPLE_RATE / 1000)
    latencies = 1000 * np.array([value for client in clients for value in client.latencies()])
    received = sum(len(client.frames) for client in clients)
    if not received:
        raise RuntimeError(f"{count} sessions: no frame came")
    throughput = aggregate_fps(clients)
    return {
        "sessions": count,
        "aggregate_fps": round(throughput, 1),
        "single_stream_fps": round(single_fps, 1),
        "efficiency": round(throughput / min(count * float(fps), single_fps), 3),
        "realtime_sessions": sum(client.keeps_real_time(lookahead) for client in clients),
        "ttff_ms_p50": round(1000 * float(np.median([c.frames[0][1] - c.sent[0] for c in clients if c.frames])), 1),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1),
        "latency_ms_max": round(float(latencies.max()), 1),
        "deadline_misses_pct": round(100 * sum(client.misses(lookahead) for client in clients) / received, 1),
        "frames_received": received,
        "frames_expected": sum(client.expected for client in clients),
        "batch_fill": round(run_fill(before, after), 3),
        "frames_dropped": int(after["talkrt_frames_dropped_total"] - before["talkrt_frames_dropped_total"]),
        "device_load": round(after["talkrt_device_load_ratio"], 3),
        "rss_mib_before": round(memory_before, 1),
        "rss_mib_after": round(memory_after, 1),
        **({**gpu_memory(before, "before"), **gpu_memory(during, "during"), **gpu_memory(released, "after")} if gpu else {}),
    }


def reading(results: list[dict]) -> list[str]:
    """At the largest N run in both modes, batched against one at a time; and per mode the
    largest N whose every session kept real time."""
    lines = []
    for mode in dict.fromkeys(r["mode"] for r in results):
        carried = [r["sessions"] for r in results if r["mode"] == mode and r["realtime_sessions"] == r["sessions"]]
        lines.append(f"{mode}: every session kept real time up to N = {max(carried)} of those run" if carried else f"{mode}: no N run kept every session real time")
    by = {(r["mode"], r["sessions"]): r for r in results}
    both = [n for (mode, n) in by if mode == "batched" and ("one-at-a-time", n) in by]
    if not both:
        worst = max(results, key=lambda r: r["latency_ms_p99"])
        return [*lines, f"worst p99 frame latency {worst['latency_ms_p99']:.0f} ms ({worst['mode']}, {worst['sessions']} sessions)"]
    n = max(both)
    batched, alone = by["batched", n], by["one-at-a-time", n]
    return [*lines, f"{n} sessions: batched {batched['aggregate_fps']:.1f} fps (efficiency {batched['efficiency']:.2f}), p99 {batched['latency_ms_p99']:.0f} ms, "
                    f"misses {batched['deadline_misses_pct']:.1f}%, fill {batched['batch_fill']:.2f}; one at a time {alone['aggregate_fps']:.1f} fps "
                    f"(efficiency {alone['efficiency']:.2f}), p99 {alone['latency_ms_p99']:.0f} ms, misses {alone['deadline_misses_pct']:.1f}%, fill {alone['batch_fill']:.2f}"]


def run_mode(mode: str, args, graph: list[str], avatar: Path, folder: Path, chunk: int, lookahead_ms: float, counts: list[int]) -> tuple[list[dict], int]:
    """One server in ``mode``: the warm-up session, the single-stream maximum, a row per N; and its exit status."""
    server = Server(["--avatar", str(avatar), *graph, "--backend", args.backend, "--device", args.device, "--port", "0",
                     "--max-sessions", str(max(64, *counts)), "--max-load", "1", MODES[mode]], folder / f"serve-{mode}.log")
    try:
        sessions(ws_url(server), [Client(99, 1.0, chunk)], args.frames, paced=False)
        single_fps = single_stream_fps(server, args.seconds, args.frames)
        rows = [{"mode": mode, **measure(server, count, args.seconds, chunk, lookahead_ms, single_fps, args.frames, args.slack_s, args.device == "cuda")}
                for count in counts]
    finally:
        code = server.stop()
    if code != 0:
        print(f"talkrt serve ({mode}) exited with {code}:\n{(folder / f'serve-{mode}.log').read_text(errors='replace')}", file=sys.stderr)
    return rows, code


def table_of(results: list[dict], args, lookahead_ms: float):
    from _report import results_table

    gpu = args.device == "cuda"
    columns = [("mode", "left"), ("sessions", "right"), ("fps (single max)", "right"), ("efficiency", "right"), ("real time", "right"),
               ("TTFF p50 ms", "right"), ("latency p50 ms", "right"), ("p99 ms", "right"), ("misses", "right"), ("frames / expected", "right"),
               ("batch fill", "right"), ("dropped", "right"), ("device load", "right"), ("RSS MiB before / after", "right"),
               *([("GPU alloc MiB before / during / after", "right"), ("reserved MiB before / after", "right")] if gpu else [])]
    rows = [(r["mode"], str(r["sessions"]), f"{r['aggregate_fps']:.1f} ({r['single_stream_fps']:.1f})", f"{r['efficiency']:.2f}",
             f"{r['realtime_sessions']}/{r['sessions']}", f"{r['ttff_ms_p50']:.0f}", f"{r['latency_ms_p50']:.0f}", f"{r['latency_ms_p99']:.0f}",
             f"{r['deadline_misses_pct']:.1f}%", f"{r['frames_received']}/{r['frames_expected']}", f"{r['batch_fill']:.2f}", str(r["frames_dropped"]),
             f"{100 * r['device_load']:.0f}%", f"{r['rss_mib_before']:.0f} / {r['rss_mib_after']:.0f}",
             *([f"{r['gpu_allocated_mib_before']:.1f} / {r['gpu_allocated_mib_during']:.1f} / {r['gpu_allocated_mib_after']:.1f}",
                f"{r['gpu_reserved_mib_before']:.0f} / {r['gpu_reserved_mib_after']:.0f}"] if gpu else [])) for r in results]
    return results_table(f"talkrt serve: {args.seconds:g} s per session in {args.chunk_ms:g} ms chunks paced in real time, Wav2Lip (random weights), "
                         f"{args.backend}, {args.device}, {args.frames} frames",
                         columns, rows, caption=f"latency from the frame's own audio sent; miss: later than one frame period after the audio it needs "
                                                f"(its start + {lookahead_ms:g} ms lookahead) was sent; real time: sessions with every frame and at most "
                                                f"{100 * REALTIME_MISS_SHARE:g}% of them late")


def main(argv: list[str] | None = None) -> int:
    from _report import emit, result_header

    parser = stream_parser(__doc__, renderer=None)
    parser.add_argument("--sessions", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--modes", default="batched,one-at-a-time")
    parser.add_argument("--backend", choices=("ort", "torch"), default="ort")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--frames", choices=("jpeg", "raw"), default="jpeg")
    parser.add_argument("--slack-s", type=float, default=RECEIVE_SLACK_S, help="how long a session waits for its frames after its audio's length")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if unknown := [mode for mode in modes if mode not in MODES]:
        parser.error(f"--modes {','.join(unknown)}: choose from {','.join(MODES)}")
    if problem := cuda_problem(args.device, ort=args.backend == "ort"):
        parser.error(problem)
    counts = [int(n) for n in args.sessions.split(",")]
    if min(counts) < 1:
        parser.error(f"--sessions {args.sessions}: give counts of at least 1")
    chunk = round(SAMPLE_RATE * args.chunk_ms / 1000)
    lookahead_ms = WAV2LIP_MEL.lookahead_ms(25)  # the same at every frame rate

    results, exit_codes = [], {}
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-serve-") as name:
        folder = Path(name)
        graph = ["--model", str(export_wav2lip(folder))] if args.backend == "ort" else []  # torch: the module's random weights
        avatar = synthetic_avatar(num_frames=8).save(folder / "face.npz")
        for mode in modes:
            rows, exit_codes[mode] = run_mode(mode, args, graph, avatar, folder, chunk, lookahead_ms, counts)
            results += rows

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device == "cuda" and args.backend == "ort" else ["CPUExecutionProvider"]
    result = {**result_header("serve", machine_info(args.device, providers)), "backend": args.backend, "frames": args.frames, "seconds": args.seconds,
              "chunk_ms": args.chunk_ms, "lookahead_ms": lookahead_ms, "slack_s": args.slack_s, "sessions_per_client_process": SESSIONS_PER_PROCESS,
              "server_exit_codes": exit_codes, "results": results}
    emit(result, table_of(results, args, lookahead_ms), args.json, width=200 if args.device == "cuda" else 170, lines=reading(results))
    return 0 if all(code == 0 for code in exit_codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
