"""DH_live renderer (DINet_five_Ref) and Audio2Feature: keys, loading, mini refusal, exactness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from talkrt.errors import TalkrtError
from talkrt.models.dhlive.model import (
    Audio2Feature,
    Audio2FeatureFrame,
    DHLiveGenerator,
    DHLiveReferenceEncoder,
    DINetFiveRef,
    dhlive_mini_version,
    load_dhlive_audio,
    load_dhlive_render,
)
from talkrt.models.random_init import random_model

from fake_checkpoints import fake_state_dict, key_listing

RENDER_KEYS = "dhlive_dinet_five_ref_6_30"
AUDIO_KEYS = "dhlive_audio2feature"
MINI = {"v1": "dhlive_mini_v1_dinet_mini_3_12", "v2": "dhlive_mini_v2_dinet_mini_3_12"}


def _listing_of(module: torch.nn.Module) -> dict:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("factory", "name"), [(DINetFiveRef, RENDER_KEYS), (Audio2Feature, AUDIO_KEYS)])
def test_keys_equal_the_official_listing(factory, name) -> None:
    listing = key_listing(name)
    ours = _listing_of(factory())
    assert list(ours) == list(listing)  # same names, same order
    assert ours == listing  # same shapes and dtypes


def _assert_loaded(module: torch.nn.Module, state: dict) -> None:
    assert not module.training
    loaded = module.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_render_pth_plain_state_dict_loads_strictly(tmp_path) -> None:
    state = fake_state_dict(RENDER_KEYS, seed=1)
    path = tmp_path / "render.pth"
    torch.save(state, path)  # RenderModel.save / checkpoint/render.pth
    _assert_loaded(load_dhlive_render(path), state)


def test_training_checkpoint_net_g_loads_strictly(tmp_path) -> None:
    state = fake_state_dict(RENDER_KEYS, seed=2)
    container = {
        "state_dict": {"net_g": state, "net_d": {"conv.weight": torch.zeros(4, 3, 3, 3)}},
        "optimizer": {"net_g": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": [0, 1]}]}},
        "epoch": 100,
    }
    path = tmp_path / "epoch_100.pth"
    torch.save(container, path)
    _assert_loaded(load_dhlive_render(path), state)


def test_audio_pkl_plain_state_dict_loads_strictly(tmp_path) -> None:
    state = fake_state_dict(AUDIO_KEYS, seed=3)
    path = tmp_path / "audio.pkl"
    torch.save(state, path)  # AudioModel.loadModel: torch.load -> load_state_dict
    _assert_loaded(load_dhlive_audio(path), state)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("container", [False, True])
def test_dhlive_mini_checkpoints_are_refused(tmp_path, version, container) -> None:
    state = fake_state_dict(MINI[version])
    assert dhlive_mini_version(state) == version
    path = tmp_path / "mini.pth"
    torch.save({"state_dict": {"net_g": state}} if container else state, path)
    expected = f"DH_live_mini {version} checkpoint: not supported yet; talkrt supports the original DH_live render.pth"
    for loader in (load_dhlive_render, load_dhlive_audio):
        with pytest.raises(TalkrtError) as info:
            loader(path)
        message = str(info.value)
        assert expected in message and "\n" not in message


def test_original_files_are_not_taken_for_mini() -> None:
    assert dhlive_mini_version(fake_state_dict(RENDER_KEYS)) is None
    assert dhlive_mini_version(fake_state_dict(AUDIO_KEYS)) is None


def test_swapped_files_fail_with_one_line(tmp_path) -> None:
    render, audio = tmp_path / "render.pth", tmp_path / "audio.pkl"
    torch.save(fake_state_dict(RENDER_KEYS), render)
    torch.save(fake_state_dict(AUDIO_KEYS), audio)
    with pytest.raises(TalkrtError, match="dhlive-render checkpoint") as info:
        load_dhlive_audio(render)
    assert "\n" not in str(info.value)
    with pytest.raises(TalkrtError, match="dhlive-audio checkpoint"):
        load_dhlive_render(audio)


# ----------------------------------------------------------------------------- renderer exactness
# An independent, literal forward of DINet_five_Ref on the raw state_dict, with
# AdaAT as the original 5-D grid_sample (trilinear, zeros, align_corners=False).


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)


def _conv(x, sd, p, stride=1):
    weight = sd[f"{p}.weight"]
    return F.conv2d(x, weight, sd[f"{p}.bias"], stride, weight.shape[-1] // 2)


def _block(x, sd, p, stride=1, up=False):
    if up:
        x = F.interpolate(x, scale_factor=2)
    return F.relu(_bn(_conv(x, sd, f"{p}.conv", stride), sd, f"{p}.norm"))


def _res(x, sd, p):
    out = _conv(F.relu(_bn(x, sd, f"{p}.norm1")), sd, f"{p}.conv1")
    return _conv(F.relu(_bn(out, sd, f"{p}.norm2")), sd, f"{p}.conv2") + x


def _adaat_5d(feature, para, sd):
    batch, depth, h, w = feature.shape

    def linear(x, p):
        return F.linear(x, sd[f"adaAT.{p}.0.weight"], sd[f"adaAT.{p}.0.bias"])

    para = F.relu(linear(para, "commn_linear"))
    scale = (torch.sigmoid(linear(para, "scale")) * 2)[..., None, None]
    angle = (torch.tanh(linear(para, "rotation")) * 3.14159)[..., None, None]
    shift = torch.tanh(linear(para, "translation")).view(batch, depth, 2)
    x = (2 * (torch.arange(w, dtype=torch.float32) / (w - 1)) - 1).view(1, 1, 1, w)
    y = (2 * (torch.arange(h, dtype=torch.float32) / (h - 1)) - 1).view(1, 1, h, 1)
    z = (2 * (torch.arange(depth, dtype=torch.float32) / (depth - 1)) - 1).view(1, depth, 1, 1)
    gx = (torch.cos(angle) * x - torch.sin(angle) * y) * scale + shift[..., 0, None, None]
    gy = (torch.sin(angle) * x + torch.cos(angle) * y) * scale + shift[..., 1, None, None]
    grid = torch.stack([gx, gy, z.expand_as(gx)], dim=-1)  # (B, D, H, W, 3)
    return F.grid_sample(feature.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(1)


def _original_forward(sd, source_img, source_prompt, ref_img):
    ref_in = ref_img
    for i, stride in enumerate((1, 2, 2)):
        ref_in = _block(ref_in, sd, f"ref_in_conv.{i}", stride)
    ref_trans0 = _res(_res(ref_in, sd, "appearance_conv_list.0.0"), sd, "appearance_conv_list.0.1")
    source = torch.cat([source_img, source_prompt], 1)
    for i, stride in enumerate((1, 2, 2)):
        source = _block(source, sd, f"source_in_conv.{i}", stride)
    para = torch.cat([source, ref_in], 1)
    for i in range(9):
        para = _block(para, sd, f"trans_conv.{i}", 2 if i in (2, 4, 6, 8) else 1)
    para = para.mean(dim=(2, 3))
    warped = _adaat_5d(ref_trans0, para, sd)
    warped = _res(_res(warped, sd, "appearance_conv_list.1.0"), sd, "appearance_conv_list.1.1")
    out = _block(torch.cat([source, warped], 1), sd, "out_conv.0")
    out = _block(out, sd, "out_conv.1", up=True)
    out = _res(out, sd, "out_conv.2")
    out = _block(out, sd, "out_conv.3", up=True)
    return torch.sigmoid(_conv(out, sd, "out_conv.4"))


def test_reference_then_generator_equals_the_original_forward() -> None:
    model = random_model(DINetFiveRef, seed=4)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(5)
    source_img = torch.rand(2, 3, 256, 256, generator=generator)
    source_img[:, :, 96:240, 32:224] = 0  # the black lower face
    source_prompt = torch.rand(2, 3, 256, 256, generator=generator)
    ref = torch.rand(2, 30, 256, 256, generator=generator)
    with torch.no_grad():
        expected = _original_forward(state, source_img, source_prompt, ref)
        ref_in, ref_trans = DHLiveReferenceEncoder(model)(ref)
        assert ref_in.shape == ref_trans.shape == (2, 256, 64, 64)
        source = torch.cat([source_img, source_prompt], 1)
        split = DHLiveGenerator(model)(source, ref_in, ref_trans)
        whole = model(source, ref)
    assert split.shape == (2, 3, 256, 256)
    assert torch.equal(split, whole)
    assert float((split - expected).abs().max()) < 1e-5


# ----------------------------------------------------------------------------- audio exactness


def _original_audio_forward(model: Audio2Feature, audio_features, h0, c0):
    """audio2bs_lstm.py's forward, including its int(T / 2) reshape."""
    item_len = audio_features.size()[1]
    x = model.downsample(audio_features.reshape(-1, 80 * 2))
    x = x.reshape(-1, int(item_len / 2), 80)
    output, (hn, cn) = model.LSTM(x, (h0, c0))
    pred = model.fc(output.reshape(-1, 192)).reshape(-1, int(item_len / 2), 6)
    return pred, hn, cn


