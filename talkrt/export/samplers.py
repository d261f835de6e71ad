"""How a graph's example inputs are drawn: one declarative sampler per input, one drawing function.

Parity validation, precision plans and their gates, ``talkrt check`` and the
benchmarks all draw inputs through ``sample_inputs``, so a graph is judged on the
values it sees in use: lengths within the padded width, 0/1 masks that agree
with them, Gaussian noise where the graph expects noise. The sampler travels
with its input in the spec JSON inside the ONNX file. An input without one is
drawn uniformly from its value range (integers inclusive), which is also how
files written before samplers existed are drawn.

The same draws run on a ``torch.Generator`` (validation, export, benchmarks) or a
``numpy.random.Generator`` (ONNX-only tools: precision plans, check); each keeps
its own stream, so seeded inputs stay what they were for either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

import numpy as np

if TYPE_CHECKING:
    import torch

SamplerKind = Literal["uniform", "integers", "normal", "lengths", "mask_from_lengths"]
KINDS: tuple[str, ...] = ("uniform", "integers", "normal", "lengths", "mask_from_lengths")
Rng = Union["torch.Generator", np.random.Generator]


@dataclass(frozen=True)
class Sampler:
    """How one input's values are drawn.

    * ``uniform``: floats in the input's value range.
    * ``integers``: integers in the value range, both ends included.
    * ``normal``: standard normal (noise inputs; the value range is only the fallback of older readers).
    * ``lengths``: per-item lengths in [1, size of ``dim``], the first item full (it fills the padded width).
    * ``mask_from_lengths``: a 0/1 mask over the axis ``dim``, batch on axis 0: 1 before each item's
      length, 0 after. The lengths are the input named ``lengths``, or drawn as by ``lengths``.

    ``masked_by`` names a mask input this one is multiplied by after drawing, for inputs the
    runtime leaves zero beyond each item (an expanded prior).
    """

    kind: SamplerKind
    dim: str | None = None
    lengths: str | None = None
    masked_by: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sampler kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind in ("lengths", "mask_from_lengths") and not self.dim:
            raise ValueError(f"a {self.kind} sampler needs the dim its lengths run over")
        if self.kind not in ("lengths", "mask_from_lengths") and self.dim:
            raise ValueError(f"a {self.kind} sampler takes no dim")
        if self.lengths and self.kind != "mask_from_lengths":
            raise ValueError("only a mask_from_lengths sampler reads a lengths input")

    def to_json(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in (("dim", self.dim), ("lengths", self.lengths), ("masked_by", self.masked_by)) if v}}

    @classmethod
    def from_json(cls, data: Mapping) -> Sampler:
        return cls(data["kind"], data.get("dim"), data.get("lengths"), data.get("masked_by"))


UNIFORM = Sampler("uniform")
INTEGERS = Sampler("integers")
NORMAL = Sampler("normal")


def lengths_over(dim: str) -> Sampler:
    """Per-item lengths in [1, ``dim``]."""
    return Sampler("lengths", dim=dim)


def mask_over(dim: str, lengths: str | None = None) -> Sampler:
    """A 0/1 mask over ``dim``: from the input ``lengths``, or from lengths drawn for it."""
    return Sampler("mask_from_lengths", dim=dim, lengths=lengths)


def default_sampler(dtype: str) -> Sampler:
    """What an input without a sampler gets (and every input of a file written before samplers)."""
    return INTEGERS if dtype.startswith("int") else UNIFORM


class SampledInput(Protocol):
    """What ``sample_inputs`` reads of an input (``TensorSpec`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int | str, ...]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def value_range(self) -> tuple[float, float]: ...
    @property
    def sampler(self) -> Sampler | None: ...


def sample_inputs(inputs: Sequence[SampledInput], sizes: Mapping[str, int], rng: Rng) -> dict[str, Any]:
    """Fresh inputs at the dim sizes ``sizes``: torch tensors for a ``torch.Generator``, arrays for a numpy one.

    Inputs are drawn in order, one call on ``rng`` each (a mask drawing its own lengths
    draws just those); a mask read from a lengths input and ``masked_by`` use no randomness
    and are applied afterwards, so adding them leaves every other input's values unchanged.
    """
    draw = _NumpyDraws(rng) if isinstance(rng, np.random.Generator) else _TorchDraws(rng)
    tensors: dict[str, Any] = {}
    later: list[tuple[SampledInput, tuple[int, ...], Sampler]] = []
    for tensor in inputs:
        shape = tuple(sizes[s] if isinstance(s, str) else s for s in tensor.shape)
        sampler = tensor.sampler or default_sampler(tensor.dtype)
        low, high = tensor.value_range
        if sampler.kind == "uniform":
            tensors[tensor.name] = draw.uniform(low, high, shape, tensor.dtype)
        elif sampler.kind == "integers":
            tensors[tensor.name] = draw.integers(low, high, shape, tensor.dtype)
        elif sampler.kind == "normal":
            tensors[tensor.name] = draw.normal(shape, tensor.dtype)
        elif sampler.kind == "lengths":
            tensors[tensor.name] = _lengths(draw, sizes[sampler.dim], shape, tensor.dtype)
        elif sampler.lengths:
            later.append((tensor, shape, sampler))
        else:
            lengths = _lengths(draw, sizes[sampler.dim], shape[:1], "int64")
            tensors[tensor.name] = draw.mask(lengths, shape, _axis(tensor, sampler), tensor.dtype)
    for tensor, shape, sampler in later:
        tensors[tensor.name] = draw.mask(tensors[sampler.lengths], shape, _axis(tensor, sampler), tensor.dtype)
    for tensor in inputs:
        if tensor.sampler is not None and tensor.sampler.masked_by:
            tensors[tensor.name] = tensors[tensor.name] * tensors[tensor.sampler.masked_by]
    return tensors


def _lengths(draw: _TorchDraws | _NumpyDraws, size: int, shape: tuple[int, ...], dtype: str):
    values = draw.integers(1, size, shape, dtype)
    values[0] = size  # the longest item fills the padded width, as in a real padded batch
    return values


def _axis(tensor: SampledInput, sampler: Sampler) -> int:
    if sampler.dim not in tensor.shape:
        raise ValueError(f"{tensor.name}: its mask runs over {sampler.dim!r}, which is not one of its axes {tensor.shape}")
    return tensor.shape.index(sampler.dim)


def _positions_before(lengths, size: int, shape: tuple[int, ...], axis: int, arange):
    """Boolean (shape): position along ``axis`` < the item's length (batch on axis 0)."""
    along = [1] * len(shape)
    along[axis] = size
    per_item = [1] * len(shape)
    per_item[0] = shape[0]
    return arange(size).reshape(along) < lengths.reshape(per_item)


class _TorchDraws:
    # The calls and their order are the ones ExportSpec.example_inputs has always made,
    # so validation inputs (and exported traces) are bit-for-bit what they were.
    def __init__(self, generator: torch.Generator) -> None:
        import torch

        self.torch, self.generator = torch, generator

    def _dtype(self, name: str):
        return getattr(self.torch, name)

    def uniform(self, low: float, high: float, shape: tuple[int, ...], dtype: str):
        return self.torch.rand(shape, generator=self.generator, dtype=self._dtype(dtype)) * (high - low) + low

    def integers(self, low: float, high: float, shape: tuple[int, ...], dtype: str):
        return self.torch.randint(int(low), int(high) + 1, shape, generator=self.generator, dtype=self._dtype(dtype))

    def normal(self, shape: tuple[int, ...], dtype: str):
        return self.torch.randn(shape, generator=self.generator, dtype=self._dtype(dtype))

    def mask(self, lengths, shape: tuple[int, ...], axis: int, dtype: str):
        inside = _positions_before(self.torch.as_tensor(lengths), shape[axis], shape, axis, self.torch.arange)
        return inside.expand(shape).to(self._dtype(dtype)).contiguous()


class _NumpyDraws:
    # The calls precision plans have always made for uniform and integer inputs.
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    @staticmethod
    def _dtype(name: str) -> np.dtype:
        try:
            return np.dtype(name)
        except TypeError:  # a torch-only name (bfloat16): drawn as float32, as before samplers
            return np.dtype(np.float32)

    def uniform(self, low: float, high: float, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return self.rng.uniform(low, high, shape).astype(self._dtype(dtype))

    def integers(self, low: float, high: float, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return self.rng.integers(int(low), int(high) + 1, shape).astype(self._dtype(dtype))

    def normal(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return self.rng.standard_normal(shape).astype(self._dtype(dtype))

    def mask(self, lengths, shape: tuple[int, ...], axis: int, dtype: str) -> np.ndarray:
        inside = _positions_before(np.asarray(lengths), shape[axis], shape, axis, np.arange)
        return np.ascontiguousarray(np.broadcast_to(inside, shape).astype(self._dtype(dtype)))
