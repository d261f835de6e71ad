"""Mixed FP16 for strongly typed engines: the precision lives in the ONNX graph.

TensorRT 11 and TensorRT-RTX build strongly typed networks: every tensor has the
type the ONNX graph gives it, and there is no FP16 builder flag. This package
rewrites an FP32 graph into a mixed one and decides which nodes stay FP32:

* ``convert_to_mixed`` (rewrite.py): FP16 weights and activations except the nodes kept in
  FP32 (by op type or by name), with Cast nodes at every FP16/FP32 boundary and
  the graph's inputs and outputs keeping their declared types. Existing
  ``Cast(to=FLOAT)`` nodes inside an FP16 region are retargeted to FLOAT16 (the
  onnxconverter-common trap); nothing is clamped: an initializer or constant
  outside the FP16 range, or one that would underflow, keeps its consumer in
  FP32, and every FP32 node is returned with the reason.
* ``plan_precision`` (this module): converts with the spec's keep set (``fp16``) and, in
  ``auto`` mode, pins the most sensitive FP16 node to FP32 until the spec's
  gates hold against the FP32 graph.

How the FP16 graph is evaluated on a CPU: ONNX Runtime's CPU provider has FP16
kernels for few compute ops (x86, 1.31: LayerNormalization, Clip, Max (Relu runs
as its function body, a Max), Transpose, Concat and other data movement; not
Conv, ConvTranspose, MatMul, Gemm, Add/Sub/Mul/Div/Pow, Sqrt, Exp, Log, Erf,
Tanh, Sigmoid, Softmax, ReduceMean/Sum/L2, BatchNormalization,
InstanceNormalization). It still runs such a graph: its
InsertCastTransformer wraps those nodes in Cast float16 <-> float32 and removes
the back-to-back pairs between two of them, so a chain of FP16 nodes runs in
FP32 and an intermediate that overflows FP16 never does. Gates measured that
way would pass graphs that overflow on the GPU. The gates are therefore
measured on an *emulated* graph (rewrite.py writes it, evaluation.py runs it): the same plan, every FP16 node computed in
FP32 from FP16-rounded inputs and its outputs rounded to FP16 (explicit
Cast pairs, which ONNX Runtime keeps), FP16 weights rounded likewise. That is
FP16 storage exactly (rounding, overflow to inf, underflow) with FP32
arithmetic inside each node, which is what GPU kernels with FP32 accumulation
do; accumulation inside a node in FP16 is not modelled, which is why the
normalisation ops stay in the spec's keep sets. The real mixed graph is run in
ONNX Runtime as well, to prove it loads and runs (``PrecisionReport.ort_check``,
report.py).

Sensitivity (``auto``, evaluation.py): for each FP16 node, the error that running it in FP16
adds *locally*: the relative L2 difference between its outputs computed in FP32
and the same outputs rounded to FP16, together with the rounding of any FP32
input cast down to FP16 at an island boundary. Values that are finite in FP32
and overflow in FP16 score infinity. This is exactly the error that pinning the
node removes (its inputs from FP16 producers stay as they are), it needs no
FP32 intermediates to compare against, and it blames the first node of an
overflowing chain rather than everything downstream of it. The node with the
highest score is pinned (ties: the earliest in the graph), the gates are
measured again, and the loop stops when they hold or after ``max_pins``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

from talkrt.errors import TalkrtError
from talkrt.export.samplers import sample_inputs
from talkrt.export.spec import SPEC_KEY, Gate, StoredSpec
from talkrt.precision.analysis import _Analysis
from talkrt.precision.evaluation import _Evaluator, _run
from talkrt.precision.gates import _summary
from talkrt.precision.report import PrecisionReport
from talkrt.precision.rewrite import _Builder, _decide

# Op types a graph without a talkrt spec keeps in FP32.
DEFAULT_KEEP_FP32_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "Exp", "CumSum")
DEFAULT_COSINE = 0.999
PLAN_KEY = "talkrt.precision"

# SPEC_KEY (defined in export/spec.py) is re-exported: the property a graph's gates and keep set come from.
__all__ = ["DEFAULT_COSINE", "DEFAULT_KEEP_FP32_OPS", "PLAN_KEY", "SPEC_KEY", "Mode", "calibration_feeds", "plan_precision", "run_onnx", "task_gates"]

Mode = Literal["fp16", "auto"]


def _load(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    from talkrt.engines.model_files import load_onnx

    return load_onnx(model, external_data=True)


def task_gates(model: onnx.ModelProto | str | os.PathLike) -> list[Gate]:
    """The gates a graph is judged by: its spec's, or the default gate for a graph without any."""
    source = _load(model)
    spec = StoredSpec.from_onnx(source)
    return (list(spec.gates) if spec is not None else []) or _default_gates(source)


