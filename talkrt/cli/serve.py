"""`talkrt serve`: live sessions over HTTP and WebSocket on one set of engines."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import BatchOpt, DeviceOpt, TrustOpt, app, console, note, user_errors
from talkrt.cli.run import FeaturesOpt, LandmarksOpt, PcaOpt, RendererOpt
from talkrt.models.registry import DEFAULT_RENDERER


@app.command()
@user_errors
def serve(
    avatar: Annotated[Path, typer.Option("--avatar", help="Avatar file from `talkrt avatar prepare`, or an image or video to prepare now.")],
    model: Annotated[Optional[Path], typer.Option("--model", help="The renderer's generator: engine (trt), ONNX file (ort) or checkpoint (torch).")] = None,
    engines: Annotated[Optional[Path], typer.Option("--engines", help="Directory with the renderer's graphs as <name>.engine / <name>.onnx.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="trt (engine), ort (ONNX Runtime) or torch.")] = "ort",
    device: DeviceOpt = "auto",
    renderer: RendererOpt = DEFAULT_RENDERER,
    tts_dir: Annotated[Optional[Path], typer.Option("--tts", help="A voice's directory from `talkrt export`: sessions may send text.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; the default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8000,
    token: Annotated[Optional[str], typer.Option("--token", envvar="TALKRT_TOKEN", help="Every request must send Authorization: Bearer TOKEN (or ?token=TOKEN).")] = None,
    max_sessions: Annotated[int, typer.Option("--max-sessions", help="Live sessions open at once; more are refused (WebSocket close 1013).")] = 4,
    max_load: Annotated[float, typer.Option("--max-load", help="Refuse new sessions while the device is busy more than this share of the time (0-1).")] = 0.8,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest /v1/render body, in MB.")] = 50.0,
    batch_size: BatchOpt = 8,
    fps: Annotated[str, typer.Option("--fps", help="Frame rate: 25, 30, 29.97, 30000/1001, ...")] = "25",
    boxes: Annotated[Optional[Path], typer.Option("--boxes", help="Face boxes for an --avatar image or video.")] = None,
    landmarks: LandmarksOpt = None,
    features: FeaturesOpt = None,
    pca: PcaOpt = None,
    trust_checkpoint: TrustOpt = False,
    batch_sessions: Annotated[bool, typer.Option("--batch-sessions/--one-at-a-time", help="Render the frames due in all sessions in shared batches, or each session's on its own.")] = True,
) -> None:
    """Serve live sessions (WebSocket /v1/stream) and renders (POST /v1/render) from models loaded once."""
    from talkrt.runtime.runs import RunRequest
    from talkrt.serve.config import ServeConfig
    from talkrt.serve.server import serve as run_server

    request = RunRequest(avatar, Path("unused.mp4"), boxes=boxes, landmarks=landmarks, renderer=renderer, backend=backend, model=model,
                         engines=engines, device=device, fps=fps, batch_size=batch_size, option_files={"features": features, "pca": pca}, trust=trust_checkpoint)
    config = ServeConfig(request, tts_dir, host, port, token, max_sessions, max_body_mb=max_body_mb, max_load=max_load, batch_sessions=batch_sessions)
    run_server(config, note, ready=lambda url: console.print(f"talkrt serve: listening on {url} (Ctrl-C or SIGTERM to stop)", highlight=False))
    console.print("talkrt serve: stopped", highlight=False)
