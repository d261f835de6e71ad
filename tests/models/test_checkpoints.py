"""Reading official checkpoint containers and loading them strictly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import CHECKPOINT_KEYS, fake_state_dict, key_listing, official_wav2lip_container
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.export.onnx import fold_weight_norm
from talkrt.models.checkpoints import guess_family, load_strict, read_checkpoint
from talkrt.models.wav2lip import Wav2Lip


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
    ],
)
def test_family_is_recognised_from_keys(listing, family) -> None:
    assert guess_family(key_listing(listing)) == family


def test_every_listing_is_covered() -> None:
    listings = {p.stem for p in CHECKPOINT_KEYS.glob("*.txt")}
    assert all(guess_family(key_listing(name)) for name in listings)
