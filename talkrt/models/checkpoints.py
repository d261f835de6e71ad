"""Reading official checkpoint containers and loading them strictly.

Research repositories save their weights in different containers: a raw
state_dict, ``{'state_dict': ...}`` (Wav2Lip), ``{'model': ...}`` (VITS),
``{'state_dict': {'net_g': ...}}`` (DINet), often with a ``module.`` prefix left
by DataParallel and with legacy ``weight_g``/``weight_v`` weight-norm names.
This module unwraps all of them and loads strictly, so a wrong or damaged file
fails loudly with a message that says what was expected.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from talkrt.errors import TalkrtError

# Container keys that hold the weights, searched in this order (``net_g`` is the
# generator inside DINet's {'state_dict': {'net_g', 'net_dI', 'net_dV'}}).
CONTAINER_KEYS = ("state_dict", "model", "net_g", "generator", "module")

_WEIGHT_NORM_NAMES = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


def _numpy_safe_globals() -> list:
    """numpy scalars and dtypes are plain data; allowing them lets checkpoints that
    store e.g. ``global_step`` as a numpy integer load without arbitrary unpickling."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: list = [core.multiarray.scalar, np.dtype]
    allowed += [type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")]
    return allowed


# A marker on the scanner's stack, and the opcodes whose argument is a string (STACK_GLOBAL's operands).
_MARK = object()
_STRING_OPCODES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")


class _Bounded:
    """A file's read() capped at its end, so a garbage length field in a damaged pickle
    (up to 2**64) cannot make the scanner allocate that much."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle, self._size = handle, size

    def read(self, n: int = -1) -> bytes:
        remaining = max(self._size - self._handle.tell(), 0)
        return self._handle.read(remaining if n < 0 else min(n, remaining))

    def readline(self) -> bytes:
        return self._handle.readline()

    def tell(self) -> int:
        return self._handle.tell()


def _global_name(module: str, name: str) -> str:
    # Protocol 2 pickles (torch.save's default) may carry Python 2 names; torch maps them the same way.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _pickle_globals(stream: BinaryIO | _Bounded) -> list[str] | None:
    """The globals that one pickle in ``stream`` imports, read opcode by opcode without
    unpickling anything; None when the bytes are not a well-formed pickle.

    The stack is replayed with placeholders (strings kept, for STACK_GLOBAL), so that
    random bytes that happen to decode as opcodes are caught by their inconsistent
    stack and memo use rather than taken for a pickle.
    """
    stack: list[object] = []
    memo: dict[int, object] = {}
    found: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name, before = opcode.name, opcode.stack_before
            if name == "STOP":
                return found if len(stack) == 1 and stack[0] is not _MARK else None
            if name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):  # the top stays on the stack
                if not stack or stack[-1] is _MARK:
                    return None
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    return None
                stack.append(memo[arg])
                continue
            if pickletools.markobject in before or (name == "POP" and stack and stack[-1] is _MARK):
                if _MARK not in stack:
                    return None
                while stack.pop() is not _MARK:
                    pass
                count = before.index(pickletools.markobject) if pickletools.markobject in before else 0
            else:
                count = len(before)
            if len(stack) < count:
                return None
            popped = stack[len(stack) - count :]
            del stack[len(stack) - count :]
            if any(item is _MARK for item in popped):
                return None
            if name in ("GLOBAL", "INST"):
                found.append(_global_name(*str(arg).split(" ", 1)))
            elif name == "STACK_GLOBAL":
                module, qualname = popped
                found.append(f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else "an unnamed global")
            elif name.startswith("EXT"):
                found.append(f"copyreg extension {arg}")
            if name == "MARK":
                stack.append(_MARK)
            elif name in _STRING_OPCODES:
                stack.append(arg)
            else:
                stack.extend([None] * len(opcode.stack_after))
    except Exception:  # pickletools fails on bad bytes with ValueError, UnicodeDecodeError, struct.error...
        return None
    return None


def _legacy_prefixes() -> tuple[bytes, ...]:
    # torch.save before 1.6 (or with _use_new_zipfile_serialization=False) first pickles its magic number.
    return tuple(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p) for p in range(2, 6))


def _file_kind(path: Path) -> str:
    """'zip' (torch.save), 'legacy' (torch.save's older format), 'pickle' (pickle.dump) or 'other'."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as handle:
        head = handle.read(32)
    if head.startswith(_legacy_prefixes()):
        return "legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle's PROTO opcode
        return "pickle"
    return "other"


def _scan_globals(path: Path, kind: str) -> list[str] | None:
    """Every global the checkpoint's pickles import, or None when they are not well-formed."""
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if member is None:
                    return None
                data = archive.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError):
            return None
        stream = io.BytesIO(data)
        found = _pickle_globals(stream)
        return found if found is not None and not stream.read(1) else None
    if kind not in ("legacy", "pickle"):
        return None
    size = path.stat().st_size
    with open(path, "rb") as handle:
        bounded = _Bounded(handle, size)
        # the legacy format is five pickles (magic, version, system info, object, storage keys), then raw storage bytes
        found = []
        for _ in range(5 if kind == "legacy" else 1):
            part = _pickle_globals(bounded)
            if part is None:
                return None
            found += part
        if kind == "pickle" and handle.tell() != size:  # pickle.dump writes nothing after STOP
            return None
    return found


def _allowed_globals() -> set[str]:
    """The globals torch's weights-only loader accepts here (tensor rebuilds, dtypes, storages, ours)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):  # a private helper: without it every global is named
        allowed = set()
    return allowed | {f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}


def _clip(text: str, limit: int = 120) -> str:
    """The first line of ``text``, shortened at a word boundary (a word cut in two reads as a typo)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if len(line) <= limit or " " not in line[:limit]:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def _torch_reason(exc: BaseException) -> str:
    """The cause inside torch's weights-only notice, without the notice around it."""
    message = str(exc)
    if "WeightsUnpickler error:" in message:
        message = message.split("WeightsUnpickler error:", 1)[1]
    return _clip(message.split("Check the documentation of torch.load")[0], 100)


def _directory_error(path: Path) -> TalkrtError:
    candidates = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES)
    inside = f" (it holds {', '.join(candidates[:3])}{', ...' if len(candidates) > 3 else ''})" if candidates else ""
    return TalkrtError(f"{path} is a directory, not a checkpoint file: give the .pth / .pt file itself{inside}")