def calibration_feeds(
    model: onnx.ModelProto | str | os.PathLike,
    calibration: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs for judging a graph: ``calibration`` (a dict or an .npz), else drawn from its spec."""
    source = _load(model)
    return _calibration(source, StoredSpec.from_onnx(source), calibration, dims, seed)


def run_onnx(model: onnx.ModelProto | str | os.PathLike, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of ``model`` in ONNX Runtime (CPU)."""
    return _run(_load(model), feeds)


def _calibration(
    model: onnx.ModelProto,
    spec: StoredSpec | None,
    calibration: Mapping[str, np.ndarray] | str | os.PathLike | None,
    dims: Mapping[str, int] | None,
    seed: int,
) -> dict[str, np.ndarray]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if calibration is not None:
        if isinstance(calibration, (str, os.PathLike)):
            path = Path(calibration)
            if not path.is_file():
                raise TalkrtError(f"calibration file not found: {path}")
            with np.load(path) as data:
                feeds = {k: data[k] for k in data.files}
        else:
            feeds = {k: np.asarray(v) for k, v in calibration.items()}
        missing = [i.name for i in inputs if i.name not in feeds]
        if missing:
            raise TalkrtError(f"calibration inputs lack {', '.join(missing)}")
        return {i.name: feeds[i.name].astype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type), copy=False) for i in inputs}
    rng = np.random.default_rng(seed)
    feeds = {}
    if spec is not None:
        sizes = {name: sizes[1] for name, sizes in spec.dims.items()}
        sizes.update(dims or {})
        # drawn as validation draws them (each input's sampler), from the spec the file carries
        return sample_inputs(list(spec.inputs), sizes, rng)
    for value in inputs:
        shape = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_value > 0:
                shape.append(dim.dim_value)
            elif dim.dim_param and dims and dim.dim_param in dims:
                shape.append(dims[dim.dim_param])
            else:
                raise TalkrtError(
                    f"{value.name} has a dynamic axis {axis} and the graph carries no talkrt spec: pass calibration inputs (a dict or an .npz with one array per input)"
                )
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = (rng.integers(0, 2, shape) if np.issubdtype(dtype, np.integer) else rng.uniform(0.0, 1.0, shape)).astype(dtype)
    return feeds


def _default_gates(model: onnx.ModelProto) -> list[Gate]:
    return [
        Gate(o.name, "cosine", DEFAULT_COSINE, description=f"cosine similarity of every row of {o.name} to FP32 (default gate: the graph carries no talkrt spec)")
        for o in model.graph.output
        if o.type.tensor_type.elem_type == TensorProto.FLOAT
    ]


def _report(a: _Analysis, fp32: Mapping[str, str], mixed: onnx.ModelProto, mode: str) -> PrecisionReport:
    typed = [info for info in a.info if info.kind == "float"]
    ops: dict[str, int] = {}
    for info in typed:
        if info.name in fp32:
            ops[info.op] = ops.get(info.op, 0) + 1
    counts = {
        "nodes": len(a.info),
        "fp16": sum(info.name not in fp32 for info in typed),
        "fp32": sum(info.name in fp32 for info in typed),
        "untyped": len(a.info) - len(typed),
        "casts_added": len(mixed.graph.node) - len(a.info),
    }
    report = PrecisionReport(mode, dict(fp32), dict(sorted(ops.items())), counts, [], [], 0, False)
    report._ops = {info.name: info.op for info in a.info}
    return report


