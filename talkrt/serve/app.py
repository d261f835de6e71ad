"""The HTTP and WebSocket endpoints (FastAPI) over one device worker: /healthz, /v1/render,
/v1/stream, /metrics, the page at / and /static/*."""


import asyncio
import hmac
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkrt.errors import TalkrtError
from talkrt.serve.config import ServeConfig
from talkrt.serve.live import Limits, LiveSession, refuse
from talkrt.serve.metrics import Metrics
from talkrt.serve.protocol import GOING_AWAY, POLICY, TRY_LATER, ProtocolError, parse_start, parse_text
from talkrt.serve.worker import DeviceWorker

STATIC = Path(__file__).resolve().parent / "static"
START_TIMEOUT_S = 30.0  # a client has this long to send its start message


@dataclass
class Engines:
    """What the server loaded once: the worker owning the pipeline, and what /healthz reports."""

    worker: DeviceWorker
    renderer: str
    backend: str
    device: str
    metrics: Metrics
    live: set = field(default_factory=set)  # LiveSessions open (or admitted and starting)
    closing: bool = False

    async def close_sessions(self, reason: str) -> None:
        """Shutting down: every session gets ``reason`` and close 1001; returns when they are gone."""
        from talkrt.serve.live import Closing

        self.closing = True
        for session in list(self.live):
            if isinstance(session, LiveSession):
                session.end(Closing(GOING_AWAY, reason))
        while self.live:
            await asyncio.sleep(0.02)


