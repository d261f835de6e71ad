"""A small /v1/stream client for the tests: start, stream PCM16, collect frames until the end of
an utterance."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

import numpy as np
import websockets

RECEIVE_DEADLINE_S = 120.0  # a 2-core machine renders a second of Wav2Lip in a few seconds


@dataclass
class Received:
    frames: list[dict] = field(default_factory=list)  # frame messages, each with its "jpeg" bytes
    audio: list[dict] = field(default_factory=list)  # audio messages, each with its "pcm" bytes
    end: dict | None = None


def pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def start_message(rate: int = 16000, **fields) -> str:
    return json.dumps({"type": "start", "sample_rate": rate, "format": "pcm16", "frames": "jpeg", **fields})


async def open_session(url: str, rate: int = 16000, frames: str = "jpeg", **connect):
    """A connected WebSocket after start/ready, and the ready message."""
    websocket = await websockets.connect(url, max_size=None, **connect)
    await websocket.send(start_message(rate, frames=frames))
    ready = json.loads(await websocket.recv())
    assert ready["type"] == "ready", ready
    return websocket, ready


async def send_audio(websocket, samples: np.ndarray, chunk: int) -> None:
    data = pcm16(samples)
    for start in range(0, len(data), chunk):
        await websocket.send(data[start : start + chunk].tobytes())


async def receive_until_end(websocket, received: Received | None = None) -> Received:
    """Frames (and audio) until the server's {"type": "end"} message."""
    received = received or Received()

    async def collect() -> Received:
        while True:
            message = json.loads(await websocket.recv())
            if message["type"] == "end":
                received.end = message
                return received
            assert message["type"] in ("frame", "audio"), message
            payload = await websocket.recv()
            assert isinstance(payload, bytes)
            if message["type"] == "frame":
                received.frames.append({**message, "jpeg": payload})
            else:
                received.audio.append({**message, "pcm": payload})

    return await asyncio.wait_for(collect(), RECEIVE_DEADLINE_S)


async def closed_with(websocket) -> tuple[int, str, list[dict]]:
    """Read until the server closes: (close code, close reason, the JSON messages before)."""
    messages: list[dict] = []

    async def collect() -> tuple[int, str, list[dict]]:
        try:
            while True:
                message = await websocket.recv()
                if isinstance(message, str):
                    messages.append(json.loads(message))
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason, messages

    return await asyncio.wait_for(collect(), RECEIVE_DEADLINE_S)


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample of /metrics' text."""
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))