def plan_precision(
    model: onnx.ModelProto | str | os.PathLike,
    mode: Mode = "fp16",
    calibration: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    max_pins: int = 32,
    *,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> tuple[onnx.ModelProto, PrecisionReport]:
    """The mixed graph and its report.

    ``fp16``: FP16 except the spec's keep_fp32_ops; the report says whether the gates hold.
    ``auto``: the same, then while a gate fails the most sensitive FP16 node is pinned to
    FP32 (see the module docstring), at most ``max_pins`` times.

    Calibration inputs: ``calibration`` (a dict or an .npz, one array per input), else drawn
    (seeded) by the spec's samplers at its opt sizes, with ``dims`` overriding sizes
    (e.g. ``{"batch": 2}``). A graph without a talkrt spec keeps DEFAULT_KEEP_FP32_OPS, is
    gated by cosine >= 0.999 on every float output, and needs calibration unless its
    inputs are static.
    """
    if mode not in ("fp16", "auto"):
        raise TalkrtError(f"precision mode {mode!r}: choose fp16 or auto")
    source = _load(model)
    spec = StoredSpec.from_onnx(source)
    if spec is not None:
        keep_ops, gates = list(spec.keep_fp32_ops), list(spec.gates)
        keep_source = f"the spec: {spec.keep_fp32_reason}" if spec.keep_fp32_reason else "the spec"
    else:
        keep_ops, gates, keep_source = list(DEFAULT_KEEP_FP32_OPS), _default_gates(source), "the default keep set (no talkrt spec)"
    # A gate-less spec (an export older than the gates) gets the default gate, never a vacuous pass.
    gates = gates or _default_gates(source)
    feeds = _calibration(source, spec, calibration, dims, seed)
    analysis = _Analysis(source)
    evaluator = _Evaluator(analysis, gates, feeds)

    fp32 = _decide(analysis, keep_ops, {}, keep_source)
    before, choose = evaluator.measure(fp32, sensitivity=mode == "auto")
    after, pins = before, []
    if mode == "auto":
        pinned: dict[str, str] = {}
        while not all(r["passed"] for r in after) and len(pins) < max_pins:
            choice = choose()
            if choice is None:
                break
            node, score, detail = choice
            failing = [i for i, r in enumerate(after) if not r["passed"]]
            pinned[node] = f"pinned by auto: {detail}"
            fp32 = _decide(analysis, keep_ops, pinned, keep_source)
            measured, choose = evaluator.measure(fp32, sensitivity=True)
            pinned[node] += f"; {_summary([after[i] for i in failing])} -> {_summary([measured[i] for i in failing])}"
            fp32[node] = pinned[node]
            pins.append({"node": node, "op": analysis.by_name[node].op, "score": score, "detail": detail, "gates": measured})
            after = measured
    mixed = _Builder(analysis, fp32, emulate=False).build()
    report = _report(analysis, fp32, mixed, mode)
    report.keep_fp32_ops, report.keep_source = keep_ops, keep_source
    report.gates_before, report.gates_after = before, after
    report.iterations, report.pins = len(pins), pins
    report.passed = all(r["passed"] for r in after)
    report.calibration = {k: list(v.shape) for k, v in feeds.items()}
    report.ort_check = evaluator.ort_check(mixed)
    plan = {"mode": mode, "passed": report.passed, "fp32_nodes": report.fp32_nodes, "keep_fp32_ops": keep_ops}
    from talkrt.export.onnx import set_metadata

    set_metadata(mixed, {PLAN_KEY: json.dumps(plan, separators=(",", ":"))})
    return mixed, report
