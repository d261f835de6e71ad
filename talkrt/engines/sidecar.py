"""An engine's JSON sidecar: where it lives, the keys loading relies on, and the `talkrt build` line that remakes the engine.

The lowest module of the engine layer: devices, backends, build and the TensorRT
runner all read sidecars, and this module imports none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.fileio import read_json, sha256_file

# The builders an engine (and so its sidecar) can come from.
ENGINE_BUILDERS = ("tensorrt-rtx", "tensorrt")

__all__ = ["ENGINE_BUILDERS", "REQUIRED_SIDECAR_KEYS", "read_sidecar", "rebuild_command", "sidecar_path"]


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(f"{engine}.json")


# What loading an engine relies on; anything else in the sidecar is informational.
REQUIRED_SIDECAR_KEYS = ("backend", "target", "engine_bytes", "engine_sha256")


def rebuild_command(engine: str | os.PathLike, sidecar: dict) -> str:
    """The `talkrt build` line that makes ``engine`` again, from what its sidecar still says."""
    backend = sidecar.get("backend")
    name = backend.get("name") if isinstance(backend, dict) else None
    command = f"talkrt build {sidecar.get('onnx') or 'MODEL.onnx'} --out {engine}"
    return f"{command} --backend {name}" if name in ENGINE_BUILDERS else command


def read_sidecar(engine: str | os.PathLike, *, verify: bool = False) -> dict:
    """The sidecar of ``engine``, with the keys loading relies on checked.

    ``verify``: also refuse an engine whose size or sha256 differs from the sidecar's
    (damaged, truncated or replaced); the size is compared first, as it costs nothing.
    """
    path = sidecar_path(engine)
    if not path.is_file():
        raise TalkrtError(f"{engine} has no sidecar {path.name}; rebuild it with: talkrt build MODEL.onnx --out {engine}")
    sidecar = read_json(path, "rebuild the engine")
    if not isinstance(sidecar, dict):
        raise TalkrtError(f"{path} is not an engine sidecar (a JSON {type(sidecar).__name__}, not an object); rebuild the engine with: talkrt build MODEL.onnx --out {engine}")
    missing = [key for key in REQUIRED_SIDECAR_KEYS if key not in sidecar]
    backend = sidecar.get("backend")
    if "backend" not in missing:
        if not isinstance(backend, dict):
            missing.append("backend.name")
        else:
            missing += [f"backend.{key}" for key in ("name", "version") if key not in backend]
    if missing:
        raise TalkrtError(f"{path} lacks {', '.join(repr(k) for k in missing)}; rebuild the engine with: {rebuild_command(engine, sidecar)}")
    if backend["name"] not in ENGINE_BUILDERS:
        raise TalkrtError(f"{path} names backend {backend['name']!r}, not one of {', '.join(ENGINE_BUILDERS)}; rebuild the engine with: {rebuild_command(engine, sidecar)}")
    if verify:
        _verify_engine(Path(engine), sidecar)
    return sidecar


def _verify_engine(engine: Path, sidecar: dict) -> None:
    """Refuse an engine file that is not the one its sidecar describes, before anything deserialises it."""
    size = engine.stat().st_size
    if size != sidecar["engine_bytes"]:
        found = f"it has {size:,} bytes, the sidecar says {sidecar['engine_bytes']:,}" if isinstance(sidecar["engine_bytes"], int) else f"it has {size:,} bytes"
    elif sha256_file(engine) != sidecar["engine_sha256"]:
        found = "its sha256 differs from the sidecar's"
    else:
        return
    raise TalkrtError(f"{engine} does not match its sidecar {sidecar_path(engine).name} ({found}): damaged or replaced; rebuild it with: {rebuild_command(engine, sidecar)}")