def _unreadable(path: Path, exc: BaseException, trust: bool) -> TalkrtError:
    """One line for a file the unpickler refused: corrupt, untrusted, or readable only by plain pickle."""
    kind = _file_kind(path)
    found = _scan_globals(path, kind)
    if found is None:
        if kind == "zip":
            return TalkrtError(f"{path} is a zip archive but not a PyTorch checkpoint (no readable data.pkl inside); download or export it again")
        return TalkrtError(f"{path} is not a PyTorch checkpoint: the file is corrupt or another kind of file; download or export it again")
    what = "is a plain pickle (not written by torch.save) that" if kind == "pickle" else "holds more than tensors: it"
    if trust:
        return TalkrtError(f"{path} could not be unpickled ({_clip(f'{type(exc).__name__}: {exc}', 100)})")
    allowed = _allowed_globals()
    untrusted = list(dict.fromkeys(g for g in found if g not in allowed))
    if untrusted:
        named = ", ".join(untrusted[:4]) + (f" and {len(untrusted) - 4} more" if len(untrusted) > 4 else "")
        return TalkrtError(
            f"{path} {what} references {named}, which loading would import and call "
            "(that can run any code): pass --trust-checkpoint only if you trust where the file came from"
        )
    if kind == "pickle":
        return TalkrtError(f"{path} is a plain pickle, not written by torch.save, that the safe loader cannot read ({_torch_reason(exc)}); save the weights with torch.save")
    return TalkrtError(f"{path} could not be read as a checkpoint ({_torch_reason(exc)}); download or export it again")


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> object:
    """Load a checkpoint file onto the CPU.

    Only tensors and plain containers are unpickled unless ``trust`` is set: a
    pickle can run arbitrary code, so that needs the user's explicit consent.
    """
    path = Path(path)
    if path.is_dir():
        raise _directory_error(path)
    if not path.is_file():
        raise TalkrtError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise TalkrtError(f"{path} is empty, not a checkpoint")
    try:
        # torch warns on stderr about e.g. the pickle protocol; the outcome is reported as one TalkrtError instead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if trust:
                if _file_kind(path) == "pickle":  # torch.load expects its magic number first
                    with open(path, "rb") as handle:
                        return pickle.load(handle)
                return torch.load(path, map_location="cpu", weights_only=False)
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as exc:
        if "zip archive" in str(exc) or "central directory" in str(exc):
            raise TalkrtError(f"{path} is truncated or corrupt (its zip archive is unreadable); download it again") from exc
        raise TalkrtError(f"{path} could not be read as a checkpoint ({_clip(str(exc), 160)})") from exc
    except Exception as exc:  # the unpickler fails on garbage with whatever error the bytes lead it to
        raise _unreadable(path, exc, trust) from exc


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the weights inside an official container (see CONTAINER_KEYS)."""
    node = obj
    for _ in range(len(CONTAINER_KEYS) + 1):
        if _is_state_dict(node):
            return dict(node)  # type: ignore[arg-type]
        if not isinstance(node, Mapping):
            break
        inner = next((node[k] for k in CONTAINER_KEYS if k in node), None)
        if inner is None:
            break
        node = inner
    found = sorted(map(str, obj.keys()))[:6] if isinstance(obj, Mapping) else type(obj).__name__
    raise TalkrtError(f"{source} holds no state_dict (looked for a dict of tensors under {', '.join(CONTAINER_KEYS)}; found {found})")


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` that DataParallel / DistributedDataParallel add to every key."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def map_weight_norm_names(state_dict: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Rename legacy ``weight_g``/``weight_v`` to ``parametrizations.weight.original0/1``
    (or back) where the module expects the other spelling; other keys pass unchanged."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in expected:
            for legacy, modern in _WEIGHT_NORM_NAMES.items():
                if key.endswith(legacy) and key[: -len(legacy)] + modern in expected:
                    key = key[: -len(legacy)] + modern
                elif key.endswith(modern) and key[: -len(modern)] + legacy in expected:
                    key = key[: -len(modern)] + legacy
        mapped[key] = value
    return mapped


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def check_compatible(module: nn.Module, state_dict: Mapping[str, torch.Tensor], family: str, source: str) -> None:
    """Raise one line naming the family and the first missing, unexpected and mis-shaped keys."""
    expected = module.state_dict()
    # BatchNorm's num_batches_tracked is absent from some older checkpoints; it does not affect eval.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if not (missing or unexpected or misshaped):
        return
    from talkrt.models.registry import guess_family

    guess = guess_family(state_dict)
    looks = f" (it looks like a {guess} checkpoint)" if guess and family not in guess else ""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. " + ", ".join(f"{k} {_shape(expected[k])}" for k in missing[:3]))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. " + ", ".join(f"{k} {_shape(state_dict[k])}" for k in unexpected[:3]))
    if misshaped:
        parts.append(
            f"{len(misshaped)} with another shape, e.g. "
            + ", ".join(f"{k} {_shape(state_dict[k])} vs {_shape(expected[k])}" for k in misshaped[:3])
        )
    raise TalkrtError(f"{source} does not match {family}{looks}: " + "; ".join(parts))


def load_strict(
    module: nn.Module, checkpoint: str | os.PathLike | Mapping, family: str, trust: bool = False, source: str | None = None
) -> nn.Module:
    """Load an official checkpoint (a path or an already-read object) strictly into ``module``.

    ``source`` names the checkpoint in messages (default: the path). Returns
    ``module`` in eval mode. Nothing is modified on failure.
    """
    source = source or (str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint")
    obj = read_checkpoint(checkpoint, trust) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    state_dict = strip_module_prefix(extract_state_dict(obj, source))
    expected = module.state_dict()
    state_dict = map_weight_norm_names(state_dict, set(expected))
    check_compatible(module, state_dict, family, source)
    for key, value in expected.items():  # fill only what check_compatible tolerates
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = value
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


def read_transformers_weights(directory: str | os.PathLike, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict of a transformers checkpoint directory: model.safetensors, else pytorch_model.bin."""
    directory = Path(directory)
    safetensors_file = directory / "model.safetensors"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_file))
        except Exception as exc:
            raise TalkrtError(f"{safetensors_file} is not a readable safetensors file ({str(exc)[:120]})") from exc
    for name in ("pytorch_model.bin", "model.pt", "model.pth"):
        if (directory / name).is_file():
            return extract_state_dict(read_checkpoint(directory / name, trust), str(directory / name))
    raise TalkrtError(f"{directory} has no model.safetensors or pytorch_model.bin")
