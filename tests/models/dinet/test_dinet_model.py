"""DINet computes what MRzzm/DINet computes, and loads its released checkpoint strictly.

The AdaAT reference below is written plainly from the original's semantics,
independently of talkrt.models.dinet.adaat: it builds the
(B, D, H, W, 3) grid [X, Y, z_k] and calls the 5-D ``F.grid_sample`` (default
trilinear, zeros padding, align_corners=False) on the feature map with a
singleton channel axis, as the original does.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fake_checkpoints import fake_state_dict, key_listing
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.models.dinet.adaat import AdaAT
from talkrt.models.dinet.model import DINet, DINetMapper, load_dinet, load_mapper, mask_mouth, random_dinet, random_mapper


def reference_adaat(module: nn.Module, feature_map: torch.Tensor, para_code: torch.Tensor) -> torch.Tensor:
    """The original 5-D AdaAT, reading AdaAT's linear layers by their checkpoint names."""
    batch, depth, height, width = feature_map.shape
    sd = module.state_dict()
    p = F.relu(F.linear(para_code, sd["commn_linear.0.weight"], sd["commn_linear.0.bias"]))
    scale = torch.sigmoid(F.linear(p, sd["scale.0.weight"], sd["scale.0.bias"])) * 2  # (B, D)
    angle = torch.tanh(F.linear(p, sd["rotation.0.weight"], sd["rotation.0.bias"])) * 3.14159
    shift = torch.tanh(F.linear(p, sd["translation.0.weight"], sd["translation.0.bias"])).view(batch, depth, 2)
    x = 2 * (torch.arange(width, dtype=torch.float32) / (width - 1)) - 1
    y = 2 * (torch.arange(height, dtype=torch.float32) / (height - 1)) - 1
    z = 2 * (torch.arange(depth, dtype=torch.float32) / (depth - 1)) - 1
    xy = torch.stack(torch.broadcast_tensors(x.view(1, -1), y.view(-1, 1)), -1)  # (H, W, 2) as [x, y]
    rotation = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], -1).view(batch, depth, 1, 1, 2, 2)
    warped = (rotation @ xy.view(1, 1, height, width, 2, 1)).squeeze(-1)  # (B, D, H, W, 2)
    warped = warped * scale.view(batch, depth, 1, 1, 1) + shift.view(batch, depth, 1, 1, 2)
    zz = z.view(1, depth, 1, 1, 1).expand(batch, depth, height, width, 1)
    grid = torch.cat([warped, zz], -1)
    return F.grid_sample(feature_map.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(1)


class ReferenceAdaAT(nn.Module):
    def __init__(self, adaat: AdaAT) -> None:
        super().__init__()
        self.adaat = adaat

    def forward(self, feature_map, para_code):
        return reference_adaat(self.adaat, feature_map, para_code)


def _random_adaat(para_ch: int, depth: int, seed: int) -> AdaAT:
    torch.manual_seed(seed)
    module = AdaAT(para_ch, depth).eval()
    with torch.no_grad():  # spread rotations, scales and shifts over their whole ranges
        for name in ("scale", "rotation", "translation"):
            getattr(module, name)[0].weight.mul_(4)
    return module


@pytest.mark.parametrize(("para_ch", "depth", "height", "width"), [(256, 256, 104, 80), (3, 5, 9, 7), (16, 2, 6, 11)])
def test_adaat_equals_the_original_5d_semantics(para_ch, depth, height, width) -> None:
    module = _random_adaat(para_ch, depth, seed=depth)
    generator = torch.Generator().manual_seed(1)
    feature_map = torch.randn(2, depth, height, width, generator=generator)
    para_code = torch.randn(2, para_ch, generator=generator)
    with torch.no_grad():
        ours = module(feature_map, para_code)
        reference = reference_adaat(module, feature_map, para_code)
    assert ours.shape == reference.shape == feature_map.shape
    assert reference.abs().max() > 0.5
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    if depth == 256:
        # folding channels into the batch without the depth blend is what the rewrite must avoid
        identity = AdaAT(para_ch, depth).eval()
        identity.load_state_dict(module.state_dict())
        identity.depth_mix.copy_(torch.eye(depth).view(depth, depth, 1, 1))
        with torch.no_grad():
            assert (identity(feature_map, para_code) - reference).abs().max() > 0.1


def test_adaat_state_dict_has_only_the_original_keys() -> None:
    module = AdaAT(128, 256)
    assert list(module.state_dict()) == [f"{n}.0.{w}" for n in ("commn_linear", "scale", "rotation", "translation") for w in ("weight", "bias")]
    assert "depth_mix" in dict(module.named_buffers())
    mix = module.depth_mix.view(256, 256)
    # row k blends channels floor(p_k) and floor(p_k)+1, p_k = k*D/(D-1) - 0.5: rows below 128 use k-1 and k, the rest k and k+1
    assert torch.count_nonzero(mix.triu(2)) == 0 and torch.count_nonzero(mix.tril(-2)) == 0
    assert int((mix != 0).sum(1).max()) == 2
    assert mix[1, 0] > 0.49 and mix[1, 2] == 0 and mix[200, 199] == 0 and mix[200, 201] > 0
    assert mix[0, 0] == pytest.approx(0.5, abs=1e-4) and mix[255, 255] == pytest.approx(0.5, abs=1e-4)
    assert mix.sum(1)[1:-1].sub(1).abs().max() < 1e-5


def test_keys_equal_the_released_checkpoint() -> None:
    listing = key_listing("dinet_3_15_29")
    state = DINet().state_dict()
    assert list(state) == list(listing)
    for key, (shape, dtype) in listing.items():
        assert tuple(state[key].shape) == shape and str(state[key].dtype) == f"torch.{dtype}", key
    assert not any("depth_mix" in k for k in state)
    parameters = sum(p.numel() for p in DINet().parameters())
    assert parameters == 19_206_403 - sum(math.prod(s) for k, (s, _) in listing.items() if "running" in k)


def _official_container(seed: int = 0) -> tuple[dict, dict]:
    state = fake_state_dict("dinet_3_15_29", seed)
    disc = {"conv.0.weight": torch.randn(8, 3, 4, 4), "conv.0.bias": torch.randn(8)}
    container = {
        "state_dict": {
            "net_g": {"module." + k: v for k, v in state.items()},
            "net_dI": {"module." + k: v for k, v in disc.items()},
            "net_dV": {"module." + k: v.clone() for k, v in disc.items()},
        },
        "optimizer": {"net_g": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}},
    }
    return container, state


