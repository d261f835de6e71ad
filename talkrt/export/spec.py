"""ExportSpec: the declarative description of one exportable graph.

One spec per graph is the single source of truth for its shapes: the CLI, the
exporter, validation, the engine builder's default profiles and the runtime all
read it. The spec is also serialized into the ONNX file (``talkrt.spec``), so an
exported graph describes itself to tools that never import the model code;
:class:`StoredSpec` is the one reader of that stored copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import talkrt
from talkrt.export.samplers import Sampler, sample_inputs

DimPoint = Mapping[str, int]  # symbolic dim name -> concrete size

# The ONNX metadata property that carries ExportSpec.to_json().
SPEC_KEY = "talkrt.spec"


@dataclass(frozen=True)
class Dim:
    """A dynamic axis: its symbolic name and the range an engine profile covers."""

    name: str
    min: int
    opt: int
    max: int
    # Size used to trace the export when opt will not do: torch.export specialises a
    # dim traced at size 1, so a batch whose opt is 1 is traced at 2.
    trace: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"dim {self.name}: need 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}")

    @property
    def trace_size(self) -> int:
        return self.opt if self.trace is None else self.trace


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` holds ints and names of the spec's Dims."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    convention: str = ""  # what the values mean, e.g. "BGR in [0, 1]"; written into the ONNX metadata
    value_range: tuple[float, float] = (0.0, 1.0)  # where example inputs are drawn from
    # How example inputs are drawn; None: uniformly from value_range (integers inclusive).
    sampler: Sampler | None = None

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {axis: size for axis, size in enumerate(self.shape) if isinstance(size, str)}

    def to_json(self) -> dict:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "convention": self.convention, "value_range": list(self.value_range)}
        if self.sampler is not None:  # absent: the default draw, so files of graphs without one are unchanged
            data["sampler"] = self.sampler.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> TensorSpec:
        """One tensor of a ``talkrt.spec`` JSON; files written before samplers have none and get the default."""
        sampler = data.get("sampler")
        return cls(
            str(data["name"]),
            tuple(data["shape"]),
            str(data.get("dtype", "float32")),
            str(data.get("convention", "")),
            tuple(data.get("value_range", (0.0, 1.0))),
            Sampler.from_json(sampler) if sampler else None,
        )


@dataclass(frozen=True)
class Tolerance:
    """Parity bound, elementwise: |onnx - torch| <= atol + rtol * |torch|."""

    atol: float
    rtol: float


@dataclass(frozen=True)
class Gate:
    """A task-level check of a reduced-precision graph or engine against the FP32 graph.

    ``metric``: "psnr" (dB, images, ``peak`` is the value range), "cosine" (per row of
    the last axis, e.g. per feature frame; the gate holds on the minimum), "snr"
    (dB, waveforms) or "max_abs". ``region`` crops the output before the metric, one
    (start, stop) pair per axis after the batch axis (None: the whole axis), e.g.
    the mouth rows of a face.
    """

    output: str
    metric: Literal["psnr", "cosine", "snr", "max_abs"]
    threshold: float
    region: tuple[tuple[int | None, int | None], ...] = ()
    peak: float = 1.0
    description: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "max_abs"

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    def to_json(self) -> dict:
        return {"output": self.output, "metric": self.metric, "threshold": self.threshold, "region": [list(r) for r in self.region], "peak": self.peak, "description": self.description}

    @classmethod
    def from_json(cls, data: Mapping) -> Gate:
        """One gate of a ``talkrt.spec`` JSON; region, peak and description may be absent."""
        region = tuple(tuple(pair) for pair in data.get("region", ()))
        return cls(data["output"], data["metric"], float(data["threshold"]), region=region, peak=float(data.get("peak", 1.0)), description=data.get("description", ""))  # type: ignore[arg-type]


ModuleFactory = Callable[..., "object"]  # (checkpoint path | None, trust: bool) -> eval-mode nn.Module


@dataclass(frozen=True)
class ExportSpec:
    family: str
    graph: str
    build_module: ModuleFactory
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: tuple[Dim, ...]
    opset: int
    exporter: Literal["dynamo", "legacy"]
    exporter_reason: str
    tolerance: Tolerance
    # Shapes at which parity is checked; they must differ from the traced (opt) point
    # so a size baked into the graph by tracing is caught. A static graph (no dims)
    # lists {} once per check: each is a fresh draw of its inputs.
    validation_points: tuple[DimPoint, ...]
    # Output dims computed from input dims, name -> formula (documentation for users and metadata).
    derived_dims: Mapping[str, str] = field(default_factory=dict)
    keep_fp32_ops: tuple[str, ...] = ()  # op types an FP16 build keeps in FP32
    keep_fp32_reason: str = ""  # why: travels in the file, so the engine's sidecar says it for every node kept
    gates: tuple[Gate, ...] = ()  # what "as good as FP32" means for this graph's task
    metadata: Mapping[str, str] = field(default_factory=dict)  # sample rate, fps, alignment contract, ...
    description: str = ""

    def __post_init__(self) -> None:
        names = {d.name for d in self.dims} | set(self.derived_dims)
        for tensor in (*self.inputs, *self.outputs):
            unknown = set(tensor.dynamic_axes.values()) - names
            if unknown:
                raise ValueError(f"{self.family}/{self.graph}: {tensor.name} uses undeclared dims {sorted(unknown)}")
        inputs = {t.name: t for t in self.inputs}
        for tensor in self.inputs:
            sampler = tensor.sampler
            if sampler is None:
                continue
            if sampler.dim is not None and sampler.dim not in {d.name for d in self.dims}:
                raise ValueError(f"{self.family}/{self.graph}: {tensor.name}'s sampler runs over {sampler.dim!r}, not one of its dims")
            if sampler.kind == "mask_from_lengths" and sampler.dim not in tensor.shape:
                raise ValueError(f"{self.family}/{self.graph}: {tensor.name} is a mask over {sampler.dim!r} but has no such axis")
            for other in (sampler.lengths, sampler.masked_by):
                if other is not None and (other not in inputs or other == tensor.name):
                    raise ValueError(f"{self.family}/{self.graph}: {tensor.name}'s sampler reads {other!r}, which is not another input")
            if sampler.masked_by is not None and (inputs[sampler.masked_by].sampler or Sampler("uniform")).kind != "mask_from_lengths":
                raise ValueError(f"{self.family}/{self.graph}: {tensor.name} is masked by {sampler.masked_by!r}, which is not a mask")
        trace = self.trace_point
        for point in self.validation_points:
            if self.dims and dict(point) == dict(trace):
                raise ValueError(f"{self.family}/{self.graph}: validation point {dict(point)} equals the traced shape")

    @property
    def name(self) -> str:
        return self.family if self.graph == self.family else f"{self.family}-{self.graph}"

    def dim(self, name: str) -> Dim:
        return next(d for d in self.dims if d.name == name)

    @property
    def trace_point(self) -> dict[str, int]:
        return {d.name: d.trace_size for d in self.dims}

    def shape(self, tensor: TensorSpec, point: DimPoint) -> tuple[int, ...]:
        return tuple(point[s] if isinstance(s, str) else s for s in tensor.shape)

    def example_inputs(self, point: DimPoint | None = None, seed: int = 0) -> dict[str, "object"]:
        """Fresh random inputs at ``point`` (default: the traced point), drawn by each input's sampler."""
        import torch

        point = self.trace_point if point is None else {**self.trace_point, **point}
        return sample_inputs(self.inputs, point, torch.Generator().manual_seed(seed))

    def to_json(self) -> dict:
        """The part of the spec that travels inside the ONNX file."""
        return {
            "family": self.family,
            "graph": self.graph,
            "opset": self.opset,
            "exporter": self.exporter,
            "dims": {d.name: [d.min, d.opt, d.max] for d in self.dims},
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "derived_dims": dict(self.derived_dims),
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
            "keep_fp32_ops": list(self.keep_fp32_ops),
            "keep_fp32_reason": self.keep_fp32_reason,
            "gates": [g.to_json() for g in self.gates],
        }

    def onnx_metadata(self) -> dict[str, str]:
        props = {
            "talkrt.family": self.family,
            "talkrt.graph": self.graph,
            "talkrt.version": talkrt.__version__,
            SPEC_KEY: json.dumps(self.to_json(), separators=(",", ":")),
        }
        for tensor in (*self.inputs, *self.outputs):
            if tensor.convention:
                props[f"talkrt.tensor.{tensor.name}"] = tensor.convention
        props.update({f"talkrt.{k}": str(v) for k, v in self.metadata.items()})
        return props


