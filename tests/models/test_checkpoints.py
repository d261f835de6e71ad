"""Reading official checkpoint containers and loading them strictly."""

from __future__ import annotations

import io
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_checkpoints import CHECKPOINT_KEYS, fake_state_dict, key_listing, official_wav2lip_container
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.export.onnx import fold_weight_norm
from talkrt.models.checkpoints import load_strict, read_checkpoint
from talkrt.models.registry import guess_family
from talkrt.models.wav2lip.model import Wav2Lip


@pytest.fixture(scope="module")
def wav2lip_state() -> dict[str, torch.Tensor]:
    return fake_state_dict("wav2lip", seed=3)


def assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_model_matches_official_key_listing() -> None:
    listing = key_listing("wav2lip")
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in Wav2Lip().state_dict().items()}
    assert list(ours) == list(listing)  # same keys in the same order
    assert ours == listing


CONTAINERS = {
    "official (state_dict, module., optimizer)": official_wav2lip_container,
    "raw state_dict": lambda sd: sd,
    "raw with module.": lambda sd: {"module." + k: v for k, v in sd.items()},
    "{'state_dict': ...}": lambda sd: {"state_dict": sd},
    "{'model': ...}": lambda sd: {"model": sd, "iteration": 7},
    "{'state_dict': {'net_g': ...}}": lambda sd: {"state_dict": {"net_g": {"module." + k: v for k, v in sd.items()}, "net_dI": {"w": torch.ones(1)}}},
}


@pytest.mark.parametrize("container", CONTAINERS, ids=list(CONTAINERS))
def test_strict_load_from_every_container(tmp_path, wav2lip_state, container) -> None:
    path = tmp_path / "wav2lip.pth"
    torch.save(CONTAINERS[container](wav2lip_state), path)
    model = load_strict(Wav2Lip(), path, "wav2lip")
    assert not model.training
    assert_loaded(model, wav2lip_state)


def test_legacy_serialization_and_missing_num_batches_tracked(tmp_path, wav2lip_state) -> None:
    """Old torch (non-zip) files, and state_dicts saved without num_batches_tracked, load."""
    stripped = {k: v for k, v in wav2lip_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"state_dict": stripped}, path, _use_new_zipfile_serialization=False)
    model = load_strict(Wav2Lip(), path, "wav2lip")
    for key, value in stripped.items():
        assert torch.equal(model.state_dict()[key], value)


def test_numpy_scalars_load_without_trust(tmp_path, wav2lip_state) -> None:
    path = tmp_path / "np.pth"
    torch.save({"state_dict": wav2lip_state, "global_step": np.int64(5), "lr": np.float64(1e-4)}, path)
    assert_loaded(load_strict(Wav2Lip(), path, "wav2lip"), wav2lip_state)


class _Custom:
    """Stands for a training-script class pickled into a checkpoint."""


def test_arbitrary_pickle_needs_explicit_trust(tmp_path, wav2lip_state) -> None:
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": wav2lip_state, "hparams": _Custom()}, path)
    with pytest.raises(TalkrtError, match="--trust-checkpoint") as info:
        load_strict(Wav2Lip(), path, "wav2lip")
    assert "\n" not in str(info.value)
    assert_loaded(load_strict(Wav2Lip(), path, "wav2lip", trust=True), wav2lip_state)


def test_checkpoint_of_another_family_names_both(tmp_path) -> None:
    path = tmp_path / "dinet.pth"
    torch.save({"state_dict": {"net_g": {"module." + k: v for k, v in fake_state_dict("dinet_3_15_29").items()}}}, path)
    with pytest.raises(TalkrtError) as info:
        load_strict(Wav2Lip(), path, "wav2lip")
    message = str(info.value)
    assert "does not match wav2lip" in message and "looks like a dinet checkpoint" in message
    assert "missing, e.g. face_encoder_blocks.0.0.conv_block.0.weight (16, 6, 7, 7)" in message
    assert "unexpected, e.g. source_in_conv.0.conv.weight (64, 3, 7, 7)" in message
    assert "\n" not in message


