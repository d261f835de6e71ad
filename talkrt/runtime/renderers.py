"""Renderers from the registry: one runner per graph role, each family's own factory.

A renderer declares its audio feature and alignment, computes the features on
the device, and fills its runners' preallocated inputs for a batch of frames
from the avatar and the feature windows; faces come back as (n, 3, H, W) BGR in
[0, 1] in its avatar's crop size, ready for the compositor. Which graphs a
renderer needs (its roles), where their files are, and how they are put together
is the family's (talkrt.models.<family>.family); nothing here names a family.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from talkrt.engines.runners import Runner
from talkrt.errors import TalkrtError
from talkrt.models.family import RendererContext, RendererOptions
from talkrt.models.registry import get_renderer_family, get_spec


def expected_graph(renderer: str, role: str) -> tuple[str, str]:
    """(family graph, stored graph name) of the ONNX graph or engine that plays ``role`` for ``renderer``."""
    role_info = get_renderer_family(renderer).roles[role]
    return role_info.graph, role_info.graph_name


def check_renderer_models(renderer: str, backend: str, models: Mapping[str, Any]) -> None:
    """Every graph file given is one ``backend`` runs and the graph its role needs: checked
    before anything loads, so a wrong file is one line with the fix."""
    from talkrt.engines.model_files import check_model_file

    if backend == "torch":
        return
    for role, path in models.items():
        if path is not None:
            check_model_file(path, backend, expected_graph(renderer, role))


def models_for(renderer: str, backend: str, model: Path | None, engines: Path | None) -> dict[str, Path | None]:
    """Role -> file for each of the renderer's graphs: ``model`` is the generator; ``engines`` is a
    directory holding <stem>.engine (trt) or <stem>.onnx (ort) per role."""
    roles = get_renderer_family(renderer).roles
    models: dict[str, Path | None] = {role: None for role in roles}
    models["generator"] = model
    suffix = "engine" if backend == "trt" else "onnx"
    if engines is not None:
        if backend == "torch":
            raise TalkrtError("--engines is for --backend trt or ort; --backend torch takes a checkpoint with --model")
        if not engines.is_dir():
            raise TalkrtError(f"--engines {engines} is not a directory")
        for role, info in roles.items():
            candidate = engines / f"{info.stem}.{suffix}"
            if models[role] is None and candidate.is_file():
                models[role] = candidate
    if backend != "torch" and models["generator"] is None:
        generator = roles["generator"]
        where = f"{engines / generator.stem}.{suffix} not found" if engines else f"the {backend} backend needs --model FILE or --engines DIR"
        raise TalkrtError(f"{where}; export it with `talkrt export {generator.graph}` (and `talkrt build` for trt)")
    return models


def random_roles(renderer: str, models: Mapping[str, Any], options: RendererOptions) -> list[str]:
    """Roles that run random weights in PyTorch although a checkpoint was given for the generator
    (those the generator's file does not also hold, and those the options do not make unnecessary)."""
    family = get_renderer_family(renderer)
    skip = {"generator", *family.shared_weights, *options.unused_roles()}
    return [role for role in models if role not in skip]


def build_renderer(
    name: str,
    backend: str,
    models: Mapping[str, str | Path | None],
    device: torch.device,
    *,
    options: RendererOptions | None = None,
    torch_dtype: torch.dtype = torch.float32,
    **option_fields: Any,
):
    """A renderer with one runner per graph; ``models`` maps a role to an engine / ONNX file / checkpoint.

    A role without a file runs its random-weight PyTorch module (torch backend only), in
    ``torch_dtype`` (float16 for the half-precision baseline). ``options`` (or their fields as
    keywords, e.g. ``features=`` for DINet, ``pca=`` for DH_live) are the family's own.
    """
    from talkrt.engines.runners import make_runner

    family = get_renderer_family(name)
    options = options or family.renderer_options(**option_fields)
    if backend == "torch":  # a role the generator's checkpoint also holds loads from it
        models = {**models, **{role: models.get(owner) for role, owner in family.shared_weights.items() if models.get(role) is None}}

    def runner(role: str, **spec_options: Any) -> Runner:
        info = family.roles[role]
        path = models.get(role)
        if backend != "torch":
            if path is None:
                raise TalkrtError(f"{name} needs its {role} graph ({info.stem}.{'engine' if backend == 'trt' else 'onnx'}): export it with `talkrt export {info.graph}`")
            return make_runner(backend, path, device=device, expect=expected_graph(name, role))
        spec = get_spec(info.graph, **info.options, **spec_options)
        module = spec.build_module(str(path)) if path else spec.build_module(None, seed=0)
        return make_runner("torch", spec=spec, module=module, device=device, torch_dtype=torch_dtype)

    return family.build_renderer(runner, options, RendererContext(backend, device, models))
