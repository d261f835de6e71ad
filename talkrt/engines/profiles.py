"""Optimization profiles: (min, opt, max) input shapes for an engine.

Defaults come from the spec that talkrt wrote into the ONNX file; a graph talkrt
did not export gets them from ``--profile`` for each dynamic dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from talkrt.errors import TalkrtError
from talkrt.export.spec import StoredSpec, TensorSpec

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


@dataclass(frozen=True)
class ProfileOverride:
    """One ``--profile NAME:MIN,OPT,MAX``: NAME is a dim or an input; values are sizes or shapes like 1x6x96x96."""

    name: str
    values: tuple[int | Shape, int | Shape, int | Shape]


MAX_WIDENING = 16  # how far --profile may raise a dim above the graph's own maximum


def parse_profile_override(text: str) -> ProfileOverride:
    name, sep, rest = text.partition(":")
    parts = rest.split(",")
    if not sep or not name or len(parts) != 3:
        raise TalkrtError(f"bad --profile {text!r}: expected NAME:MIN,OPT,MAX, e.g. batch:1,8,32 or face_sequences:1x6x96x96,...")
    try:
        values = tuple(tuple(int(v) for v in p.split("x")) if "x" in p else int(p) for p in parts)
    except ValueError:
        raise TalkrtError(f"bad --profile {text!r}: sizes must be integers or shapes like 1x6x96x96") from None
    return ProfileOverride(name, values)  # type: ignore[arg-type]


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The inputs of the ONNX graph itself, not of the spec it may carry: a graph talkrt did not
    export has them too. Dynamic axes keep their names; one without a name is called ``input:axis``."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = tuple(
            d.dim_param if d.dim_param else (d.dim_value if d.dim_value > 0 else f"{value.name}:{axis}")
            for axis, d in enumerate(tensor_type.shape.dim)
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        inputs.append(TensorSpec(value.name, shape, dtype))
    return inputs


def spec_dims(model: onnx.ModelProto) -> dict[str, tuple[int, int, int]]:
    """The dim ranges of the ExportSpec stored in the model, or {} for a foreign graph."""
    spec = StoredSpec.from_onnx(model)
    return {} if spec is None else dict(spec.dims)  # type: ignore[return-value]


def resolve_profile(inputs: Sequence[TensorSpec], dims: Mapping[str, tuple[int, int, int]], overrides: Sequence[ProfileOverride] = ()) -> Profile:
    """Combine the spec's dim ranges with user overrides into one profile for every input."""
    sizes = dict(dims)
    set_by: dict[str, str] = {}  # dim -> the --profile that set it
    explicit: dict[str, tuple[Shape, Shape, Shape]] = {}
    by_name = {i.name: i for i in inputs}
    all_dims = {s for i in inputs for s in i.shape if isinstance(s, str)}
    for override in overrides:
        if override.name in by_name and isinstance(override.values[0], tuple):
            explicit[override.name] = override.values  # type: ignore[assignment]
            continue
        if any(isinstance(v, tuple) for v in override.values):
            raise TalkrtError(f"--profile {override.name}: full shapes are only for inputs; {override.name!r} is not an input")
        dim = override.name
        if override.name in by_name:
            dynamic = [s for s in by_name[override.name].shape if isinstance(s, str)]
            if len(dynamic) != 1:
                raise TalkrtError(f"--profile {override.name}: this input has {len(dynamic)} dynamic dims ({', '.join(dynamic) or 'none'}); give full shapes like 1x16000 or name a dim")
            dim = dynamic[0]
        elif override.name not in all_dims:
            raise TalkrtError(f"--profile {override.name}: no input or dynamic dim of that name; inputs: {', '.join(by_name)}; dims: {', '.join(sorted(all_dims)) or 'none'}")
        sizes[dim] = override.values  # type: ignore[assignment]
        set_by[dim] = f"--profile {override.name}"
    for name, shapes in explicit.items():
        _share_dims(by_name[name], shapes, sizes, set_by)
    for name, (low, opt, high) in sizes.items():
        if not 1 <= low <= opt <= high:
            raise TalkrtError(f"profile for {name}: need 1 <= min <= opt <= max, got {low}, {opt}, {high}")
        if name in dims and high > MAX_WIDENING * dims[name][2]:
            raise TalkrtError(
                f"profile for {name}: max {high} is over {MAX_WIDENING}x the graph's own maximum {dims[name][2]}; an engine "
                f"reserves memory for its largest shape: give at most {MAX_WIDENING * dims[name][2]}, or several profiles with --add-profile"
            )
    profile: Profile = {}
    for graph_input in inputs:
        if graph_input.name in explicit:
            profile[graph_input.name] = _checked_shapes(graph_input, explicit[graph_input.name])
            continue
        missing = [s for s in graph_input.shape if isinstance(s, str) and s not in sizes]
        if missing:
            raise TalkrtError(f"input {graph_input.name} has dynamic dim {missing[0]!r} with no range: pass --profile {missing[0]}:MIN,OPT,MAX")
        profile[graph_input.name] = tuple(  # type: ignore[assignment]
            tuple(sizes[s][i] if isinstance(s, str) else s for s in graph_input.shape) for i in range(3)
        )
    return profile


