"""`talkrt check`: is a reduced-precision graph or engine as good as FP32 on the task's own metrics?

The reference is the FP32 ONNX graph in ONNX Runtime on calibration inputs. The
candidate is the FP16 plan talkrt would build (scored on emulated FP16 storage,
since ONNX Runtime's CPU provider runs most FP16 ops in FP32), another ONNX file
(for example an FP16 graph made elsewhere), or an engine, run on the GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkrt.errors import TalkrtError


@dataclass
class CheckResult:
    candidate: str
    rows: list[dict] = field(default_factory=list)  # gate, output, metric, threshold, value, passed

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row["passed"] for row in self.rows)


def _rows(gates, reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> list[dict]:
    from talkrt.export.precision import gate_value

    rows = []
    for gate in gates:
        if gate.output not in actual:
            raise TalkrtError(f"the candidate has no output {gate.output!r} (it has {', '.join(actual)})")
        value = gate_value(gate, reference[gate.output], np.asarray(actual[gate.output], dtype=np.float32))
        rows.append({"gate": gate.description or f"{gate.metric} of {gate.output}", "output": gate.output, "metric": gate.metric, "threshold": gate.threshold, "value": value, "passed": gate.passes(value)})
    return rows


def check(
    onnx_path: str | os.PathLike,
    candidate: str = "fp16",
    calibration: str | None = None,
    device: str = "cuda",
) -> CheckResult:
    """Score ``candidate`` (``fp16``, ``auto``, an .onnx file or an engine) against the FP32 graph at ``onnx_path``."""
    from talkrt.export.precision import calibration_feeds, plan_precision, run_onnx, task_gates

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise TalkrtError(f"ONNX file not found: {onnx_path}")
    if candidate in ("fp16", "auto"):
        _, report = plan_precision(onnx_path, candidate, calibration)
        rows = [{**row, "output": row.get("output")} for row in report.to_json()["gates_after"]]
        return CheckResult(f"talkrt's {candidate} plan (emulated FP16 storage)", rows)
    path = Path(candidate)
    if not path.is_file():
        raise TalkrtError(f"candidate not found: {candidate} (give fp16, auto, an .onnx file or an engine)")
    gates = task_gates(onnx_path)
    feeds = calibration_feeds(onnx_path, calibration)
    reference = run_onnx(onnx_path, feeds)
    if path.suffix == ".onnx":
        import onnx

        from talkrt.engines.profiles import graph_inputs

        names = {i.name for i in graph_inputs(onnx.load(str(path), load_external_data=False))}
        if names != set(feeds):
            raise TalkrtError(f"{path.name} takes inputs {sorted(names)}, not those of {onnx_path.name} {sorted(feeds)}: it is not a version of the same graph")
        return CheckResult(str(path), _rows(gates, reference, run_onnx(path, feeds)))
    return CheckResult(str(path), _rows(gates, reference, _run_engine(path, feeds, device)))


def _run_engine(engine: Path, feeds: dict[str, np.ndarray], device: str) -> dict[str, np.ndarray]:
    import torch

    from talkrt.engines.runners import make_runner

    runner = make_runner("trt", engine, device=device)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(value)).to(runner.device) for name, value in feeds.items()}
    outputs = runner.run(inputs)
    torch.cuda.synchronize(runner.device)
    return {name: tensor.float().cpu().numpy() for name, tensor in outputs.items()}
