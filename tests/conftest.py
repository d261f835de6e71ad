"""Shared fixtures: official key listings, fake official checkpoints, one exported Wav2Lip graph, one exported voice."""

from __future__ import annotations

import ast
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Every key, shape and dtype of the official checkpoints; each file's header names the
# repository, source file and container format it reflects.
CHECKPOINT_KEYS = Path(__file__).resolve().parent / "fixtures" / "checkpoint-keys"
# Engines built by the tests are cached away from the user's ~/.cache (one cache per test
# process), and the cache goes when the process ends: a run leaves nothing behind in /tmp.
os.environ["TALKRT_CACHE"] = tempfile.mkdtemp(prefix="talkrt-test-cache-")
atexit.register(shutil.rmtree, os.environ["TALKRT_CACHE"], ignore_errors=True)


def key_listing(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``name<TAB>shape<TAB>dtype`` lines of an official checkpoint, in file order."""
    path = CHECKPOINT_KEYS / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no key listing {name!r} in {CHECKPOINT_KEYS}")
    listing = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        listing[key] = (tuple(ast.literal_eval(shape)), dtype)
    return listing


def fake_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys, shapes and dtypes of an official checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in key_listing(name).items():
        torch_dtype = getattr(torch, dtype)
        if torch_dtype.is_floating_point:
            tensor = torch.randn(shape, generator=generator, dtype=torch_dtype) * 0.05
            if key.endswith("running_var"):
                tensor = tensor.abs() + 0.5
        else:
            tensor = torch.randint(0, 1000, shape, generator=generator, dtype=torch_dtype)
        state[key] = tensor
    return state


def official_wav2lip_container(state: dict[str, torch.Tensor]) -> dict:
    """wav2lip.pth as wav2lip_train.py saves it: DataParallel keys plus optimizer state."""
    return {
        "state_dict": {"module." + k: v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": list(range(10))}]},
        "global_step": 250000,
        "global_epoch": 420,
    }


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
