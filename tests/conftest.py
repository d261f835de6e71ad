"""Shared fixtures: one exported Wav2Lip graph, one exported voice (fake official checkpoints are in
fake_checkpoints.py: a test module imports them from there, never from a conftest, whose name
another folder's conftest shares)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Engines built by the tests are cached away from the user's ~/.cache (one cache per test
# process), and the cache goes when the process ends: a run leaves nothing behind in /tmp.
os.environ["TALKRT_CACHE"] = tempfile.mkdtemp(prefix="talkrt-test-cache-")
atexit.register(shutil.rmtree, os.environ["TALKRT_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def wav2lip_onnx(tmp_path_factory) -> Path:
    """The random-weight Wav2Lip generator exported (and validated) once per test session."""
    from talkrt.models.registry import get_spec
    from talkrt.export.onnx import export_onnx

    spec = get_spec("wav2lip")
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip.onnx"
    export_onnx(spec, spec.build_module(None, seed=0), path)
    return path


@pytest.fixture(scope="session")
def tiny_voice(tmp_path_factory) -> Path:
    """The random-weight tiny VITS voice (16 kHz, 1 ms per decoder frame) exported once per test
    session as `talkrt export vits` writes it: a voice directory for --tts. Read it, write nothing there."""
    from talkrt.models.vits.specs import export_vits

    directory = tmp_path_factory.mktemp("vits-voice")
    export_vits(directory, preset="tiny", seed=0, graphs=("encoder", "decoder"))
    return directory


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