def _share_dims(graph_input: TensorSpec, shapes: tuple[Shape, Shape, Shape], sizes: dict, set_by: dict[str, str]) -> None:
    """A full shape given for one input sets its named dims for every input that shares them
    (face_sequences' batch is audio_sequences' batch too); two settings that disagree are refused."""
    flag = f"--profile {graph_input.name}"
    for axis, dim in enumerate(graph_input.shape):
        if not isinstance(dim, str) or any(len(shape) != len(graph_input.shape) for shape in shapes):
            continue
        values = tuple(int(shape[axis]) for shape in shapes)
        if dim in set_by and tuple(sizes[dim]) != values:
            raise TalkrtError(
                f"{flag} sets {dim!r} to {','.join(map(str, values))} but {set_by[dim]} sets it to "
                f"{','.join(map(str, sizes[dim]))}: the inputs share that dim; give it once, e.g. --profile {dim}:{','.join(map(str, values))}"
            )
        sizes[dim], set_by[dim] = values, flag


def _checked_shapes(graph_input: TensorSpec, shapes: tuple[Shape, Shape, Shape]) -> tuple[Shape, Shape, Shape]:
    for shape in shapes:
        if len(shape) != len(graph_input.shape) or any(
            isinstance(s, int) and s != v for s, v in zip(graph_input.shape, shape)
        ):
            raise TalkrtError(f"--profile {graph_input.name}: shape {'x'.join(map(str, shape))} does not fit the input's shape {graph_input.shape}")
    if any(not a <= b <= c for a, b, c in zip(*shapes)):
        raise TalkrtError(f"--profile {graph_input.name}: need min <= opt <= max in every axis")
    return shapes


def select_profile(profiles: Sequence[Mapping[str, Mapping[str, Sequence[int]]]], shapes: Mapping[str, Sequence[int]], engine: str = "the engine") -> int:
    """Index of the first profile (sidecar form: input -> {min, opt, max}) whose bounds hold ``shapes``.

    Inputs a profile does not list (static ones) are not constrained by it.
    """

    def covers(profile: Mapping[str, Mapping[str, Sequence[int]]]) -> bool:
        for name, shape in shapes.items():
            bounds = profile.get(name)
            if bounds is None:
                continue
            if len(shape) != len(bounds["min"]):
                return False
            if any(not lo <= size <= hi for size, lo, hi in zip(shape, bounds["min"], bounds["max"])):
                return False
        return True

    for index, profile in enumerate(profiles):
        if covers(profile):
            return index
    wanted = ", ".join(f"{name} {_dims(shape)}" for name, shape in shapes.items())
    allowed = "; ".join(
        f"profile {index}: " + ", ".join(f"{name} {_dims(b['min'])}..{_dims(b['max'])}" for name, b in profile.items()) for index, profile in enumerate(profiles)
    )
    raise TalkrtError(f"no optimization profile of {engine} covers {wanted} ({allowed}): rebuild with --profile or --add-profile covering these shapes")


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(size)) for size in shape)
