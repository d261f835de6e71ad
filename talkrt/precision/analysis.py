"""Graph analysis for a mixed FP16 plan: a prepared copy of the FP32 graph (unique node
names, float constants as initializers, every tensor's element type, producers and
consumers), which nodes have a precision, and which can never be FP16 (no FLOAT16
form, control flow, values FP16 cannot store)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FP16_MAX = 65504.0
# An initializer whose FP16 copy differs from it by more than this (relative L2) underflows meaningfully:
# ordinary FP16 rounding gives about 3e-4; eps constants such as 1e-12 or 1e-7 lose 20-100 %.
UNDERFLOW_RELATIVE_ERROR = 1e-2
# Nodes that read a float tensor only for its shape or convert it to a non-float type: they read
# whatever type the tensor has, so a FP16 producer does not force a Cast (or a rounding) on them.
_SHAPE_READERS = ("Shape", "Size")
_CONTROL_FLOW = ("If", "Loop", "Scan")


@dataclass
class _NodeInfo:
    index: int
    name: str
    op: str
    kind: Literal["float", "shape", "other"]  # float: has a precision; shape: reads any type; other: no float I/O
    fixed32_inputs: set[int] = field(default_factory=set)
    fixed32_outputs: set[int] = field(default_factory=set)
    static_reason: str | None = None  # why it can never be FP16


class _Analysis:
    """A prepared copy of the FP32 graph: unique node names, float constants as
    initializers, every tensor's element type, producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        model = _copy(model)
        _name_nodes(model.graph)
        _constants_to_initializers(model.graph)
        self.model = model
        graph = model.graph
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.types = _element_types(model)
        self.initializers = {i.name: i for i in graph.initializer}
        # The graph without its weights: builders copy this and add (converted) initializers.
        self.skeleton = onnx.ModelProto()
        self.skeleton.CopyFrom(model)  # cheap relative to what it saves: every build copies only the skeleton
        self.skeleton.graph.ClearField("initializer")
        self._arrays: dict[str, np.ndarray] = {}
        self._rounded: dict[str, np.ndarray] = {}
        self.input_names = [i.name for i in graph.input]
        self.graph_inputs = set(self.input_names)  # an initializer listed as an input is an input (overridable)
        self.output_names = [o.name for o in graph.output]
        self.output_set = set(self.output_names)
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        for index, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = index
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((index, slot))
        self.subgraph_refs: dict[str, str] = {}  # outer tensor read inside a subgraph -> the node holding it
        for node in self.nodes:
            for name in _outer_references(node):
                self.subgraph_refs.setdefault(name, node.name)
        self.info = [self._classify(index, node) for index, node in enumerate(self.nodes)]
        self.by_name = {info.name: info for info in self.info}
        self._init_check: dict[str, str | None] = {}

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == TensorProto.FLOAT

    def _classify(self, index: int, node: onnx.NodeProto) -> _NodeInfo:
        float_in = [slot for slot, name in enumerate(node.input) if self.is_float(name)]
        float_out = [slot for slot, name in enumerate(node.output) if self.is_float(name)]
        info = _NodeInfo(index, node.name, node.op_type, "other")
        if not float_in and not float_out:
            unknown = [n for n in node.output if n and n not in self.types]
            if unknown and node.op_type not in _CONTROL_FLOW:
                info.kind = "float"
                info.static_reason = f"output types unknown to ONNX shape inference ({node.domain or 'ai.onnx'}::{node.op_type})"
            return info
        if node.op_type in _SHAPE_READERS or (node.op_type == "Cast" and not float_out):
            info.kind = "shape"
            return info
        info.kind = "float"
        if node.op_type in _CONTROL_FLOW:
            info.static_reason = f"control flow ({node.op_type}): its subgraphs stay FP32"
            return info
        schema = _schema(node, self.opsets)
        if schema is None:
            info.static_reason = f"no ONNX schema for {node.domain or 'ai.onnx'}::{node.op_type}: its FP16 form is unknown"
            return info
        constraints = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
        fp16_slots = 0
        for slots, formals, fixed in ((float_in, schema.inputs, info.fixed32_inputs), (float_out, schema.outputs, info.fixed32_outputs)):
            for slot in slots:
                formal = formals[min(slot, len(formals) - 1)] if formals else None
                allowed = constraints.get(formal.type_str, [formal.type_str]) if formal is not None else []
                if "tensor(float16)" in allowed:
                    fp16_slots += 1
                else:
                    fixed.add(slot)
        if not fp16_slots:
            info.static_reason = f"ONNX {node.op_type} (opset {schema.since_version}) has no FLOAT16 form"
        return info

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.initializers[name])
        return self._arrays[name]

    def rounded(self, name: str) -> np.ndarray:
        """The initializer's values after FP16 storage, as FP32 (for the emulation)."""
        if name not in self._rounded:
            self._rounded[name] = self.array(name).astype(np.float16).astype(np.float32)
        return self._rounded[name]

    def initializer_problem(self, name: str) -> str | None:
        """Why ``name`` cannot become FP16 without changing its values, or None."""
        if name not in self._init_check:
            self._init_check[name] = _fp16_problem(f"initializer {name}", self.array(name))
        return self._init_check[name]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed or duplicate-named nodes the stable name ``<op>_<index>`` (plans refer to node names)."""
    taken = {node.name for node in graph.node if node.name}
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.op_type}_{index}"
        name, suffix = base, 1
        while name in taken or name in seen:
            name, suffix = f"{base}_{suffix}", suffix + 1
        node.name = name
        seen.add(name)
        taken.add(name)


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Float Constant nodes become initializers, so weights and constants follow one rule."""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and not node.domain and len(node.attribute) == 1:
            attr = node.attribute[0]
            tensor = None
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                tensor = numpy_helper.to_array(attr.t)
            elif attr.name == "value_float":
                tensor = np.array(attr.f, dtype=np.float32)
            elif attr.name == "value_floats":
                tensor = np.array(list(attr.floats), dtype=np.float32)
            if tensor is not None:
                graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
                continue
        kept.append(node)
    if len(kept) != len(graph.node):
        graph.ClearField("node")
        graph.node.extend(kept)


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model shape inference cannot handle: use what the file declares
        inferred = model
    graph = inferred.graph
    for value in (*graph.input, *graph.output, *graph.value_info, *model.graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types.setdefault(value.name, value.type.tensor_type.elem_type)
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _outer_references(node: onnx.NodeProto) -> set[str]:
    """Tensor names a node's subgraphs read from the enclosing scope."""
    refs: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
        for sub in graphs:
            local = {i.name for i in sub.input} | {i.name for i in sub.initializer}
            for inner in sub.node:
                refs |= {n for n in inner.input if n and n not in local}
                refs |= _outer_references(inner)
                local |= set(inner.output)
    return refs


def _schema(node: onnx.NodeProto, opsets: Mapping[str, int]):
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain not in opsets:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opsets[domain], domain)
    except Exception:
        return None


def _fp16_problem(what: str, values: np.ndarray) -> str | None:
    values = np.asarray(values, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    peak = float(np.abs(finite).max())
    if peak > FP16_MAX:
        return f"{what} exceeds FP16 range (max |x| = {peak:.4g} > {FP16_MAX:g})"
    norm = float(np.linalg.norm(finite.astype(np.float64)))
    if norm == 0.0:
        return None
    error = float(np.linalg.norm(finite.astype(np.float16).astype(np.float64) - finite)) / norm
    if error > UNDERFLOW_RELATIVE_ERROR:
        return f"{what} underflows in FP16 (relative error {error:.3g}; smallest |x| = {float(np.abs(finite[finite != 0]).min()):.3g})"
    return None
