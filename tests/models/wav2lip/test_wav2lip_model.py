"""The Wav2Lip generator computes what the original computes.

The reference below is written independently of talkrt.models.wav2lip.model: plain
functional ops over the official state_dict, driven by a layer table transcribed
from Rudrabha/Wav2Lip models/wav2lip.py (kernel, stride, padding, residual,
transposed), with the original's in-place residual add, skip order and output head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fake_checkpoints import fake_state_dict

from talkrt.models.checkpoints import load_strict
from talkrt.models.wav2lip.model import Wav2Lip

# (state_dict prefix, stride, padding, residual, transposed, output_padding); kernels come from the weights.
R, T = "residual", "transposed"
FACE_ENCODER = [
    [("0.0", 1, 3, "")],
    [("1.0", 2, 1, ""), ("1.1", 1, 1, R), ("1.2", 1, 1, R)],
    [("2.0", 2, 1, ""), ("2.1", 1, 1, R), ("2.2", 1, 1, R), ("2.3", 1, 1, R)],
    [("3.0", 2, 1, ""), ("3.1", 1, 1, R), ("3.2", 1, 1, R)],
    [("4.0", 2, 1, ""), ("4.1", 1, 1, R), ("4.2", 1, 1, R)],
    [("5.0", 2, 1, ""), ("5.1", 1, 1, R)],
    [("6.0", 1, 0, ""), ("6.1", 1, 0, "")],
]
AUDIO_ENCODER = [
    ("0", 1, 1, ""), ("1", 1, 1, R), ("2", 1, 1, R),
    ("3", (3, 1), 1, ""), ("4", 1, 1, R), ("5", 1, 1, R),
    ("6", 3, 1, ""), ("7", 1, 1, R), ("8", 1, 1, R),
    ("9", (3, 2), 1, ""), ("10", 1, 1, R),
    ("11", 1, 0, ""), ("12", 1, 0, ""),
]  # fmt: skip
FACE_DECODER = [
    [("0.0", 1, 0, "")],
    [("1.0", 1, 0, T), ("1.1", 1, 1, R)],
    [("2.0", 2, 1, T), ("2.1", 1, 1, R), ("2.2", 1, 1, R)],
    [("3.0", 2, 1, T), ("3.1", 1, 1, R), ("3.2", 1, 1, R)],
    [("4.0", 2, 1, T), ("4.1", 1, 1, R), ("4.2", 1, 1, R)],
    [("5.0", 2, 1, T), ("5.1", 1, 1, R), ("5.2", 1, 1, R)],
    [("6.0", 2, 1, T), ("6.1", 1, 1, R), ("6.2", 1, 1, R)],
]


def reference_block(sd, prefix, x, stride, padding, kind):
    weight, bias = sd[f"{prefix}.conv_block.0.weight"], sd[f"{prefix}.conv_block.0.bias"]
    if kind == T:
        # stride-2 transposed convs in the original all use output_padding=1
        out = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding=1 if stride == 2 else 0)
    else:
        out = F.conv2d(x, weight, bias, stride, padding)
    bn = f"{prefix}.conv_block.1"
    out = F.batch_norm(out, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"], False, 0.0, 1e-5)
    if kind == R:
        out += x
    return F.relu(out)


def reference_wav2lip(sd, audio, face):
    feats = []
    x = face
    for stage in FACE_ENCODER:
        for prefix, stride, padding, kind in stage:
            x = reference_block(sd, f"face_encoder_blocks.{prefix}", x, stride, padding, kind)
        feats.append(x)
    x = audio
    for prefix, stride, padding, kind in AUDIO_ENCODER:
        x = reference_block(sd, f"audio_encoder.{prefix}", x, stride, padding, kind)
    for stage in FACE_DECODER:
        for prefix, stride, padding, kind in stage:
            x = reference_block(sd, f"face_decoder_blocks.{prefix}", x, stride, padding, kind)
        x = torch.cat((x, feats[-1]), dim=1)
        feats.pop()
    x = reference_block(sd, "output_block.0", x, 1, 1, "")
    return torch.sigmoid(F.conv2d(x, sd["output_block.1.weight"], sd["output_block.1.bias"]))


def test_matches_functional_reference_of_the_original() -> None:
    state = fake_state_dict("wav2lip", seed=11)
    # Larger weights than the fixture default so activations are not all near zero.
    state = {k: v * 12 if k.endswith("conv_block.0.weight") else v for k, v in state.items()}
    model = load_strict(Wav2Lip(), state, "wav2lip")
    generator = torch.Generator().manual_seed(0)
    audio = torch.rand(3, 1, 80, 16, generator=generator) * 8 - 4
    face = torch.rand(3, 6, 96, 96, generator=generator)
    with torch.no_grad():
        ours = model(audio, face)
        reference = reference_wav2lip(state, audio, face)
    assert ours.shape == (3, 3, 96, 96)
    assert reference.std() > 0.01  # the comparison is not between two constants
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_batch_items_are_independent() -> None:
    """Eval-mode BatchNorm: each frame's output depends on its own inputs only."""
    model = Wav2Lip().eval()
    generator = torch.Generator().manual_seed(1)
    audio = torch.randn(4, 1, 80, 16, generator=generator)
    face = torch.rand(4, 6, 96, 96, generator=generator)
    with torch.no_grad():
        batched = model(audio, face)
        single = torch.cat([model(audio[i : i + 1], face[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert batched.min() >= 0 and batched.max() <= 1
