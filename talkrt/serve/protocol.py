"""The WebSocket protocol of /v1/stream (docs/serve.md): what a client may send, checked, and
what the server answers. Pure functions: no server, no device."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from talkrt.serve.config import MAX_RATE, MIN_RATE

# WebSocket close codes the server uses
POLICY = 1008  # a message breaks the protocol
UNSUPPORTED = 1003  # data the server does not take (a format, an odd byte count)
SERVER_ERROR = 1011
TRY_LATER = 1013  # --max-sessions reached
GOING_AWAY = 1001  # the server is shutting down

CLIENT_TYPES = ("start", "flush", "interrupt", "text", "stop")


class ProtocolError(Exception):
    """A client's mistake: the session gets ``{"type": "error", "reason"}`` and closes with ``code``."""

    def __init__(self, reason: str, code: int = POLICY) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


# raw: RGB24, rows top to bottom, the ready message's width x height; h264: one Annex-B packet a frame
FRAME_FORMATS = ("jpeg", "raw", "h264")


@dataclass(frozen=True)
class Start:
    sample_rate: int
    idle: bool
    frames: str = "jpeg"


def parse_text(text: str) -> dict[str, Any]:
    """A client's text message: a JSON object with a known ``type``."""
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("a text message must be a JSON object, e.g. {\"type\": \"flush\"}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a text message must be a JSON object with a \"type\"")
    if message["type"] not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {message['type']!r}; expected one of {', '.join(CLIENT_TYPES)}")
    return message


def parse_start(message: dict[str, Any]) -> Start:
    """The first message: the audio the client will send and the frames it wants."""
    if message.get("type") != "start":
        raise ProtocolError(f"the first message must be {{\"type\": \"start\", ...}}, not {message.get('type')!r}")
    rate = message.get("sample_rate", 16000)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(f"sample_rate {rate!r}: give an integer from {MIN_RATE} to {MAX_RATE} Hz")
    if message.get("format", "pcm16") != "pcm16":
        raise ProtocolError(f"format {message.get('format')!r} is not supported: send \"pcm16\" (mono, little-endian)", UNSUPPORTED)
    frames = message.get("frames", "jpeg")
    if frames not in FRAME_FORMATS:
        raise ProtocolError(f"frames {frames!r} is not supported: ask for \"jpeg\", \"raw\" (RGB24) or \"h264\" (Annex-B)", UNSUPPORTED)
    idle = message.get("idle", False)
    if not isinstance(idle, bool):
        raise ProtocolError(f"idle {idle!r}: give true or false")
    return Start(rate, idle, frames)


def parse_text_request(message: dict[str, Any], max_chars: int = 2000) -> str:
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError("a text message needs {\"type\": \"text\", \"text\": \"...\"} with something to say")
    if len(text) > max_chars:
        raise ProtocolError(f"the text is {len(text)} characters; send at most {max_chars} at a time")
    return text


def decode_pcm16(data: bytes, max_samples: int) -> np.ndarray:
    """A binary message: PCM16 mono little-endian -> float32 in [-1, 1)."""
    if len(data) % 2:
        raise ProtocolError(f"an audio message of {len(data)} bytes: PCM16 needs an even count", UNSUPPORTED)
    if len(data) // 2 > max_samples:
        raise ProtocolError(f"an audio message of {len(data) // 2} samples; send at most {max_samples} per message")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})
