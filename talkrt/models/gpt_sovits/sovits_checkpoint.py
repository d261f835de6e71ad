"""Reading GPT-SoVITS SoVITS weights (``s2G*.pth``) strictly, and telling the versions apart.

A file is ``{"weight": state_dict, "config": hparams}`` (user weights add ``info``).
The config is a plain dict or the training code's ``utils.HParams`` object; the
latter is read into a data-only stand-in, so neither needs ``--trust-checkpoint``.

Versions:

* v2, v2Pro, v2ProPlus load. Pro weights have ``sv_emb`` / ``ge_to512`` /
  ``prelu``; ProPlus has a 768-channel generator. User weights of Pro models start
  with ``05`` / ``06`` where a zip starts with ``PK``: the bytes are read, ``PK``
  is restored in memory and the result loaded.
* v1 (322-symbol phone table, style encoder over all 1025 bins), v3 and v4
  (a CFM decoder, ``cfm.*`` / ``bridge.*`` / ``wns1.*``, no ``dec`` or ``flow``)
  are recognised and refused with one line. v3 and v4 have the same keys: the
  2-byte header (``02``/``03`` v3, ``04`` v4), the pretrained files' hash or the
  config's ``model.version`` names them.

Pretrained files keep the posterior encoder ``enc_q.*`` (training only); user
files drop it. Both load: ``enc_q`` keys are ignored. Tensors saved as float16
are cast to float32.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from talkrt.errors import TalkrtError
from talkrt.models.checkpoints import load_strict, read_checkpoint
from talkrt.models.gpt_sovits.sovits import (
    FAMILY,
    RELEASED_CONFIGS,
    V2PROPLUS_CONFIG,
    SovitsConfig,
    SovitsSynthesizer,
    config_from_checkpoint,
)

SUPPORTED = ("v2", "v2Pro", "v2ProPlus")

# The 2 bytes the training code writes in place of the zip magic "PK".
HEADER_VERSIONS = {b"00": "v1", b"01": "v2", b"02": "v3", b"03": "v3", b"04": "v4", b"05": "v2Pro", b"06": "v2ProPlus"}
LORA_HEADERS = (b"03", b"04")

# md5 of the first 8 KiB of the released pretrained v3 / v4 files (the original's own way to tell
# these two apart: their keys are the same and they carry no header).
PRETRAINED_MD5 = {
    "43797be674a37c1c83ee81081941ed0f": "v3",  # s2Gv3.pth
    "4f26b9476d0c5033e04162c486074374": "v4",  # s2Gv4.pth
}

_CFM_PREFIXES = ("cfm.", "bridge.", "wns1.", "linear_mel.")
_V1_SYMBOLS = 322


class UnsupportedSovitsVersion(TalkrtError):
    """A GPT-SoVITS SoVITS checkpoint of a version talkrt does not run (v1, v3, v4)."""

    def __init__(self, source: str, version: str, why: str) -> None:
        self.version = version
        super().__init__(f"{source} is a GPT-SoVITS {version} SoVITS checkpoint ({why}); talkrt supports {', '.join(SUPPORTED)}")


@dataclass
class SovitsCheckpoint:
    model: SovitsSynthesizer
    version: str
    config: SovitsConfig
    had_enc_q: bool  # the file kept the training-only posterior encoder (pretrained files do)
    info: str | None  # user weights: "<epoch>epoch_<step>iteration"


class HParamsData:
    """Data-only stand-in for the training code's ``utils.HParams`` (attributes, no behaviour)."""


def _plain(value: object) -> object:
    """A stand-in (nested) turned into plain dicts."""
    if isinstance(value, HParamsData):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _HParamsUnpickler(pickle.Unpickler):
    # with --trust-checkpoint: the original's utils module is not importable here
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) == ("utils", "HParams"):
            return HParamsData
        return super().find_class(module, name)


class _HParamsPickle:
    Unpickler = _HParamsUnpickler
    load = staticmethod(pickle.load)


def _safe_globals() -> list:
    # the shared reader's numpy allowance, plus the config stand-in
    from talkrt.models.checkpoints import _numpy_safe_globals

    return [*_numpy_safe_globals(), (HParamsData, "utils.HParams")]


def _torch_load(target: str | io.BytesIO, trust: bool) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if trust:
            return torch.load(target, map_location="cpu", weights_only=False, pickle_module=_HParamsPickle)
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(target, map_location="cpu", weights_only=True)


