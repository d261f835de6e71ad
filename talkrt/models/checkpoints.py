"""Reading official checkpoint containers and loading them strictly.

Research repositories save their weights in different containers: a raw
state_dict, ``{'state_dict': ...}`` (Wav2Lip), ``{'model': ...}`` (VITS),
``{'state_dict': {'net_g': ...}}`` (DINet), often with a ``module.`` prefix left
by DataParallel and with legacy ``weight_g``/``weight_v`` weight-norm names.
This module unwraps all of them and loads strictly, so a wrong or damaged file
fails loudly with a message that says what was expected.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from talkrt.errors import TalkrtError

# Container keys that hold the weights, searched in this order (``net_g`` is the
# generator inside DINet's {'state_dict': {'net_g', 'net_dI', 'net_dV'}}).
CONTAINER_KEYS = ("state_dict", "model", "net_g", "generator", "module")

# Top-level module names that identify a family, to tell users what they passed.
FAMILY_SIGNATURES: dict[str, frozenset[str]] = {
    "wav2lip": frozenset({"face_encoder_blocks", "audio_encoder", "face_decoder_blocks", "output_block"}),
    "wav2lip syncnet (lip-sync expert)": frozenset({"face_encoder", "audio_encoder"}),
    "dinet": frozenset({"source_in_conv", "ref_in_conv", "trans_conv", "audio_encoder", "appearance_conv_list", "adaAT", "out_conv"}),
    "dhlive-render": frozenset({"source_in_conv", "ref_in_conv", "trans_conv", "appearance_conv_list", "adaAT", "out_conv"}),
    "dhlive-mini v1": frozenset({"source_in_conv", "ref_in_conv", "trans_conv", "appearance_conv", "adaAT", "out_conv"}),
    "dhlive-mini v2": frozenset({"appearance_encoder", "motion_encoder", "decoder_blocks", "final_conv"}),
    "dhlive-audio": frozenset({"downsample", "LSTM", "fc"}),
    "vits (original)": frozenset({"enc_p", "dec", "flow", "dp", "enc_q"}),
    "vits (transformers)": frozenset({"text_encoder", "decoder", "flow", "duration_predictor", "posterior_encoder"}),
    "hubert / wav2vec2": frozenset({"feature_extractor", "feature_projection", "encoder"}),
}

_WEIGHT_NORM_NAMES = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


def _numpy_safe_globals() -> list:
    """numpy scalars and dtypes are plain data; allowing them lets checkpoints that
    store e.g. ``global_step`` as a numpy integer load without arbitrary unpickling."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: list = [core.multiarray.scalar, np.dtype]
    allowed += [type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")]
    return allowed


def _looks_like_pickle_or_zip(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle PROTO opcode


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> object:
    """Load a checkpoint file onto the CPU.

    Only tensors and plain containers are unpickled unless ``trust`` is set: a
    pickle can run arbitrary code, so that needs the user's explicit consent.
    """
    path = Path(path)
    if not path.is_file():
        raise TalkrtError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise TalkrtError(f"{path} is empty, not a checkpoint")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if not trust and _looks_like_pickle_or_zip(path) and ("Unsupported global" in message or "Unsupported operand" in message):
            detail = message.split("Unsupported", 1)[1].split(" was not", 1)[0].split("Check the documentation")[0].strip()
            raise TalkrtError(
                f"{path} holds more than tensors (unsupported {detail}) and would need arbitrary unpickling, "
                "which can run code: pass --trust-checkpoint only if you trust where the file came from"
            ) from exc
        raise TalkrtError(f"{path} is not a PyTorch checkpoint (unpickling failed: {message.splitlines()[0][:120]})") from exc
    except RuntimeError as exc:
        if "zip archive" in str(exc) or "central directory" in str(exc):
            raise TalkrtError(f"{path} is truncated or corrupt (its zip archive is unreadable); download it again") from exc
        raise TalkrtError(f"{path} could not be read as a checkpoint: {str(exc).splitlines()[0][:160]}") from exc
    except Exception as exc:  # the unpickler fails on garbage with whatever error the bytes lead it to
        raise TalkrtError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from exc


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


def guess_family(keys: set[str] | Mapping[str, object]) -> str | None:
    """The family whose top-level modules best match ``keys``, or None."""
    prefixes = {k.split(".", 1)[0] for k in keys}
    best, best_score = None, 0.0
    for family, signature in FAMILY_SIGNATURES.items():
        if not signature <= prefixes:
            continue
        score = len(signature) / len(signature | prefixes)
        if score > best_score:
            best, best_score = family, score
    return best


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
