"""Official checkpoints without their weights: the key listings (tests/fixtures/checkpoint-keys) and
random tensors with exactly those keys, shapes and dtypes."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

# Every key, shape and dtype of the official checkpoints; each file's header names the
# repository, source file and container format it reflects.
CHECKPOINT_KEYS = Path(__file__).resolve().parent / "fixtures" / "checkpoint-keys"


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
