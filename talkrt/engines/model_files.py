"""What a model file is, found out before it is used: an ONNX graph (of which family and graph),
a TensorRT engine, or neither, so that a wrong file gets one line with the fix instead of a
protobuf or key error from deep inside a runtime."""

from __future__ import annotations

import json
import os
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.export.spec import SPEC_KEY, StoredSpec

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def check_model_path(path: str | os.PathLike, what: str = "model") -> Path:
    path = Path(path)
    if path.is_dir():
        raise TalkrtError(f"{what} {path} is a directory: give the file itself")
    if not path.is_file():
        raise TalkrtError(f"{what} file not found: {path}")
    return path


def load_onnx(path: str | os.PathLike, external_data: bool = False):
    """The ONNX model at ``path``; a file that does not parse is named, with what it may be instead."""
    import onnx

    path = check_model_path(path, "ONNX")
    if is_engine(path):
        raise TalkrtError(f"{path} is a TensorRT engine, not an ONNX file: give the .onnx it was built from")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is damaged or not ONNX
        raise TalkrtError(f"{path} is not a valid ONNX file ({type(exc).__name__}): truncated, or another kind of file; export it again") from None


def is_engine(path: Path) -> bool:
    """An engine by its name or by the sidecar `talkrt build` writes beside every engine."""
    sidecar = Path(f"{path}.json")
    if path.suffix in ENGINE_SUFFIXES:
        return True
    if sidecar.is_file():
        try:
            return "engine_sha256" in json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return False
    return False


def onnx_spec(model, path: Path) -> StoredSpec:
    """The talkrt spec stored in an exported graph; a graph without one is refused in one line."""
    spec = StoredSpec.from_onnx(model)
    if spec is None:
        raise TalkrtError(f"{path} was not exported by talkrt (no {SPEC_KEY} metadata); export it with `talkrt export`")
    return spec


def check_model_file(path: str | os.PathLike, backend: str, expected: tuple[str, str] | None = None) -> StoredSpec | None:
    """Refuse a file the backend cannot run, or a graph other than ``expected`` = (family, graph).

    Returns the talkrt spec read from an ONNX file (ort), so that the runner need not parse it again."""
    path = check_model_path(path)
    if backend == "trt":
        if path.suffix == ".onnx":
            raise TalkrtError(
                f"{path} is an ONNX file, not an engine: build one with `talkrt build {path} --out {path.with_suffix('.engine')}` "
                "and pass that, or run the ONNX file with --backend ort"
            )
        return None
    if backend == "ort":
        if is_engine(path):
            raise TalkrtError(f"{path} is a TensorRT engine: run it with --backend trt, or give --backend ort the .onnx file")
        spec = onnx_spec(load_onnx(path), path)
        if expected is not None and (spec.family, spec.graph) != expected:
            raise TalkrtError(
                f"{path} is talkrt's {_graph_name(spec.family, spec.graph)} graph, not the "
                f"{_graph_name(*expected)} graph needed here: export that with `talkrt export {expected[0]}`"
            )
        return spec
    return None


def _graph_name(family: str | None, graph: str | None) -> str:
    return str(family) if graph in (None, family) else f"{family} {graph}"
