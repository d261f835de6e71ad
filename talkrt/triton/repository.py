"""Write a Triton model repository from a directory of exported graphs (`talkrt triton`): one
model per graph (the ONNX file on ONNX Runtime, or its TensorRT engine), the streaming session
model (Python backend, sequence batcher) where an avatar is given, and a README on running and
scaling it. Everything is checked first and written into a temporary folder that is renamed into
place at the end, so a failure leaves no half-written repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.triton.config import RENDER_MODEL, SESSION_MODEL, batch_dim, graph_config, render_config, session_config

IDLE_SECONDS = 60  # a sequence silent this long is dropped by Triton (its client went away)


def _graph_files(models_dir: Path, engines: bool) -> dict[str, tuple[Path, Path | None]]:
    """Model name -> (ONNX file, its engine or None) for every talkrt graph in ``models_dir``."""
    from talkrt.engines.model_files import load_onnx, onnx_spec

    found: dict[str, tuple[Path, Path | None]] = {}
    for onnx_file in sorted(models_dir.glob("*.onnx")):
        spec = onnx_spec(load_onnx(onnx_file), onnx_file)
        name = onnx_file.stem.replace("-", "_")
        engine = None
        if engines:
            engine = next((onnx_file.with_suffix(s) for s in (".engine", ".plan") if onnx_file.with_suffix(s).is_file()), None)
            if engine is None:
                raise TalkrtError(f"--engines: {onnx_file} has no engine beside it; build one with `talkrt build {onnx_file}`")
        if name in found:
            raise TalkrtError(f"{models_dir} holds two graphs named {name}: keep one")
        found[name] = (onnx_file, engine)
        if spec.family is None:
            raise TalkrtError(f"{onnx_file}: its talkrt spec names no family; export it again")
    if not found:
        from talkrt.models.registry import DEFAULT_RENDERER

        raise TalkrtError(f"--from {models_dir} holds no exported graph (*.onnx); export one there with `talkrt export {DEFAULT_RENDERER} --out {models_dir}/{DEFAULT_RENDERER}.onnx`")
    return found


def _renderer_roles(files: dict[str, tuple[Path, Path | None]], renderer: str | None) -> tuple[str, dict[str, str]]:
    """The renderer the graphs serve and role -> model name, through the registry's roles."""
    from talkrt.export.spec import StoredSpec
    from talkrt.models.registry import get_renderer_family, renderer_names
    from talkrt.runtime.renderers import expected_graph

    stored = {name: StoredSpec.from_onnx(onnx_file) for name, (onnx_file, _) in files.items()}
    if renderer is None:
        candidates = [spec.family for spec in stored.values() if spec.family in renderer_names()]
        if not candidates:
            raise TalkrtError(f"--avatar: none of {', '.join(files)} is a renderer's graph ({', '.join(renderer_names())}); export one to stream faces")
        renderer = candidates[0]
    roles: dict[str, str] = {}
    for role in get_renderer_family(renderer).roles:
        want = expected_graph(renderer, role)
        name = next((n for n, spec in stored.items() if (spec.family, spec.graph) == want), None)
        if name is None and role == "generator":
            raise TalkrtError(f"--from holds no {want[0]} graph for the {renderer} renderer's generator; export it with `talkrt export {want[0]}`")
        if name is not None:
            roles[role] = name
    return renderer, roles


def write_repository(out_dir: str | os.PathLike, models_dir: str | os.PathLike, *, engines: bool = False, instances: int = 1,
                     max_batch: int = 8, max_queue_delay_us: int = 100, avatar: str | os.PathLike | None = None,
                     renderer: str | None = None, gpu: bool = True, fps: str = "25", sample_rate: int = 16000,
                     max_sessions: int = 4) -> str:
    """Write the Triton model repository ``out_dir`` (a new or empty folder) for the graphs exported
    to ``models_dir``: TensorRT engines (``engines``: <stem>.engine beside each ONNX file) or the
    ONNX files; ``instances`` per GPU (``gpu=False``: on the CPU), batches of up to ``max_batch``
    after waiting up to ``max_queue_delay_us``. With ``avatar`` (a prepared .npz, an image or a
    video) also the streaming session model, which renders up to ``max_sessions`` sequences per
    instance in shared batches at ``fps`` (audio at ``sample_rate`` unless a sequence says).
    Returns what was written, one line."""
    from talkrt.outputs import check_outputs

    out, source = Path(out_dir), Path(models_dir)
    avatar_path = Path(avatar) if avatar is not None else None
    if not source.is_dir():
        raise TalkrtError(f"--from {source} is not a directory: give the folder the graphs were exported to")
    check_outputs({"DIR": out}, {"--from": source, "--avatar": avatar_path}, directories=["DIR"])
    if out.is_dir() and any(out.iterdir()):
        raise TalkrtError(f"{out} is not empty: give a new folder for the repository (nothing in it is overwritten)")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise TalkrtError(f"{out} is inside --from {source}: write the repository elsewhere")
    for flag, value, low in (("--instances", instances, 1), ("--max-batch", max_batch, 0), ("--max-queue-delay-us", max_queue_delay_us, 0), ("--max-sessions", max_sessions, 1)):
        if value < low:
            raise TalkrtError(f"{flag} {value}: give at least {low}")
    if engines and not gpu:
        raise TalkrtError("--engines runs TensorRT engines, which need a GPU: leave out the CPU choice, or serve the ONNX files")
    if avatar_path is not None and not avatar_path.is_file():
        raise TalkrtError(f"--avatar {avatar_path}: file not found")
    files = _graph_files(source, engines)
    renderer_roles = _renderer_roles(files, renderer) if avatar_path is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        limits = _write(staging, files, engines, instances, max_batch, max_queue_delay_us, gpu)
        written = list(limits)
        if renderer_roles is not None:
            written += _write_session(staging, files, limits, renderer_roles, avatar_path, engines, instances, gpu, fps, sample_rate, max_sessions)
        (staging / "README.md").write_text(_readme(written, gpu))
        if out.is_dir():
            out.rmdir()  # empty (checked above); the staging folder takes its place
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return f"{out}: Triton models {', '.join(written)} and README.md (start: tritonserver --model-repository {out})"