def test_wrong_shapes_are_reported(tmp_path, wav2lip_state) -> None:
    state = dict(wav2lip_state)
    state["output_block.1.weight"] = torch.zeros(4, 32, 1, 1)
    with pytest.raises(TalkrtError, match=r"1 with another shape, e\.g\. output_block\.1\.weight \(4, 32, 1, 1\) vs \(3, 32, 1, 1\)"):
        load_strict(Wav2Lip(), {"state_dict": state}, "wav2lip")


def test_truncated_file(tmp_path, wav2lip_state) -> None:
    path = tmp_path / "full.pth"
    torch.save({"state_dict": wav2lip_state}, path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TalkrtError, match="truncated or corrupt"):
        read_checkpoint(truncated)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"name,shape\nface,(1,2)\n", "not a PyTorch checkpoint"),
        (bytes(range(256)) * 8, "not a PyTorch checkpoint"),
    ],
    ids=["empty", "text", "binary"],
)
def test_not_a_checkpoint(tmp_path, content, message) -> None:
    path = tmp_path / "bogus.pth"
    path.write_bytes(content)
    with pytest.raises(TalkrtError, match=message) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(TalkrtError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pth")


def test_a_pickle_without_weights(tmp_path) -> None:
    path = tmp_path / "hparams.pth"
    torch.save({"lr": 0.1, "epochs": [1, 2]}, path)
    with pytest.raises(TalkrtError, match="holds no state_dict"):
        load_strict(Wav2Lip(), path, "wav2lip")


def test_plain_pickle_is_refused_without_trust(tmp_path) -> None:
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"weight": _Custom()}, handle, protocol=4)
    with pytest.raises(TalkrtError, match="--trust-checkpoint"):
        read_checkpoint(path)
    # torch.load would stop at its missing magic number; a trusted plain pickle is read as what it is
    assert isinstance(read_checkpoint(path, trust=True)["weight"], _Custom)


