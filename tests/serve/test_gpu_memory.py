"""On a GPU: a real `talkrt serve --backend torch --device cuda` gives back the memory of the
sessions that leave, whether they end their utterance and stop or drop the connection in the
middle of one."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from clients import metric, open_session, receive_until_end, send_audio

from talkrt.runtime.synthetic import synthetic_speech

pytestmark = pytest.mark.gpu

SESSIONS = 4  # per round (the cuda_server's --max-sessions): half stop after their utterance, half leave in the middle of one
ROUNDS = 3
CHUNK = 640  # 40 ms at 16 kHz
RELEASE_DEADLINE_S = 10.0
TURN_END_S = 0.5  # a step that began before its session left ends within milliseconds on a GPU
# How many turns' frames are alive at once depends on timing, so the caching allocator may take one
# more segment in a later round (a large one is 20 MiB); a leak of frames grows past it.
RESERVED_SLACK = 20 << 20


def gpu_memory(url: str) -> tuple[float, float]:
    """(allocated, reserved) bytes from /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return metric(text, "talkrt_gpu_memory_allocated_bytes"), metric(text, "talkrt_gpu_memory_reserved_bytes")


async def one_session(url: str, number: int) -> None:
    websocket, _ = await open_session(url, frames="raw")
    await send_audio(websocket, synthetic_speech(1.0, seed=number), CHUNK)
    if number % 2:  # leaves mid-utterance, with its state on the device
        await websocket.recv()
        await websocket.close()
        return
    await websocket.send(json.dumps({"type": "flush"}))
    assert len((await receive_until_end(websocket)).frames) == 25
    await websocket.send(json.dumps({"type": "stop"}))
    await websocket.wait_closed()


async def one_round(url: str) -> None:
    await asyncio.wait_for(asyncio.gather(*(one_session(url, number) for number in range(SESSIONS))), 60)


def settled(url: str, allocated_before: float | None) -> tuple[float, float]:
    """GPU memory once no session is open and the last turn has ended; read again while allocated
    is above ``allocated_before``, up to a deadline."""
    deadline = time.monotonic() + RELEASE_DEADLINE_S
    while httpx.get(url + "/healthz", timeout=10).json()["sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(TURN_END_S)
    memory = gpu_memory(url)
    while allocated_before is not None and memory[0] > allocated_before and time.monotonic() < deadline:
        time.sleep(0.1)
        memory = gpu_memory(url)
    return memory


def test_sessions_give_their_gpu_memory_back(cuda_server) -> None:
    """Allocated memory after every round returns exactly to its level after the first (which
    may keep one-time allocations): a session that kept any tensor would add to it each round.
    Reserved memory (the caching allocator's) does not grow past one more segment either."""
    idle = gpu_memory(cuda_server.url)
    rounds: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        asyncio.run(one_round(cuda_server.ws_url))
        rounds.append(settled(cuda_server.url, rounds[0][0] if rounds else None))
    report = f"idle {idle}, after each round (allocated, reserved) {rounds}"
    assert idle[0] > 0, report
    assert all(allocated == rounds[0][0] for allocated, _ in rounds), report
    assert all(reserved <= rounds[0][1] + RESERVED_SLACK for _, reserved in rounds), report
