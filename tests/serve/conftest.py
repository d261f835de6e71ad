"""Shared fixtures of the server tests: a real `talkrt serve` process on a free loopback port
(the random-weight Wav2Lip ONNX graph and a synthetic avatar), and its inputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))
from _process import stop_process  # noqa: E402  (perf/_process.py: how an operator stops the server)

STARTUP_DEADLINE_S = 180.0  # loading the graph on a busy 2-core machine
STOP_DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def serve_avatar(tmp_path_factory) -> Path:
    from talkrt.runtime.avatar import synthetic_avatar

    path = tmp_path_factory.mktemp("serve-avatar") / "face.npz"
    synthetic_avatar(num_frames=3).save(path)
    return path


class Server:
    """A running `talkrt serve`: its base URL, its process and what it printed so far."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + "/v1/stream"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after a deadline: that fails the test)."""
        return stop_process(self.process, STOP_DEADLINE_S)


def wait_healthy(server: Server, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"talkrt serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/healthz", headers=headers, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"talkrt serve did not answer /healthz in {STARTUP_DEADLINE_S:.0f} s:\n{server.output()}")


def launch(model: Path | None, avatar: Path, log_dir: Path, *extra_args: str, backend: str = "ort", device: str = "cpu") -> Server:
    """Start `talkrt serve` on a free loopback port and wait for /healthz (``model`` None: the
    torch backend's random weights)."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    args = [sys.executable, "-m", "talkrt", "serve", "--avatar", str(avatar), *(["--model", str(model)] if model else []),
            "--backend", backend, "--device", device, "--port", str(port),
            # this CPU renders slower than real time: admission by load would refuse the tests'
            # second sessions (test_a_busy_device_refuses_new_sessions sets its own --max-load)
            "--max-load", "1", *extra_args]
    with open(log, "wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    server = Server(process, f"http://127.0.0.1:{port}", log)
    token = next((extra_args[i + 1] for i, arg in enumerate(extra_args) if arg == "--token"), None)
    try:
        wait_healthy(server, {"Authorization": f"Bearer {token}"} if token else None)
    except BaseException:
        server.stop()
        raise
    return server


def stop_cleanly(server: Server) -> None:
    code = server.stop()
    assert code == 0, f"talkrt serve exited with {code}:\n{server.output()}"


@pytest.fixture
def serve_factory(wav2lip_onnx, serve_avatar, tmp_path) -> Iterator[Callable[..., Server]]:
    """``serve_factory(*extra_args)`` starts `talkrt serve` with the tiny Wav2Lip ONNX graph and a
    synthetic avatar on a free loopback port, waits for /healthz and returns the Server (its
    ``url`` is the base URL); every server started is stopped with SIGTERM afterwards, and must
    exit 0."""
    servers: list[Server] = []

    def start(*extra_args: str) -> Server:
        servers.append(launch(wav2lip_onnx, serve_avatar, tmp_path, *extra_args))
        return servers[-1]

    yield start
    for server in servers:
        stop_cleanly(server)


@pytest.fixture(scope="module")
def voice_server(wav2lip_onnx, serve_avatar, tiny_voice, tmp_path_factory) -> Iterator[Server]:
    """One server per test module, with the tiny voice loaded (--tts)."""
    server = launch(wav2lip_onnx, serve_avatar, tmp_path_factory.mktemp("serve-log"), "--tts", str(tiny_voice), "--max-sessions", "3")
    yield server
    stop_cleanly(server)


@pytest.fixture
def cuda_server(serve_avatar, tmp_path) -> Iterator[Server]:
    """`talkrt serve --backend torch --device cuda` (random weights, up to 4 sessions); stopped with
    SIGTERM afterwards, and must exit 0."""
    server = launch(None, serve_avatar, tmp_path, "--max-sessions", "4", backend="torch", device="cuda")
    yield server
    stop_cleanly(server)