def authorized(token: str | None, headers, query) -> bool:
    """``Authorization: Bearer T``, or ``?token=T`` (browsers cannot set a WebSocket's headers)."""
    if token is None:
        return True
    given = headers.get("authorization", "")
    if given.lower().startswith("bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        return True
    return hmac.compare_digest(query.get("token", "").encode(), token.encode())


def create_app(engines: Engines, config: ServeConfig):
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import FileResponse, JSONResponse, Response

    app = FastAPI(title="talkrt serve", docs_url=None, redoc_url=None, openapi_url=None)
    worker, metrics = engines.worker, engines.metrics
    pipeline = worker.pipeline
    height, width = pipeline.compositor.frame_shape[:2]

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if not authorized(config.token, request.headers, request.query_params):
            return JSONResponse({"error": "missing or wrong token: send Authorization: Bearer <token>"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "renderer": engines.renderer, "backend": engines.backend, "device": engines.device,
                "sessions": len(engines.live), "max_sessions": config.max_sessions, "voice": worker.voice is not None}

    @app.get("/metrics")
    async def metrics_text() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def page() -> Response:
        return _static_file(STATIC / "index.html")

    @app.get("/static/{name:path}")
    async def static(name: str) -> Response:
        path = (STATIC / name).resolve()
        if STATIC not in path.parents:
            return JSONResponse({"error": "not found"}, status_code=404)
        return _static_file(path)

    def _static_file(path: Path) -> Response:
        if not path.is_file():
            return JSONResponse({"error": f"{path.name} is not here"}, status_code=404)
        return FileResponse(path)

    @app.post("/v1/render")
    async def render(request: Request) -> Response:
        try:
            body = await _read_body(request, config.max_body_bytes)
        except _TooLarge:
            metrics.renders.labels("too_large").inc()
            return JSONResponse({"error": f"the body is larger than {config.max_body_mb:g} MB (--max-body-mb)"}, status_code=413)
        folder = tempfile.mkdtemp(prefix="talkrt-render-")
        out = Path(folder) / "render.mp4"
        try:
            job = await _render_job(request.headers.get("content-type", ""), body, Path(folder), out)
            await asyncio.wrap_future(worker.call(job))
            video = out.read_bytes()
        except (TalkrtError, ProtocolError) as error:
            metrics.renders.labels("refused").inc()
            reason = str(error).replace(f"'{folder}/audio'", "the body").replace(f"{folder}/audio", "the body")
            return JSONResponse({"error": " ".join(reason.split())}, status_code=400)
        finally:
            for leftover in Path(folder).iterdir():
                leftover.unlink()
            os.rmdir(folder)
        metrics.renders.labels("ok").inc()
        return Response(video, media_type="video/mp4")

    async def _render_job(content_type: str, body: bytes, folder: Path, out: Path):
        """The device job for a render request: audio decoded here (off the event loop), text
        spoken on the device thread as `talkrt run --text` speaks it."""
        from talkrt.runtime.media import read_audio

        if content_type.split(";")[0].strip() == "application/json":
            text = _text_of(body)
            if worker.voice is None:
                raise TalkrtError("no voice is loaded: start the server with --tts DIR to render text")
            module, synthesizer, manifest = worker.voice

            def speak_and_render() -> None:
                samples, rate, _ = module.speak(text, synthesizer, manifest)
                pipeline.write_video(samples, rate, out)

            return speak_and_render
        if not body:
            raise TalkrtError("the body is empty: send an audio file (Content-Type audio/* or application/octet-stream)")
        source = folder / "audio"
        source.write_bytes(body)
        samples, rate = await asyncio.to_thread(read_audio, source)
        return lambda: pipeline.write_video(samples, rate, out)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        if not authorized(config.token, websocket.headers, websocket.query_params):
            metrics.sessions_refused.labels("unauthorized").inc()
            await refuse(websocket, POLICY, "missing or wrong token: send Authorization: Bearer <token> or ?token=")
            return
        if engines.closing:
            metrics.sessions_refused.labels("shutdown").inc()
            await refuse(websocket, GOING_AWAY, "the server is shutting down")
            return
        if len(engines.live) >= config.max_sessions:
            metrics.sessions_refused.labels("max_sessions").inc()
            await refuse(websocket, TRY_LATER, f"{len(engines.live)} sessions already open (--max-sessions {config.max_sessions}); try again later")
            return
        load = engines.worker.load.ratio()
        if engines.live and load > config.max_load:
            metrics.sessions_refused.labels("busy").inc()
            await refuse(websocket, TRY_LATER, f"the device is busy {100 * load:.0f} % of the time with {len(engines.live)} sessions "
                                               f"(--max-load {config.max_load:g}): another would make frames late; try again later")
            return
        admitted = object()
        engines.live.add(admitted)
        try:
            try:
                received = await asyncio.wait_for(websocket.receive(), START_TIMEOUT_S)
                if received["type"] == "websocket.disconnect":
                    return
                if received.get("text") is None:
                    raise ProtocolError("send {\"type\": \"start\", \"sample_rate\": ..., \"format\": \"pcm16\", \"frames\": \"jpeg\"} before any audio")
                start = parse_start(parse_text(received["text"]))
                codec = await _codec_of(start.frames)
            except ProtocolError as error:
                metrics.sessions_refused.labels("protocol").inc()
                await refuse(websocket, error.code, error.reason)
                return
            except asyncio.TimeoutError:
                metrics.sessions_refused.labels("no_start").inc()
                await refuse(websocket, POLICY, f"no start message within {START_TIMEOUT_S:g} s")
                return
            limits = Limits(max_message_samples=int(config.max_message_seconds * start.sample_rate),
                            max_pending_samples=int(config.max_pending_seconds * start.sample_rate),
                            max_queued_frames=max(1, int(config.queue_seconds * float(pipeline.fps))),
                            stall_seconds=config.stall_seconds)
            session = LiveSession(websocket, worker, metrics, start, limits, pipeline.fps)
            engines.live.discard(admitted)
            engines.live.add(session)
            admitted = session
            await websocket.send_text(_ready(session.id, start.sample_rate, codec))
            await session.run()
        finally:
            engines.live.discard(admitted)
            if isinstance(admitted, LiveSession):  # gone before its run (the ready message failed): leave the worker too
                worker.remove(admitted.slot)

    async def _codec_of(frames: str) -> str | None:
        """For "h264", what a WebCodecs VideoDecoder is configured with before the first packet."""
        if frames != "h264":
            return None
        from talkrt.serve.h264 import codec_string
        from talkrt.serve.protocol import UNSUPPORTED

        try:
            return await asyncio.to_thread(codec_string, width, height, pipeline.fps)
        except Exception as error:  # e.g. a PyAV built without libx264
            raise ProtocolError(f"this server cannot encode H.264 ({type(error).__name__}: {error}): ask for \"jpeg\" or \"raw\"", UNSUPPORTED) from None

    def _ready(session: str, rate: int, codec: str | None) -> str:
        from talkrt.serve.protocol import message

        return message("ready", session=session, fps=str(pipeline.fps), sample_rate=rate, width=width, height=height,
                       **({} if codec is None else {"codec": codec}))

    return app


class _TooLarge(Exception):
    pass


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge()
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _TooLarge()
        parts.append(part)
    return b"".join(parts)


def _text_of(body: bytes) -> str:
    import json

    try:
        request = json.loads(body)
    except ValueError:
        raise TalkrtError("the JSON body does not parse: send {\"text\": \"...\"}") from None
    text = request.get("text") if isinstance(request, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise TalkrtError("send {\"text\": \"...\"} with something to say")
    return text