# Properties ExportSpec.onnx_metadata writes besides its metadata: not part of StoredSpec.metadata.
_OWN_PROPERTIES = (SPEC_KEY, "talkrt.family", "talkrt.graph", "talkrt.version")


@dataclass(frozen=True)
class StoredSpec:
    """The spec an exported graph carries (``ExportSpec.to_json`` in its ``talkrt.spec`` property), read back.

    ``data`` is the JSON as stored and ``properties`` every metadata property of the
    file it came from. The typed views are read on first use, so a spec written by
    hand with only some keys serves the readers that need only those: ``inputs`` and
    ``outputs`` must be present when read (KeyError otherwise), ``dims``,
    ``derived_dims``, ``keep_fp32_ops`` and ``gates`` are empty when absent.
    """

    data: Mapping[str, Any]
    properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, spec: str | bytes | Mapping[str, Any], properties: Mapping[str, str] | None = None) -> StoredSpec:
        """From the property's value, as text or already parsed."""
        data = json.loads(spec) if isinstance(spec, (str, bytes)) else spec
        return cls(data, dict(properties or {}))

    @classmethod
    def from_onnx(cls, model: Any) -> StoredSpec | None:
        """The spec stored in ``model`` (an ``onnx.ModelProto`` or a path to one), or None where it carries none.

        A path is loaded without external data (only the metadata is read); callers
        that want a damaged file named load it themselves and pass the model.
        """
        if isinstance(model, (str, os.PathLike)):
            import onnx

            model = onnx.load(str(model), load_external_data=False)
        properties = {p.key: p.value for p in model.metadata_props}
        if SPEC_KEY not in properties:
            return None
        return cls.from_json(properties[SPEC_KEY], properties)

    @property
    def family(self) -> str | None:
        return self.data.get("family")

    @property
    def graph(self) -> str | None:
        return self.data.get("graph")

    @property
    def opset(self) -> int | None:
        return self.data.get("opset")

    @property
    def exporter(self) -> str | None:
        return self.data.get("exporter")

    @cached_property
    def dims(self) -> dict[str, tuple[int, ...]]:
        """Dim name -> (min, opt, max)."""
        return {name: tuple(sizes) for name, sizes in self.data.get("dims", {}).items()}

    @cached_property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(tensor) for tensor in self.data["inputs"])

    @cached_property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(tensor) for tensor in self.data["outputs"])

    @cached_property
    def derived_dims(self) -> dict[str, str]:
        return dict(self.data.get("derived_dims", {}))

    @cached_property
    def tolerance(self) -> Tolerance | None:
        tolerance = self.data.get("tolerance")
        return None if tolerance is None else Tolerance(float(tolerance["atol"]), float(tolerance["rtol"]))

    @cached_property
    def keep_fp32_ops(self) -> tuple[str, ...]:
        return tuple(self.data.get("keep_fp32_ops", ()))

    @property
    def keep_fp32_reason(self) -> str:
        return str(self.data.get("keep_fp32_reason", ""))

    @cached_property
    def gates(self) -> tuple[Gate, ...]:
        return tuple(Gate.from_json(entry) for entry in self.data.get("gates", ()))

    @cached_property
    def metadata(self) -> dict[str, str]:
        """The file's other ``talkrt.<key>`` properties, by key: ExportSpec.metadata as written, and any
        added later (``talkrt.precision`` on a mixed graph). Tensor conventions are in ``inputs`` and ``outputs``."""
        return {
            key.removeprefix("talkrt."): value
            for key, value in self.properties.items()
            if key.startswith("talkrt.") and key not in _OWN_PROPERTIES and not key.startswith("talkrt.tensor.")
        }
