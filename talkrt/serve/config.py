"""What a server is told: the pipeline's request and the server's own limits, checked before
anything loads."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.runtime.runs import RunRequest, check_pipeline_choices

MIN_RATE, MAX_RATE = 8000, 48000  # sample rates a live session may declare


@dataclass(frozen=True)
class ServeConfig:
    """``request`` names the avatar, renderer, graphs, backend, device, fps and batch size (its
    speech and output fields are unused); the rest are the server's limits."""

    request: RunRequest
    tts: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_sessions: int = 4
    max_load: float = 0.8  # refuse new sessions while the device works more than this share of the time
    max_body_mb: float = 50.0
    max_message_seconds: float = 2.0  # audio in one WebSocket message
    max_pending_seconds: float = 10.0  # audio received but not yet rendered, per session
    queue_seconds: float = 2.0  # frames waiting to be sent, per session: older ones are dropped
    stall_seconds: float = 10.0  # a client that takes no frame for this long is closed
    jpeg_quality: int = 90
    batch_sessions: bool = True  # the sessions' frames of a turn rendered in shared batches

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def check_config(config: ServeConfig) -> None:
    """One line per mistake, before any model loads."""
    check_pipeline_choices(config.request)
    if not 0 <= config.port <= 65535:
        raise TalkrtError(f"--port {config.port}: give a port from 0 (any free port) to 65535")
    if config.max_sessions < 1:
        raise TalkrtError(f"--max-sessions {config.max_sessions}: give at least 1")
    if not (math.isfinite(config.max_load) and 0 < config.max_load <= 1):
        raise TalkrtError(f"--max-load {config.max_load}: give a share of the device's time above 0 and at most 1 (0.8 leaves headroom)")
    if not (math.isfinite(config.max_body_mb) and config.max_body_mb > 0):
        raise TalkrtError(f"--max-body-mb {config.max_body_mb}: give a size above 0")
    if config.token is not None and not config.token.strip():
        raise TalkrtError("--token is empty: give a secret string, or leave the option out")
    if not 1 <= config.jpeg_quality <= 100:
        raise TalkrtError(f"--jpeg-quality {config.jpeg_quality}: give 1 to 100")
    if not config.host:
        raise TalkrtError("--host is empty: give an address such as 127.0.0.1")
    try:
        ipaddress.ip_address(config.host)
    except ValueError:
        if config.host != "localhost":
            raise TalkrtError(f"--host {config.host}: give an IP address to bind, such as 127.0.0.1 or 0.0.0.0") from None
