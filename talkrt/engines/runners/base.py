"""What every runner shares: graph descriptions (TensorSpecs in and out), dim formulas, binding checks, staging buffers and the Runner base class.

The backend modules (ort, pytorch, trt) build on this module; the package
``talkrt.engines.runners`` re-exports its public names and picks a backend.
"""

from __future__ import annotations

import ast
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from talkrt.engines.devices import normalize_device
from talkrt.errors import TalkrtError
from talkrt.export.spec import ExportSpec, StoredSpec, TensorSpec

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool, "uint8": torch.uint8}


@dataclass(frozen=True)
class GraphIO:
    """Names, dims and dtypes of a graph's inputs and outputs, plus formulas for derived output dims."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    derived: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, spec: StoredSpec) -> "GraphIO":
        """From the spec an exported graph carries."""
        return cls(spec.inputs, spec.outputs, dict(spec.derived_dims))

    @classmethod
    def from_spec_json(cls, spec: Mapping) -> "GraphIO":
        """From a ``talkrt.spec`` JSON (ExportSpec.to_json)."""
        return cls.from_stored(StoredSpec.from_json(spec))

    @classmethod
    def from_spec(cls, spec: ExportSpec) -> "GraphIO":
        return cls.from_spec_json(spec.to_json())

    @classmethod
    def from_onnx(cls, path: str | Path) -> "GraphIO":
        from talkrt.engines.model_files import load_onnx, onnx_spec

        return cls.from_stored(onnx_spec(load_onnx(path), Path(path)))

    def output_shapes(self, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
        """Concrete output shapes for concrete input shapes (dims bound by name, derived dims evaluated)."""
        sizes: dict[str, int] = {}
        for tensor in self.inputs:
            shape = input_shapes[tensor.name]
            if len(shape) != len(tensor.shape):
                raise TalkrtError(f"input {tensor.name}: expected {len(tensor.shape)} dims {tensor.shape}, got shape {tuple(shape)}")
            for dim, size in zip(tensor.shape, shape):
                if isinstance(dim, str):
                    if sizes.setdefault(dim, int(size)) != int(size):
                        raise TalkrtError(f"dim {dim!r} is {sizes[dim]} in one input and {size} in {tensor.name}")
                elif dim != size:
                    raise TalkrtError(f"input {tensor.name}: expected shape {tensor.shape}, got {tuple(shape)}")
        for name, formula in self.derived.items():
            sizes[name] = evaluate_dim(formula, sizes)
        return {t.name: tuple(sizes[d] if isinstance(d, str) else d for d in t.shape) for t in self.outputs}


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv}


def evaluate_dim(formula: str, sizes: Mapping[str, int]) -> int:
    """Evaluate a derived-dim formula such as ``floor((samples - 400) / 320) + 1`` (arithmetic, floor, ceil only)."""

    def visit(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in sizes:
            return sizes[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](visit(node.left), visit(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("floor", "ceil") and len(node.args) == 1:
            return getattr(math, node.func.id)(visit(node.args[0]))
        raise TalkrtError(f"cannot evaluate dim formula {formula!r}")

    return int(visit(ast.parse(formula, mode="eval")))


def check_binding(
    what: str,
    tensor: torch.Tensor,
    dtype: torch.dtype,
    device: torch.device,
    shape: Sequence[int] | None = None,
    alignment: int = 1,
) -> None:
    """Raise one clear error where a tensor cannot be handed to a backend by its address.

    Backends read raw pointers: a wrong dtype, device or stride is not caught by them,
    and TensorRT also needs every address aligned (a view at an odd offset is not).
    """
    if tensor.dtype != dtype:
        raise TalkrtError(f"{what} is {str(tensor.dtype).removeprefix('torch.')}, the graph takes {str(dtype).removeprefix('torch.')}")
    if tensor.device != device:
        raise TalkrtError(f"{what} is on {tensor.device}, the runner on {device}")
    if not tensor.is_contiguous():
        raise TalkrtError(f"{what} is not contiguous (strides {tensor.stride()}): pass a contiguous tensor")
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        raise TalkrtError(f"{what} buffer is {tuple(tensor.shape)}, needs {tuple(shape)}")
    if alignment > 1 and tensor.data_ptr() % alignment:
        raise TalkrtError(f"{what} starts at an address that is not {alignment}-byte aligned (a view at offset {tensor.storage_offset()}): copy it into a staging buffer")


class StagingBuffers:
    """Grow-only buffers, one per name, each starting where its allocation starts.

    ``copy(name, source)`` returns a contiguous copy of ``source`` at the buffer's
    base address (aligned as the allocator aligns), for inputs that are otherwise
    views at arbitrary offsets (a window of a longer tensor). Memory is allocated
    only when a source is larger than every earlier one under that name.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def copy(self, name: str, source: torch.Tensor) -> torch.Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < source.numel() or buffer.dtype != source.dtype or buffer.device != source.device:
            buffer = self._buffers[name] = torch.empty(source.numel(), dtype=source.dtype, device=source.device)
        staged = buffer[: source.numel()].view(source.shape)
        staged.copy_(source)
        return staged