def test_loads_the_official_container_strictly(tmp_path) -> None:
    container, state = _official_container()
    path = tmp_path / "clip_training_DINet_256mouth.pth"
    torch.save(container, path)
    model = load_dinet(path)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    model = load_dinet(container)  # an already-read object works too
    assert torch.equal(model.adaAT.translation[0].weight, state["adaAT.translation.0.weight"])


@pytest.mark.parametrize(("listing", "hint"), [("wav2lip", "wav2lip"), ("dhlive_dinet_five_ref_6_30", "dhlive-render")])
def test_wrong_family_fails_in_one_line(listing, hint) -> None:
    with pytest.raises(TalkrtError) as info:
        load_dinet({"state_dict": fake_state_dict(listing)})
    message = str(info.value)
    assert "\n" not in message and "dinet" in message and hint in message


def test_truncated_dinet_checkpoint_names_missing_keys() -> None:
    state = fake_state_dict("dinet_3_15_29")
    del state["adaAT.scale.0.weight"]
    with pytest.raises(TalkrtError, match=r"1 missing, e\.g\. adaAT\.scale\.0\.weight \(256, 256\)"):
        load_dinet(state)


def _scaled_fake_state(seed: int) -> dict:
    """The fixture's 0.05-std weights, scaled per layer so activations neither vanish nor saturate."""
    state = fake_state_dict("dinet_3_15_29", seed)
    scaled = {}
    for key, value in state.items():
        if key.endswith("weight") and value.dim() >= 2:
            fan_in = value[0].numel()
            value = value / value.std() / math.sqrt(fan_in) * 1.5
            if key.startswith("adaAT."):
                value = value * 3
        scaled[key] = value
    return scaled


def test_full_model_matches_the_5d_original() -> None:
    state = _scaled_fake_state(seed=3)
    ours = load_dinet(state)
    original = load_dinet(state)
    original.adaAT = ReferenceAdaAT(original.adaAT)
    generator = torch.Generator().manual_seed(0)
    source = mask_mouth(torch.rand(1, 3, 416, 320, generator=generator))
    refs = torch.rand(1, 15, 416, 320, generator=generator)
    audio = torch.randn(1, 29, 5, generator=generator)
    captured = {}
    ours.adaAT.register_forward_hook(lambda m, a, out: captured.update(inp=a[0], out=out))
    with torch.no_grad():
        mine = ours(source, refs, audio)
        theirs = original(source, refs, audio)
    assert mine.shape == (1, 3, 416, 320)
    assert mine.min() >= 0 and mine.max() <= 1
    assert theirs.std() > 0.01  # not a comparison of two constants
    assert (captured["out"] - captured["inp"]).abs().max() > 0.1  # AdaAT really moved the features
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_mask_mouth_zeroes_rows_128_384_cols_32_288() -> None:
    image = torch.ones(1, 3, 416, 320)
    masked = mask_mouth(image)
    assert masked[..., 128:384, 32:288].abs().sum() == 0
    assert masked.sum() == image.sum() - 3 * 256 * 256
    assert image.min() == 1  # the input is not modified


def test_random_dinet_is_reproducible() -> None:
    a, b = random_dinet(5), random_dinet(5)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not a.training


def test_mapper_keys_forward_and_loading(tmp_path) -> None:
    state = DINetMapper().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "fc1.weight": (512, 29), "fc1.bias": (512,),
        "fc2.weight": (512, 512), "fc2.bias": (512,),
        "fc3.weight": (512, 512), "fc3.bias": (512,),
        "fc4.weight": (29, 512), "fc4.bias": (29,),
    }  # fmt: skip
    mapper = random_mapper(2)
    path = tmp_path / "wav2vecDS.pt"
    torch.save(mapper.state_dict(), path)
    loaded = load_mapper(path)
    x = torch.randn(3, 40, 29)
    sd = mapper.state_dict()
    h = x
    for i in (1, 2, 3):
        h = F.relu(h @ sd[f"fc{i}.weight"].T + sd[f"fc{i}.bias"])
    expected = h @ sd["fc4.weight"].T + sd["fc4.bias"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(TalkrtError, match="does not match dinet-mapper"):
        load_mapper({"fc1.weight": torch.zeros(512, 29)})