class _Evil:
    """A pickle that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (io.open, (self.marker, "w"))


def _random_bytes(size: int = 4096, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _write_random(tmp_path: Path) -> Path:
    path = tmp_path / "random.pth"
    path.write_bytes(_random_bytes())
    return path


def _write_pickle_header_then_random(tmp_path: Path, protocol: int = 2) -> Path:
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes([0x80, protocol]) + _random_bytes(seed=protocol))
    return path


def _write_evil_pickle(tmp_path: Path, protocol: int) -> Path:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"w": torch.ones(1)}, "payload": _Evil(tmp_path / "marker")}, handle, protocol=protocol)
    return path


def _write_zip_with_custom_class(tmp_path: Path) -> Path:
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hparams": _Custom()}, path)
    return path


def _write_directory(tmp_path: Path) -> Path:
    path = tmp_path / "weights"
    path.mkdir()
    (path / "wav2lip_gan.pth").write_bytes(b"")
    return path


CORRUPT = ("is not a PyTorch checkpoint: the file is corrupt or another kind of file", "download or export it again")
UNTRUSTED = ("which loading would import and call", "pass --trust-checkpoint only if you trust where the file came from")

BAD_FILES = {
    # name: (writer, parts the message must hold, whether it advises --trust-checkpoint, how it ends)
    "random bytes": (_write_random, CORRUPT, False, "export it again"),
    "pickle header + random (protocol 2)": (_write_pickle_header_then_random, CORRUPT, False, "export it again"),
    "pickle header + random (protocol 4)": (lambda t: _write_pickle_header_then_random(t, 4), CORRUPT, False, "export it again"),
    "evil pickle (protocol 2)": (lambda t: _write_evil_pickle(t, 2), ("is a plain pickle (not written by torch.save) that references", "io.open", *UNTRUSTED), True, "came from"),
    "evil pickle (protocol 4)": (lambda t: _write_evil_pickle(t, 4), ("is a plain pickle (not written by torch.save) that references", "io.open", *UNTRUSTED), True, "came from"),
    "torch.save zip with a custom class": (
        _write_zip_with_custom_class,
        (f"holds more than tensors: it references {_Custom.__module__}._Custom", *UNTRUSTED),
        True,
        "came from",
    ),
    "directory": (_write_directory, ("is a directory, not a checkpoint file", "(it holds wav2lip_gan.pth)"), False, "wav2lip_gan.pth)"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_checkpoint_gets_one_precise_line(tmp_path, case) -> None:
    writer, parts, advises_trust, ending = BAD_FILES[case]
    path = writer(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TalkrtError) as info:
            read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for part in parts:
        assert part in message, message
    assert ("--trust-checkpoint" in message) == advises_trust, message
    assert message.endswith(ending), message  # our own words to the end: nothing cut mid-word
    assert not any(word in message for word in ("torch.load", "weights_only", "WeightsUnpickler")), message
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "marker").exists()  # nothing in the file ran


@pytest.mark.parametrize("seed", range(20))
def test_garbage_behind_a_pickle_header_is_never_called_untrusted(tmp_path, seed) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes([0x80, 2 + seed % 4]) + _random_bytes(seed % 7 * 1000 + 100, seed))
    with pytest.raises(TalkrtError, match="corrupt or another kind of file") as info:
        read_checkpoint(path)
    assert "--trust-checkpoint" not in str(info.value)


def test_trusted_load_of_garbage_is_called_corrupt(tmp_path) -> None:
    for path in (_write_random(tmp_path), _write_pickle_header_then_random(tmp_path)):
        with pytest.raises(TalkrtError, match="is not a PyTorch checkpoint: the file is corrupt") as info:
            read_checkpoint(path, trust=True)
        assert "\n" not in str(info.value)


class _WeightNormed(nn.Module):
    def __init__(self, legacy: bool) -> None:
        super().__init__()
        conv = nn.Conv1d(4, 6, 3)
        self.conv = nn.utils.weight_norm(conv) if legacy else nn.utils.parametrizations.weight_norm(conv)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("saved_legacy", [True, False], ids=["weight_g/v into parametrizations", "parametrizations into weight_g/v"])
def test_weight_norm_names_are_mapped(saved_legacy) -> None:
    torch.manual_seed(0)
    source = _WeightNormed(legacy=saved_legacy)
    target = load_strict(_WeightNormed(legacy=not saved_legacy), source.state_dict(), "toy")
    x = torch.randn(2, 4, 9)
    assert torch.allclose(source(x), target(x), atol=1e-6)
    folded = fold_weight_norm(target)
    assert set(folded.state_dict()) == {"conv.weight", "conv.bias"}
    assert torch.allclose(source(x), folded(x), atol=1e-6)


@pytest.mark.parametrize(
    "listing, family",
    [
        ("wav2lip", "wav2lip"),
        ("dinet_3_15_29", "dinet"),
        ("dhlive_dinet_five_ref_6_30", "dhlive-render"),
        ("dhlive_mini_v1_dinet_mini_3_12", "dhlive-mini v1"),
        ("dhlive_mini_v2_dinet_mini_3_12", "dhlive-mini v2"),
        ("dhlive_audio2feature", "dhlive-audio"),
        ("vits_ljs_base", "vits (original)"),
        ("vits_vctk_base", "vits (original)"),
        ("hf_vitsmodel_default_mms_tts_eng", "vits (transformers)"),
        ("hubert_base_chinese", "hubert / wav2vec2"),
        ("gpt_sovits_s1_v2", "gpt-sovits GPT (s1)"),  # every key under Lightning's "model."
        ("gpt_sovits_s2_v2pro", "gpt-sovits SoVITS (s2)"),
        ("gpt_sovits_sv_eres2netv2w24s4ep4", "gpt-sovits speaker verification (sv)"),
        ("chinese_roberta_wwm_ext_large", "gpt-sovits BERT (chinese-roberta)"),
    ],
)
def test_family_is_recognised_from_keys(listing, family) -> None:
    assert guess_family(key_listing(listing)) == family


def test_every_listing_is_covered() -> None:
    listings = {p.stem for p in CHECKPOINT_KEYS.glob("*.txt")}
    assert len(listings) > 10
    assert not [name for name in sorted(listings) if guess_family(key_listing(name)) is None]