class Runner(ABC):
    """The one interface every backend offers (Polygraphy's runners are the model).

    A runner holds loaders (talkrt.engines.runners.loaders) and makes its backend objects
    only when activated. ``activate(stream)`` binds the CUDA stream every ``run`` is queued
    on; ``run`` activates a runner never activated on the current stream; ``release()``
    deactivates it.
    """

    backend: str = "?"
    # May a caller capture run() in a torch CUDA graph? TensorRT-RTX captures itself and
    # ONNX Runtime synchronises inside run(), so neither may be captured from outside.
    capturable: bool = False
    io: GraphIO  # set by each backend (an engine's from its own bindings)

    def __init__(self, device: str | torch.device) -> None:
        self.device = normalize_device(device)
        self.stream: torch.cuda.Stream | None = None
        self.active = False

    def activate(self, stream: torch.cuda.Stream | None = None) -> "Runner":
        """Make the backend objects and bind ``stream`` (None: the device's current stream now;
        ignored on the CPU). Idempotent; an active runner asked for another stream is released
        and activated again on it (ONNX Runtime fixes the stream in its session)."""
        if self.active:
            if stream is None or self.stream is None or stream.cuda_stream == self.stream.cuda_stream:
                return self
            self.release()
        if self.device.type == "cuda":
            self.stream = stream or torch.cuda.current_stream(self.device)
        self._activate()
        self.active = True
        return self

    def release(self) -> None:
        """Deactivate: persist what outlives the process (the TensorRT-RTX runtime cache) and drop
        the backend objects; idempotent, and a later run() activates again."""
        if self.active:
            self._deactivate()
            self.active, self.stream = False, None

    def run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Run on the bound stream and write ``outputs`` in place (allocated here when None)."""
        self.activate()
        return self._run(inputs, outputs)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.io.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.io.outputs]

    def allocate_outputs(self, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """Output buffers for these input shapes; call once at setup, then pass them to every run()."""
        shapes = self.io.output_shapes(input_shapes)
        return {t.name: torch.empty(shapes[t.name], dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.io.outputs}

    def _check(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise TalkrtError(f"{self.backend} runner: missing inputs {missing}")
        if outputs is None:
            return self.allocate_outputs({n: inputs[n].shape for n in self.input_names})
        expected = self.io.output_shapes({n: inputs[n].shape for n in self.input_names})
        for name, shape in expected.items():
            if tuple(outputs[name].shape) != shape:
                raise TalkrtError(f"{self.backend} runner: output {name} buffer is {tuple(outputs[name].shape)}, needs {shape}")
        return dict(outputs)

    @abstractmethod
    def _activate(self) -> None:
        """Call the loaders; ``self.stream`` is bound."""

    @abstractmethod
    def _deactivate(self) -> None:
        """Drop what ``_activate`` made."""

    @abstractmethod
    def _run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """run() on an active runner."""
