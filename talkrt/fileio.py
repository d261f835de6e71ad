"""Atomic artifact writes: a reader never sees a half-written ONNX file, engine or report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds.

    The temporary file lives in the same directory so the rename is atomic; on any
    error it is removed and ``final`` (new or pre-existing) is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; artifacts get the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(final, text.encode())


def read_json(path: str | os.PathLike, fix: str = "") -> Any:
    """A JSON file's value; a file that cannot be read or parsed is one error naming it and ``fix``."""
    from talkrt.errors import TalkrtError

    then = f"; {fix}" if fix else ""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TalkrtError(f"{path} cannot be read ({exc.strerror or exc}){then}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:120]
        raise TalkrtError(f"{path} is not valid JSON ({reason}){then}") from exc


def read_json_object(path: str | os.PathLike, fix: str = "") -> dict:
    """``read_json`` for files that must hold an object (configs, vocabularies, manifests)."""
    from talkrt.errors import TalkrtError

    data = read_json(path, fix)
    if not isinstance(data, dict):
        raise TalkrtError(f"{path} does not hold a JSON object (a JSON {type(data).__name__}){'; ' + fix if fix else ''}")
    return data


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
