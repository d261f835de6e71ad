"""The report of a precision plan: which nodes stay FP32 and why, the gates before and
after, auto's pins; JSON for the engine sidecar and Markdown for people."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from talkrt.precision.gates import _fmt, _summary


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


@dataclass
class PrecisionReport:
    mode: str
    fp32_nodes: dict[str, str]  # node name -> why it stays FP32
    fp32_op_types: dict[str, int]  # op type -> FP32 nodes of that type
    counts: dict[str, int]  # nodes (compute nodes of the source graph), fp16, fp32, untyped (no float tensors), casts_added
    gates_before: list[dict]  # plain FP16 with the spec's keep set
    gates_after: list[dict]  # the returned graph
    iterations: int  # auto: pins tried (each re-measured the gates)
    passed: bool
    keep_fp32_ops: list[str] = field(default_factory=list)
    keep_source: str = "the spec"
    pins: list[dict] = field(default_factory=list)  # auto: node, op, score, detail, gates after the pin
    ort_check: list[dict] = field(default_factory=list)  # gates of the real mixed graph in ONNX Runtime CPU
    calibration: dict[str, list[int]] = field(default_factory=dict)  # input -> shape
    evaluation: str = "emulated FP16 storage (FP32 arithmetic inside each node) in ONNX Runtime CPU"

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite numbers as strings): the precision plan of the engine sidecar."""

        def clean(results: list[dict]) -> list[dict]:
            return [{**r, "value": _json_float(r["value"])} for r in results]

        return {
            "mode": self.mode,
            "passed": self.passed,
            "fp32_nodes": dict(self.fp32_nodes),
            "fp32_op_types": dict(self.fp32_op_types),
            "counts": dict(self.counts),
            "keep_fp32_ops": list(self.keep_fp32_ops),
            "keep_source": self.keep_source,
            "gates_before": clean(self.gates_before),
            "gates_after": clean(self.gates_after),
            "ort_check": clean(self.ort_check),
            "iterations": self.iterations,
            "pins": [{**p, "score": _json_float(p["score"]), "gates": clean(p["gates"])} for p in self.pins],
            "calibration": dict(self.calibration),
            "evaluation": self.evaluation,
        }

    def to_markdown(self) -> str:
        c = self.counts
        lines = [
            f"## Precision plan: {self.mode} ({'gates pass' if self.passed else 'GATES FAIL'})",
            "",
            f"{c['nodes']} nodes: {c['fp16']} FP16, {c['fp32']} FP32, {c['untyped']} without float tensors; {c['casts_added']} Casts added. "
            f"Evaluated with {self.evaluation} on {', '.join(f'{k} {tuple(v)}' for k, v in self.calibration.items())}.",
            "",
            "| gate | metric | threshold | plain fp16 | final | ORT mixed | pass |",
            "|---|---|---|---|---|---|---|",
        ]
        check = self.ort_check or [None] * len(self.gates_after)
        for before, after, ort in zip(self.gates_before, self.gates_after, check):
            lines.append(
                f"| {after['gate']} | {after['metric']} | {_fmt(after['threshold'])} | {_fmt(before['value'])} | {_fmt(after['value'])} | "
                f"{_fmt(ort['value']) if ort else '-'} | {'yes' if after['passed'] else 'NO'} |"
            )
        if self.pins:
            lines += ["", f"Pinned by auto ({self.iterations} iterations):", ""]
            lines += [f"- `{p['node']}` ({p['op']}): {p['detail']}; then {_summary(p['gates'])}" for p in self.pins]
        if self.fp32_nodes:
            lines += ["", "| FP32 node | op | reason |", "|---|---|---|"]
            lines += [f"| `{name}` | {self._ops.get(name, '')} | {reason} |" for name, reason in self.fp32_nodes.items()]
        return "\n".join(lines) + "\n"

    _ops: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # node name -> op type, for the tables