def _write(root: Path, files: dict[str, tuple[Path, Path | None]], engines: bool, instances: int, max_batch: int, delay: int, gpu: bool) -> dict[str, int]:
    """The graph models; returns each one's max_batch_size."""
    from talkrt.engines.sidecar import read_sidecar, sidecar_path
    from talkrt.export.spec import StoredSpec

    limits = {}
    for name, (onnx_file, engine) in files.items():
        spec = StoredSpec.from_onnx(onnx_file)
        version = root / name / "1"
        version.mkdir(parents=True)
        if engine is not None:
            sidecar = read_sidecar(engine)
            profiles = sidecar.get("profiles") or [{}]
            dim = batch_dim(spec)
            # Triton batches up to what every profile's first axis allows
            limit = min((shapes["max"][0] for profile in profiles for shapes in profile.values()), default=None) if dim else None
            shutil.copyfile(engine, version / "model.plan")
            shutil.copyfile(sidecar_path(engine), version / "model.plan.json")  # talkrt's loader checks the engine against it
            text = graph_config(name, spec, platform="tensorrt_plan", max_batch=max_batch, instances=instances, gpu=True,
                                max_queue_delay_us=delay, batch_limit=limit, profiles=len(profiles))
        else:
            shutil.copyfile(onnx_file, version / "model.onnx")
            text = graph_config(name, spec, platform="onnxruntime_onnx", max_batch=max_batch, instances=instances, gpu=gpu, max_queue_delay_us=delay)
        (root / name / "config.pbtxt").write_text(text)
        limits[name] = int(re.search(r"^max_batch_size: (\d+)$", text, re.M).group(1))
    return limits


def _write_session(root: Path, files: dict, limits: dict[str, int], renderer_roles: tuple[str, dict[str, str]], avatar: Path, engines: bool,
                   instances: int, gpu: bool, fps: str, sample_rate: int, max_sessions: int) -> list[str]:
    """The streaming session model and the offline render model (BLS over the graph models), which
    share the model source and the prepared avatar."""
    from talkrt.runtime.align import as_fps
    from talkrt.runtime.runs import load_avatar

    renderer, roles = renderer_roles
    try:
        as_fps(fps)
    except ValueError:
        raise TalkrtError(f"--fps {fps!r}: give a frame rate such as 25 or 30000/1001") from None
    version = root / SESSION_MODEL / "1"
    version.mkdir(parents=True)
    load_avatar(avatar, None, renderer, None).save(version / "avatar.npz")  # prepared once here, not per instance
    shutil.copyfile(Path(__file__).with_name("session_model.py"), version / "model.py")
    model_file = "model.plan" if engines else "model.onnx"
    common = {"renderer": renderer, "backend": "trt" if engines else "ort", "fps": fps, "sample_rate": str(sample_rate),
              "batch_size": "8", "avatar": f"{SESSION_MODEL}/1/avatar.npz"}
    # role -> graph file, relative to the repository: the session runs the same files as the graph models
    models = json.dumps({role: f"{name}/1/{model_file}" for role, name in roles.items()})
    text = session_config(max_sessions=max_sessions, instances=instances, gpu=gpu, idle_seconds=IDLE_SECONDS, parameters={**common, "models": models})
    (root / SESSION_MODEL / "config.pbtxt").write_text(text)

    from talkrt.export.spec import StoredSpec

    render = root / RENDER_MODEL / "1"
    render.mkdir(parents=True)
    shutil.copyfile(version / "model.py", render / "model.py")
    for name in roles.values():  # the graphs' tensors, which the BLS runners need without the ONNX file (an engine repository has none)
        (render / f"{name}.spec.json").write_text(json.dumps(dict(StoredSpec.from_onnx(files[name][0]).data)))
    # the render batch goes to a graph model in one request: no larger than its max_batch_size (0: not batched, any size)
    batch = min([8, *(limits[name] for name in roles.values() if limits[name] > 0)])
    text = render_config(instances=instances, gpu=gpu, parameters={**common, "batch_size": str(batch), "graphs": json.dumps(roles)})
    (root / RENDER_MODEL / "config.pbtxt").write_text(text)
    return [SESSION_MODEL, RENDER_MODEL]


def _readme(models: list[str], gpu: bool) -> str:
    template = Path(__file__).with_name("README.template.md").read_text()
    return template.replace("{models}", "\n".join(f"- `{name}`" for name in models)).replace("{device}", "GPU" if gpu else "CPU")
