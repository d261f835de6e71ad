"""Shared fixtures of the Triton tests: a folder of exported graphs as `talkrt triton --from` reads
it (the random-weight Wav2Lip ONNX graph) and a synthetic avatar."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(wav2lip_onnx, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("triton-models")
    os.link(wav2lip_onnx, directory / "wav2lip.onnx")  # the 140 MB graph, not copied
    return directory


@pytest.fixture(scope="session")
def triton_avatar(tmp_path_factory) -> Path:
    from talkrt.runtime.avatar import synthetic_avatar

    path = tmp_path_factory.mktemp("triton-avatar") / "face.npz"
    synthetic_avatar(num_frames=3).save(path)
    return path
