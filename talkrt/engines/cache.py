"""Content-addressed engine cache.

An engine is stored under a key made from everything that determines it: the
ONNX sha256, the backend and its exact version, the target (GPU or compute
capabilities), the precision request, the profiles and the versions of the tools
that fold the graph's constants (the folded graph is what the builder parses; it is
a function of the ONNX file and those versions). ``talkrt build`` reuses a
matching entry at once. An entry whose sidecar disagrees with its key (another
runtime version, another GPU, a damaged file) is never served: the lookup says
why, and the build goes on to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from talkrt.fileio import atomic_path, sha256_file, write_text_atomic


def default_root() -> Path:
    return Path(os.environ.get("TALKRT_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "talkrt" / "engines"))


def engine_key(inputs: dict) -> str:
    """sha256 of the canonical JSON of the build inputs (onnx_sha256, backend, target, precision, profiles, options, sanitize)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@dataclass
class Lookup:
    engine: Path | None
    reason: str  # why it was or was not reused, for the user


class EngineCache:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.engine", self.root / f"{key}.engine.json"

    def lookup(self, key: str, inputs: dict) -> Lookup:
        """The cached engine for ``key`` if its sidecar matches ``inputs`` and the file is intact."""
        engine, sidecar_path = self.paths(key)
        if not engine.is_file() or not sidecar_path.is_file():
            return Lookup(None, "not in the cache")
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except json.JSONDecodeError:
            return Lookup(None, f"cache entry {key[:12]} has an unreadable sidecar; rebuilding")
        for field, wanted in inputs.items():
            if sidecar.get("build_inputs", {}).get(field) != wanted:
                found = sidecar.get("build_inputs", {}).get(field)
                return Lookup(None, f"cache entry {key[:12]} was built with {field} {found!r}, not {wanted!r}; rebuilding")
        if sidecar.get("engine_sha256") and sidecar["engine_sha256"] != sha256_file(engine):
            return Lookup(None, f"cache entry {key[:12]} is damaged (its sha256 differs from the sidecar); rebuilding")
        return Lookup(engine, f"reused cached engine {key[:12]}")

    def store(self, key: str, engine: Path, sidecar: dict) -> None:
        cached_engine, cached_sidecar = self.paths(key)
        with atomic_path(cached_engine) as tmp:
            shutil.copyfile(engine, tmp)
        write_text_atomic(cached_sidecar, json.dumps(sidecar, indent=2) + "\n")

    def copy_out(self, key: str, out: Path) -> dict:
        """Put the cached engine and its sidecar at ``out`` (atomically) and return the sidecar."""
        cached_engine, cached_sidecar = self.paths(key)
        with atomic_path(out) as tmp:
            shutil.copyfile(cached_engine, tmp)
        sidecar = json.loads(cached_sidecar.read_text())
        write_text_atomic(f"{out}.json", json.dumps(sidecar, indent=2) + "\n")
        return sidecar