def test_audio_per_frame_equals_the_full_sequence() -> None:
    model = random_model(Audio2Feature, seed=6)
    generator = torch.Generator().manual_seed(7)
    frames, batch = 50, 2
    fbank = torch.randn(batch, 2 * frames, 80, generator=generator) * 3 - 5
    h0, c0 = Audio2Feature.initial_state(batch)
    step = Audio2FeatureFrame(model)
    with torch.no_grad():
        expected, hn, cn = _original_audio_forward(model, fbank, h0, c0)
        whole, whole_h, whole_c = model(fbank, h0, c0)
        h, c = h0, c0
        coefficients = []
        for t in range(frames):
            pair = fbank[:, 2 * t : 2 * t + 2]
            out, h, c = step(pair if t % 2 else pair.reshape(batch, 1, 160), h, c)  # (B, 2, 80) and (B, 1, 160)
            coefficients.append(out)
    streamed = torch.stack(coefficients, 1)
    assert expected.shape == streamed.shape == (batch, frames, 6)
    assert float((whole - expected).abs().max()) < 1e-6
    assert float((streamed - expected).abs().max()) < 1e-6
    assert float((h - hn).abs().max()) < 1e-6 and float((c - cn).abs().max()) < 1e-6
    assert torch.equal(whole_h, hn) and torch.equal(whole_c, cn)
