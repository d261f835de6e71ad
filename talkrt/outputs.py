"""Where a command will write, checked before it starts any work.

An output is never one of the command's inputs (the same file after resolving links,
hard links included), never an existing directory where a file is meant (or the
reverse), and its folder can be created and written to. Each problem is one
`TalkrtError` line naming the option, the path and the fix, raised before a model
loads, so nothing is half-written and no input is ever replaced.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Union

from talkrt.errors import TalkrtError

PathLike = Union[str, os.PathLike]
Paths = Union[None, PathLike, Iterable[PathLike]]


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same inode if both exist, else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _as_list(paths: Paths) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths if p is not None]


def check_outputs(outputs: Mapping[str, Paths], inputs: Mapping[str, Paths] = {}, *, directories: Iterable[str] = ()) -> None:
    """Refuse, before any work, outputs that would destroy an input or cannot be written.

    ``outputs`` and ``inputs`` map an option's name (``--out``) to its path or paths;
    outputs named in ``directories`` are folders the command fills, the rest are files.
    """
    folders = set(directories)
    named_inputs = [(flag, path) for flag, paths in inputs.items() for path in _as_list(paths)]
    written: list[tuple[str, Path]] = []
    for flag, paths in outputs.items():
        for out in _as_list(paths):
            for in_flag, source in named_inputs:
                if same_file(out, source):
                    raise TalkrtError(f"{flag} {out} is the input {in_flag} {source}: writing it would destroy that file; choose another output path")
            for other_flag, other in written:
                if same_file(out, other):
                    raise TalkrtError(f"{flag} {out} is also the output of {other_flag}: one would overwrite the other; choose two paths")
            _check_location(flag, out, flag in folders)
            written.append((flag, out))


def _check_location(flag: str, out: Path, folder: bool) -> None:
    if out.is_dir() and not folder:
        raise TalkrtError(f"{flag} {out} is a directory: give the path of a file (inside it, if you like)")
    if out.exists() and not out.is_dir() and folder:
        raise TalkrtError(f"{flag} {out} is a file, not a folder: give a folder path")
    parent = out if folder and out.is_dir() else out.parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise TalkrtError(f"{flag} {out}: cannot create its folder, {existing} is a file")
    _probe_writable(flag, out, existing)


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(flag: str, out: Path, folder: Path) -> None:
    """Create and remove a file where the output (or its first missing folder) will go: the only
    test that holds for read-only mounts, immutable folders and other users' folders alike."""
    try:
        fd, name = tempfile.mkstemp(prefix=".talkrt-probe.", dir=folder)
    except OSError as error:
        reason = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "read-only file system", errno.ENOSPC: "no space left"}.get(error.errno, error.strerror)
        raise TalkrtError(f"{flag} {out}: cannot write into {folder} ({reason}); choose a folder you can write to") from None
    os.close(fd)
    os.unlink(name)