def read_sovits_file(path: str | os.PathLike, trust: bool = False) -> tuple[object, bytes | None]:
    """The unpickled object and the 2-byte version header (None for a plain zip)."""
    path = Path(path)
    if not path.is_file():
        return read_checkpoint(path, trust), None  # its one-line message for missing paths and directories
    with open(path, "rb") as handle:
        head = handle.read(2)
        if head in HEADER_VERSIONS:
            data = b"PK" + handle.read()
        else:
            data = None
    if data is None:
        try:
            return _torch_load(str(path), trust), None
        except Exception:  # noqa: BLE001 - the shared reader explains why, in one line
            return read_checkpoint(path, trust), None
    try:
        return _torch_load(io.BytesIO(data), trust), head
    except Exception as exc:  # noqa: BLE001 - any unpickling failure becomes one line
        version = HEADER_VERSIONS[head]
        what = f"a GPT-SoVITS {version} file (header {head.decode()} in place of the zip magic PK)"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        if not trust and isinstance(exc, pickle.UnpicklingError):  # the weights-only unpickler refused a global
            raise TalkrtError(
                f"{path} is {what} that holds more than tensors and a config ({reason}): pass --trust-checkpoint only if you trust where the file came from"
            ) from exc
        raise TalkrtError(f"{path} is {what} but could not be read ({reason}); download or export it again") from exc


def _md5_head(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read(8192)).hexdigest()


def _config_version(config: object) -> str | None:
    model = config.get("model") if isinstance(config, Mapping) else None
    version = model.get("version") if isinstance(model, Mapping) else None
    return str(version) if version else None


def detect_version(state: Mapping[str, torch.Tensor], header: bytes | None = None, config: object = None, md5: str | None = None, source: str = "checkpoint") -> str:
    """'v2', 'v2Pro' or 'v2ProPlus'; raises UnsupportedSovitsVersion for v1, v3 and v4."""
    named = HEADER_VERSIONS.get(header) if header else None
    if any(k.startswith(_CFM_PREFIXES) for k in state) or any("lora_" in k for k in state):
        version = named or PRETRAINED_MD5.get(md5 or "") or _config_version(config)
        version = version if version in ("v3", "v4") else "v3/v4"
        lora = " LoRA" if header in LORA_HEADERS else ""
        raise UnsupportedSovitsVersion(source, version + lora, "a CFM mel decoder with a separate vocoder: cfm.*, no dec.* or flow.*")
    embedding = state.get("enc_p.text_embedding.weight")
    spectral = state.get("ref_enc.spectral.0.fc.weight")
    if named == "v1" or (embedding is not None and embedding.shape[0] == _V1_SYMBOLS) or (spectral is not None and spectral.shape[1] == 1025):
        raise UnsupportedSovitsVersion(source, "v1", f"the {_V1_SYMBOLS}-symbol v1 phone table, style encoder over all 1025 bins")
    if named in ("v3", "v4"):
        raise UnsupportedSovitsVersion(source, named, f"header {header.decode()}")  # type: ignore[union-attr]
    if "sv_emb.weight" in state:
        conv_pre = state.get("dec.conv_pre.weight")
        by_keys = "v2ProPlus" if conv_pre is not None and conv_pre.shape[0] == V2PROPLUS_CONFIG.upsample_initial_channel else "v2Pro"
        configured = _config_version(config)
        if configured in ("v2Pro", "v2ProPlus"):
            by_keys = configured  # small / custom configs: the config knows better than the generator width
        if named in ("v2Pro", "v2ProPlus") and named != by_keys:
            raise TalkrtError(f"{source}: header {header.decode()} says {named} but the weights are {by_keys}; the file is damaged")  # type: ignore[union-attr]
        return named if named in ("v2Pro", "v2ProPlus") else by_keys
    if named in ("v2Pro", "v2ProPlus"):
        raise TalkrtError(f"{source}: header {header.decode()} says {named} but the weights have no sv_emb (a v2 model); the file is damaged")  # type: ignore[union-attr]
    return "v2"


def sovits_from_object(obj: object, source: str = "checkpoint", header: bytes | None = None, md5: str | None = None) -> SovitsCheckpoint:
    """Build and strictly load a SovitsSynthesizer from an unpickled ``{"weight", "config"}`` (or a bare state_dict)."""
    if isinstance(obj, Mapping) and "weight" in obj:
        state, config, info = obj["weight"], _plain(obj.get("config")), obj.get("info")
    else:
        state, config, info = obj, None, None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(map(str, obj.keys()))[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise TalkrtError(f"{source} is not a SoVITS checkpoint: no 'weight' dict of tensors (found {found})")
    version = detect_version(state, header, config, md5, source)
    cfg = config_from_checkpoint(config, version) if isinstance(config, Mapping) and config.get("model") else RELEASED_CONFIGS[version]
    had_enc_q = any(k.startswith("enc_q.") for k in state)
    # enc_q is the posterior encoder, used only in training: ignored, present or not
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items() if not k.startswith("enc_q.")}
    model = SovitsSynthesizer(cfg)
    load_strict(model, weights, FAMILY, source=source)
    return SovitsCheckpoint(model=model, version=version, config=cfg, had_enc_q=had_enc_q, info=str(info) if info is not None else None)


def load_sovits(path: str | os.PathLike, trust: bool = False) -> SovitsCheckpoint:
    """Load an ``s2G*.pth`` file (plain zip or ``05``/``06`` header) strictly; refuse v1 / v3 / v4 in one line."""
    path = Path(path)
    obj, header = read_sovits_file(path, trust)
    return sovits_from_object(obj, str(path), header, _md5_head(path))
