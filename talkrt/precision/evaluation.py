"""Measuring a plan in ONNX Runtime CPU: the gates of its emulated FP16 graph against the
FP32 graph and, for ``auto``, the FP16 node to pin next (see plan.py's docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from talkrt.errors import TalkrtError
from talkrt.export.spec import Gate
from talkrt.precision.analysis import FP16_MAX, _Analysis, _copy
from talkrt.precision.gates import _gate_results
from talkrt.precision.rewrite import _Builder

# auto: a node on the error path is the culprit when its own FP16 error is at least this share of the
# error accumulated at its output (the rest is inherited from its inputs).
_LOCAL_SHARE = 0.5


def _session(model: onnx.ModelProto):
    from talkrt.optional import require

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    session = _session(model)
    names = outputs or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def _expose(model: onnx.ModelProto, names: Iterable[str]) -> None:
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            existing.add(name)


def _relative_error(fp32: np.ndarray, fp16: np.ndarray) -> tuple[float, float]:
    """(relative L2 error over positions finite in FP32 (inf when FP16 is not finite there), max |fp32|)."""
    fp32 = np.asarray(fp32, dtype=np.float64)
    fp16 = np.asarray(fp16, dtype=np.float64)
    finite = np.isfinite(fp32)
    if not finite.any():
        return 0.0, 0.0
    ref, act = fp32[finite], fp16[finite]
    peak = float(np.abs(ref).max())
    if not np.all(np.isfinite(act)):
        return math.inf, peak
    norm = float(np.linalg.norm(ref))
    error = float(np.linalg.norm(act - ref))
    return (error / norm if norm > 0 else (0.0 if error == 0 else math.inf)), peak


class _Evaluator:
    def __init__(self, a: _Analysis, gates: list[Gate], feeds: Mapping[str, np.ndarray]) -> None:
        self.a, self.gates, self.feeds = a, gates, dict(feeds)
        names = sorted({g.output for g in gates})
        missing = [n for n in names if n not in a.output_set]
        if missing:
            raise TalkrtError(f"gates name outputs the graph does not have: {', '.join(missing)}")
        self.outputs = names
        self.reference = _run(a.model, self.feeds, names)
        self._reference_all: dict[str, np.ndarray] | None = None

    def measure(self, fp32: Mapping[str, str], sensitivity: bool = False) -> tuple[list[dict], Callable[[], tuple[str, float, str] | None]]:
        """The gates of the emulated plan and, with ``sensitivity``, a function that picks the
        FP16 node to pin next from the same run (intermediates exposed as outputs)."""
        builder = _Builder(self.a, fp32, emulate=True, expose=sensitivity)
        model = builder.build()
        feeds = {**self.feeds, **builder.weight_feeds}
        names = list(self.outputs)
        if sensitivity:
            probed = [name for probe in builder.probes for name in probe[1:3]] + self.intermediates
            probed = [n for n in dict.fromkeys(probed) if n not in feeds and n not in names]
            _expose(model, probed)
            names += probed
        values = _run(model, feeds, names)
        values.update({k: v for k, v in self.feeds.items() if k not in values})
        gates = _gate_results(self.gates, self.reference, values)
        return gates, lambda: self._most_sensitive(builder, values, gates)

    def ort_check(self, mixed: onnx.ModelProto) -> list[dict]:
        return _gate_results(self.gates, self.reference, _run(mixed, self.feeds, self.outputs))

    @property
    def intermediates(self) -> list[str]:
        return [n for node in self.a.nodes for n in node.output if self.a.is_float(n)]

    def reference_all(self) -> dict[str, np.ndarray]:
        """Every float intermediate of the FP32 graph (computed once)."""
        if self._reference_all is None:
            model = _copy(self.a.model)
            _expose(model, self.intermediates)
            names = list(dict.fromkeys(self.outputs + self.intermediates))
            self._reference_all = _run(model, self.feeds, names)
        return self._reference_all

    def _most_sensitive(self, builder: _Builder, values: Mapping[str, np.ndarray], gates: list[dict]) -> tuple[str, float, str] | None:
        """Walk back from each failing output along the largest accumulated error (emulated vs
        FP32) to the first FP16 node whose own FP16 error is most of the error there."""
        a = self.a
        local: dict[str, tuple[float, str]] = {}
        for kind, exact, rounded, tensor, blamed in builder.probes:
            error, peak = _relative_error(values[exact], values[rounded])
            if error == 0.0:
                continue
            what = f"FP16 {'output' if kind == 'output' else 'copy of FP32 input'} {tensor}"
            what += f" overflows (max |x| = {peak:.4g} > {FP16_MAX:g})" if math.isinf(error) else f" has relative error {error:.3g}"
            for node in blamed:
                if error > local.get(node, (-1.0, ""))[0]:
                    local[node] = (error, what)
        if not local:
            return None
        reference = self.reference_all()
        accumulated: dict[str, float] = {}

        def acc(tensor: str) -> float:
            if tensor not in accumulated:
                accumulated[tensor] = _relative_error(reference[tensor], values[tensor])[0] if tensor in reference and tensor in values else 0.0
            return accumulated[tensor]

        for gate in (g for g in gates if not g["passed"]):
            tensor, seen = gate["output"], set()
            while tensor not in seen:
                seen.add(tensor)
                producer = a.producer.get(tensor)
                if producer is None:
                    break
                name = a.info[producer].name
                if name in local:
                    score, what = local[name]
                    total = acc(tensor)
                    if math.isinf(score) or score >= _LOCAL_SHARE * total:
                        share = "all" if math.isinf(score) or total == 0 else f"{min(score / total, 1.0):.0%}"
                        return name, score, f"{what}; {share} of the error of {tensor} on the path to output {gate['output']}"
                inputs = [t for t in a.nodes[producer].input if a.is_float(t) and t not in a.initializers]
                if not inputs:
                    break
                worst = max(inputs, key=acc)
                if acc(worst) == 0.0:
                    break
                tensor = worst
        order = {info.name: info.index for info in a.info}
        name = max(local, key=lambda n: (local[n][0], -order[n]))
        return name, local[name][0], f"{local[name][1]} (largest FP16 error in the graph)"
