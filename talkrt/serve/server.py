"""`talkrt serve`: check the options, load the engines once, serve until SIGTERM or Ctrl-C, then
close the sessions with a reason and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from talkrt.errors import TalkrtError
from talkrt.optional import require
from talkrt.serve.config import ServeConfig, check_config

SHUTDOWN_GRACE_S = 5.0  # sessions get this long to take their close frame


def encoder(quality: int) -> Callable:
    """Frames' images (n, H, W, 3) uint8 BGR, on any device -> bytes per frame in the session's
    format: "jpeg", or "raw" (RGB, 3 bytes a pixel, rows top to bottom: the exact frames)."""
    import cv2

    def encode(images, kind: str = "jpeg") -> list[bytes]:
        if kind == "raw":
            return [image.tobytes() for image in images.flip(-1).cpu().numpy()]
        out = []
        for image in images.cpu().numpy():
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            out.append(data.tobytes())
        return out

    return encode


def serve(config: ServeConfig, note: Callable[[str], None] = lambda text: None, ready: Callable[[str], None] = lambda url: None) -> None:
    """Run the server in this thread until it is told to stop; ``ready(url)`` once it listens."""
    check_config(config)
    for module in ("fastapi", "uvicorn", "websockets", "prometheus_client", "psutil"):
        try:
            require(module)
        except TalkrtError as error:
            raise type(error)(f"{error} (`talkrt serve` needs: pip install \"talkrt[serve]\")") from None
    from talkrt.runtime.runs import checked_models, open_pipeline

    request = config.request
    models = checked_models(request, {})
    from talkrt.outputs import check_outputs

    check_outputs({}, {"--tts": config.tts})
    voice = None
    if config.tts is not None:
        from talkrt.models.registry import voice as voice_module

        module = voice_module(config.tts)
        synthesizer, manifest = module.load_voice(config.tts, request.backend, request.device, note)
        voice = (module, synthesizer, manifest)
    pipeline = open_pipeline(request, models, note, profile=False)
    from talkrt.serve.app import Engines, create_app
    from talkrt.serve.metrics import Metrics
    from talkrt.runtime.batching import SessionBatcher
    from talkrt.serve.worker import DeviceWorker, OneAtATime

    # Batched: a turn's frames from every session share the render calls (a session's state stays its own).
    stepper = SessionBatcher(pipeline) if config.batch_sessions else OneAtATime(pipeline.options.batch_size)
    worker = DeviceWorker(pipeline, stepper, encoder(config.jpeg_quality), voice)
    engines = Engines(worker, request.renderer, request.backend, str(pipeline.device), Metrics(lambda: stepper.fill, pipeline.device, worker.load.ratio))
    try:
        _run_uvicorn(create_app(engines, config), engines, config, ready)
    finally:
        worker.stop()
        pipeline.close()


def _run_uvicorn(app, engines, config: ServeConfig, ready: Callable[[str], None]) -> None:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """SIGTERM or Ctrl-C: refuse new sessions, close the open ones with a reason, then stop
        (the signal is not raised again afterwards: the command exits 0)."""

        draining = False

        def handle_exit(self, sig, frame) -> None:
            if self.draining or loop is None:  # a second signal, or one before the server listens: stop now
                self.force_exit = self.draining
                self.should_exit = True
                return
            self.draining = True
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

        async def _drain(self) -> None:
            try:
                await asyncio.wait_for(engines.close_sessions("the server is shutting down"), SHUTDOWN_GRACE_S)
            except asyncio.TimeoutError:
                pass
            self.should_exit = True

        async def startup(self, sockets=None) -> None:
            nonlocal loop
            loop = asyncio.get_running_loop()
            await super().startup(sockets)
            if self.started:
                port = self.servers[0].sockets[0].getsockname()[1] if self.servers else config.port
                host = f"[{config.host}]" if ":" in config.host else config.host
                ready(f"http://{host}:{port}")

    loop: asyncio.AbstractEventLoop | None = None
    server = DrainingServer(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", ws="websockets-sansio",
                                           lifespan="off", timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        server.started = False
    if not server.started:
        raise TalkrtError(f"cannot listen on {config.host}:{config.port} (is the port in use? try another --port)")
