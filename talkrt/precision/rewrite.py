"""Writing a plan into the graph: which nodes stay FP32 and why (``_decide``), the mixed
FP16 graph with Casts at every FP16/FP32 boundary or its FP32 emulation (``_Builder``),
and ``convert_to_mixed``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from talkrt.errors import TalkrtError
from talkrt.precision.analysis import _Analysis, _copy, _fp16_problem

# Ops whose outputs are elements of their inputs (data movement, selection): exact in either precision.
_VALUE_PRESERVING = frozenset(
    ("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "GatherElements", "GatherND", "Concat", "Split",
     "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Relu", "Abs", "Neg", "Max", "Min", "Clip", "Where", "MaxPool", "ReduceMax", "ReduceMin")
)


def _decide(a: _Analysis, keep_ops: Iterable[str], keep_nodes: Mapping[str, str], source: str) -> dict[str, str]:
    """node name -> reason, for every node with a precision that stays FP32."""
    keep_ops = set(keep_ops)
    unknown = sorted(set(keep_nodes) - set(a.by_name))
    if unknown:
        raise TalkrtError(f"keep_fp32_nodes names nodes the graph does not have: {', '.join(unknown[:5])}")
    fp32: dict[str, str] = {}
    for info in a.info:
        if info.kind != "float":
            continue
        if info.static_reason:
            fp32[info.name] = info.static_reason
        elif info.op in keep_ops:
            fp32[info.name] = f"op type {info.op} kept in FP32 by {source}"
        elif info.name in keep_nodes:
            fp32[info.name] = keep_nodes[info.name]
    for tensor, holder in a.subgraph_refs.items():
        producer = a.producer.get(tensor)
        if producer is not None and a.info[producer].kind == "float" and a.info[producer].name not in fp32:
            fp32[a.info[producer].name] = f"its output {tensor} is read inside the subgraph of {holder}"
    for info in a.info:
        if info.kind != "float" or info.name in fp32:
            continue
        node = a.nodes[info.index]
        for slot, name in enumerate(node.input):
            if slot in info.fixed32_inputs or not a.is_float(name) or name not in a.initializers or name in a.graph_inputs:
                continue
            problem = a.initializer_problem(name)
            if problem:
                fp32[info.name] = problem
                break
        else:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                    problem = _fp16_problem(f"attribute {attr.name}", numpy_helper.to_array(attr.t))
                    if problem:
                        fp32[info.name] = problem
                        break
    # Ops that only move or select values (and a Cast to FLOAT, e.g. mask.float()) are exact in
    # any precision: the rounding happens at the Cast in front of them. Between FP32 nodes an
    # FP16 copy would round FP32 values for nothing, so they follow their neighbours: FP32 when
    # no FP16 node reads them (backward pass), unless every input already is FP16 (forward pass).
    def fp16_readers(tensor: str, tentative: set[str]) -> bool:
        for consumer, slot in a.consumers.get(tensor, []):
            info = a.info[consumer]
            if info.kind == "float" and info.name not in fp32 and info.name not in tentative and slot not in info.fixed32_inputs:
                return True
        return False

    def fp16_home(tensor: str, tentative: set[str]) -> bool:
        producer = a.producer.get(tensor)
        if producer is None:
            return False
        info = a.info[producer]
        slot = list(a.nodes[producer].output).index(tensor)
        return info.kind == "float" and info.name not in fp32 and info.name not in tentative and slot not in info.fixed32_outputs

    movers = [info for info in a.info if info.kind == "float" and info.name not in fp32 and (info.op in _VALUE_PRESERVING or info.op == "Cast")]
    tentative: set[str] = set()
    changed = True
    while changed:
        changed = False
        for info in movers:
            outputs = [n for n in a.nodes[info.index].output if a.is_float(n)]
            if info.name not in tentative and not any(fp16_readers(n, tentative) for n in outputs):
                tentative.add(info.name)
                changed = True
    changed = True
    while changed:
        changed = False
        for info in movers:
            inputs = [n for slot, n in enumerate(a.nodes[info.index].input) if a.is_float(n) and slot not in info.fixed32_inputs]
            if info.name in tentative and inputs and all(fp16_home(n, tentative) for n in inputs):
                tentative.discard(info.name)
                changed = True
    for info in movers:
        if info.name in tentative:
            what = "Cast to FLOAT" if info.op == "Cast" else f"{info.op} only moves or selects values and"
            fp32[info.name] = f"{what} feeds no FP16 node: FP32 keeps its FP32 inputs unrounded"
    return fp32


class _Builder:
    """Writes a plan into a graph: the real mixed graph, or its FP32 emulation."""

    def __init__(self, a: _Analysis, fp32: Mapping[str, str], emulate: bool, expose: bool = False) -> None:
        self.a, self.emulate, self.expose = a, emulate, expose
        # Emulation: large float weights become graph inputs fed from cached arrays, so each
        # evaluation serializes and loads a small graph instead of every weight again.
        self.weight_feeds: dict[str, np.ndarray] = {}
        self.precision: list[str | None] = []
        for info in a.info:
            self.precision.append(None if info.kind != "float" else ("fp32" if info.name in fp32 else "fp16"))
        self.names = set(a.types) | set(a.producer) | set(a.initializers) | set(a.input_names) | {n.name for n in a.nodes}
        self.nodes: list[onnx.NodeProto] = []
        self.probes: list[tuple[str, str, str, str, list[str]]] = []  # (kind, exact name, FP16-rounded name, tensor, blamed nodes)
        self.half = TensorProto.FLOAT if emulate else TensorProto.FLOAT16

    def fresh(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.names.add(name)
        return name

    def home(self, tensor: str) -> int:
        """The type a float tensor is stored in: its producer's precision."""
        producer = self.a.producer.get(tensor)
        if producer is None:
            return TensorProto.FLOAT  # graph input or initializer (initializers get FP16 copies)
        info = self.a.info[producer]
        slot = list(self.a.nodes[producer].output).index(tensor)
        return TensorProto.FLOAT16 if self.precision[producer] == "fp16" and slot not in info.fixed32_outputs else TensorProto.FLOAT

    def required(self, index: int, slot: int, tensor: str) -> int:
        info = self.a.info[index]
        if self.precision[index] is None:
            return self.home(tensor)
        return TensorProto.FLOAT16 if self.precision[index] == "fp16" and slot not in info.fixed32_inputs else TensorProto.FLOAT

    def build(self) -> onnx.ModelProto:
        a = self.a
        model = _copy(a.skeleton)
        graph = model.graph
        # Initializers: an FP16 copy for FP16 readers, the original for FP32 readers.
        fp16_inits: set[str] = set()
        fp32_inits: set[str] = set(a.output_set | set(a.subgraph_refs)) & set(a.initializers)
        for index, node in enumerate(a.nodes):
            for slot, name in enumerate(node.input):
                if name in a.initializers and a.is_float(name) and name not in a.graph_inputs:
                    (fp16_inits if self.required(index, slot, name) == TensorProto.FLOAT16 else fp32_inits).add(name)
        # float tensor -> {element type: the name under which that version exists}
        versions: dict[str, dict[int, str]] = {name: {TensorProto.FLOAT: name} for name in a.input_names if a.is_float(name)}
        for name, init in a.initializers.items():
            if name in a.graph_inputs or name not in fp16_inits:
                self.add_initializer(graph, name, init, a.array(name) if a.is_float(name) else None)
                if a.is_float(name):
                    versions.setdefault(name, {TensorProto.FLOAT: name})
                continue
            half = a.rounded(name) if self.emulate else a.array(name).astype(np.float16)
            if name in fp32_inits:
                self.add_initializer(graph, name, init, a.array(name))
                name16 = self.fresh(f"{name}__fp16")
                self.add_initializer(graph, name16, None, half)
                versions[name] = {TensorProto.FLOAT: name, TensorProto.FLOAT16: name16}
            else:
                self.add_initializer(graph, name, None, half)
                versions[name] = {TensorProto.FLOAT16: name}
        conversion_probe: dict[str, list[str]] = {}  # converted name -> the FP16 nodes reading it

        for index, node in enumerate(a.nodes):
            new = onnx.NodeProto()
            new.CopyFrom(node)
            for slot, name in enumerate(node.input):
                if not a.is_float(name):
                    continue
                wanted = self.required(index, slot, name)
                known = versions[name]
                if wanted not in known:
                    source = known[self.home(name)] if self.home(name) in known else next(iter(known.values()))
                    target = self.fresh(f"{name}__{'fp16' if wanted == TensorProto.FLOAT16 else 'fp32'}")
                    self.cast(source, target, wanted)
                    known[wanted] = target
                    if wanted == TensorProto.FLOAT16 and self.expose:
                        conversion_probe[target] = []
                        self.probes.append(("input", source, target, name, conversion_probe[target]))
                if known[wanted] in conversion_probe:
                    conversion_probe[known[wanted]].append(node.name)
                new.input[slot] = known[wanted]
            if self.precision[index] == "fp16":
                self.retype_attributes(new, node)
            after: list[tuple[str, str, str]] = []  # (written name, FP16 name, original name)
            for slot, name in enumerate(node.output):
                if not a.is_float(name):
                    continue
                if self.home(name) == TensorProto.FLOAT16:
                    stored = self.fresh(f"{name}__fp16") if name in a.output_set else name
                    versions[name] = {TensorProto.FLOAT16: stored}
                    written = self.fresh(f"{name}__exact") if self.emulate else stored
                    new.output[slot] = written
                    after.append((written, stored, name))
                else:
                    versions[name] = {TensorProto.FLOAT: name}
            self.nodes.append(new)
            for written, stored, name in after:
                if self.emulate:
                    self.round(written, stored)
                    if self.expose:
                        self.probes.append(("output", written, stored, name, [node.name]))
                if name in a.output_set:  # the graph output keeps its declared FLOAT
                    self.cast(stored, name, TensorProto.FLOAT)
                    versions[name][TensorProto.FLOAT] = name
        graph.ClearField("node")
        graph.node.extend(self.nodes)
        self.fix_value_info(graph, versions)
        return model

    def add_initializer(self, graph: onnx.GraphProto, name: str, proto: TensorProto | None, values: np.ndarray | None) -> None:
        if self.emulate and values is not None and values.dtype == np.float32 and values.size >= 1024 and name not in self.a.graph_inputs:
            self.weight_feeds[name] = values
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(values.shape)))
        elif proto is not None:
            graph.initializer.append(proto)
        else:
            graph.initializer.append(numpy_helper.from_array(values, name))

    def cast(self, source: str, target: str, to: int) -> None:
        if self.emulate:
            if to == TensorProto.FLOAT16:
                self.round(source, target)
            else:
                self.nodes.append(helper.make_node("Identity", [source], [target], name=self.fresh(f"{target}__identity")))
        else:
            self.nodes.append(helper.make_node("Cast", [source], [target], name=self.fresh(f"{target}__cast"), to=to))

    def round(self, source: str, target: str) -> None:
        """Emulation: FP32 -> FP16 -> FP32, i.e. FP16 storage in an FP32 graph."""
        half = self.fresh(f"{target}__half")
        self.nodes.append(helper.make_node("Cast", [source], [half], name=self.fresh(f"{half}__cast"), to=TensorProto.FLOAT16))
        self.nodes.append(helper.make_node("Cast", [half], [target], name=self.fresh(f"{target}__cast"), to=TensorProto.FLOAT))

    def retype_attributes(self, new: onnx.NodeProto, node: onnx.NodeProto) -> None:
        """Cast(to=FLOAT) inside an FP16 region casts to FLOAT16; float constants in attributes become FP16."""
        info = self.a.by_name[node.name]
        produces_half = any(self.a.is_float(n) and slot not in info.fixed32_outputs for slot, n in enumerate(node.output))
        for attr in new.attribute:
            if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == TensorProto.FLOAT and produces_half:
                attr.i = self.half
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT and produces_half:
                values = numpy_helper.to_array(attr.t).astype(np.float16)
                attr.t.CopyFrom(numpy_helper.from_array(values.astype(np.float32) if self.emulate else values, attr.t.name))

    def fix_value_info(self, graph: onnx.GraphProto, versions: dict[str, dict[int, str]]) -> None:
        """Every float tensor's value_info gets the type of each of its versions, shapes copied."""
        source = self.a.model.graph
        declared = {v.name: v for v in (*source.input, *source.output, *source.value_info)}
        graph.ClearField("value_info")
        if self.emulate:  # ONNX Runtime infers what it needs; nothing outside this module reads the emulation
            return
        skip = self.a.output_set | self.a.graph_inputs
        for tensor, known in versions.items():
            if tensor in self.a.initializers and tensor not in self.a.graph_inputs:
                continue
            for elem, name in known.items():
                if name in skip:
                    continue
                value = onnx.ValueInfoProto()
                if tensor in declared:
                    value.CopyFrom(declared[tensor])
                else:
                    value.type.tensor_type.SetInParent()
                value.name = name
                value.type.tensor_type.elem_type = elem
                graph.value_info.append(value)
        graph.value_info.extend(v for v in source.value_info if v.name not in versions and not self.a.is_float(v.name))


def convert_to_mixed(
    model: onnx.ModelProto,
    keep_fp32_ops: Iterable[str] = (),
    keep_fp32_nodes: Iterable[str] | Mapping[str, str] = (),
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """FP16 weights and activations except the kept nodes; returns the mixed model and
    {FP32 node name: reason}. ``keep_fp32_nodes`` may map names to reasons.

    Unnamed nodes are named ``<op>_<index>`` first (the returned names refer to them).
    Graph inputs and outputs keep their declared types, float Constant nodes become
    initializers, and the input model is not modified.
    """
    analysis = _Analysis(model)
    fp32 = _decide(analysis, keep_fp32_ops, _node_reasons(keep_fp32_nodes), "the caller")
    return _Builder(analysis, fp32, emulate=False).build(), fp32


def _node_reasons(nodes: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(nodes, Mapping):
        return dict(nodes)
    return {name: "node kept in FP32 by the caller" for name in nodes}
