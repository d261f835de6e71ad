"""`talkrt check`: is a reduced-precision graph or engine as good as FP32 on the task's own metrics?

The reference is the FP32 ONNX graph in ONNX Runtime on calibration inputs. The
candidate is the FP16 plan talkrt would build (scored on emulated FP16 storage,
since ONNX Runtime's CPU provider runs most FP16 ops in FP32), another ONNX file
(for example an FP16 graph made elsewhere), or an engine, run on the GPU.

The inputs and every runner's outputs can be saved in Polygraphy's formats (a list
of feed dicts; a RunResults), so ``polygraphy run --load-inputs --load-outputs``
reproduces the comparison. For the fp16 and auto plans the saved candidate is the
mixed graph run by ONNX Runtime, the graph talkrt would build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkrt.errors import TalkrtError, ValidationFailed
from talkrt.fileio import atomic_path

REFERENCE_RUNNER = "onnxruntime-fp32"


@dataclass
class CheckResult:
    candidate: str
    rows: list[dict] = field(default_factory=list)  # gate, output, metric, threshold, value, passed
    feeds: dict[str, np.ndarray] = field(default_factory=dict)  # the inputs compared on
    runs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # runner name -> outputs, reference first
    saved: list[str] = field(default_factory=list)  # what was written where (--save-inputs, --save-outputs)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row["passed"] for row in self.rows)

    def raise_unless_passed(self) -> None:
        """A failed gate ends the command with ValidationFailed (one line, its own exit code)."""
        if not self.passed:
            raise ValidationFailed(f"{self.candidate} fails {sum(not r['passed'] for r in self.rows)} of {len(self.rows)} gates against FP32")

    def rich_table(self, reference: str):
        """The verdict per gate, as `talkrt check` prints it (``reference``: the FP32 graph's name)."""
        from rich.table import Table

        table = Table(title=f"{self.candidate} vs FP32 {reference}")
        for column in ("gate", "metric", "threshold", "value", "verdict"):
            table.add_column(column)
        for row in self.rows:
            value = row["value"] if isinstance(row["value"], str) else f"{row['value']:.6g}"
            table.add_row(row["gate"], row["metric"], f"{row['threshold']:g}", value, "[green]pass[/]" if row["passed"] else "[red]FAIL[/]")
        return table


def _rows(gates, reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> list[dict]:
    from talkrt.precision.gates import gate_value

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
    save_inputs: str | os.PathLike | None = None,
    save_outputs: str | os.PathLike | None = None,
) -> CheckResult:
    """Score ``candidate`` (``fp16``, ``auto``, an .onnx file or an engine) against the FP32 graph at ``onnx_path``.

    ``save_inputs`` / ``save_outputs``: write the inputs and every runner's outputs in Polygraphy's formats.
    """
    from talkrt.engines.model_files import check_model_path
    from talkrt.outputs import check_outputs

    onnx_path = check_model_path(onnx_path, "ONNX")
    candidate_file = None if candidate in ("fp16", "auto") else candidate
    check_outputs({"--save-inputs": save_inputs, "--save-outputs": save_outputs}, {"ONNX_FILE": onnx_path, "--candidate": candidate_file})
    if candidate in ("fp16", "auto"):
        result = _check_plan(onnx_path, candidate, calibration, keep_runs=bool(save_inputs or save_outputs))
    else:
        result = _check_file(onnx_path, Path(candidate), calibration, device)
    if save_inputs:
        save_polygraphy_inputs(result.feeds, save_inputs)
        result.saved.append(f"inputs to {save_inputs}")
    if save_outputs:
        save_polygraphy_outputs(result.runs, save_outputs)
        result.saved.append(f"outputs of {', '.join(result.runs)} to {save_outputs}")
    return result


def _check_plan(onnx_path: Path, mode: str, calibration: str | None, keep_runs: bool) -> CheckResult:
    from talkrt.precision.plan import calibration_feeds, plan_precision, run_onnx

    mixed, report = plan_precision(onnx_path, mode, calibration)
    rows = [{**row, "output": row.get("output")} for row in report.to_json()["gates_after"]]
    result = CheckResult(f"talkrt's {mode} plan (emulated FP16 storage)", rows)
    if keep_runs:  # the plan's own runs are emulated; save what the built graph computes
        result.feeds = calibration_feeds(onnx_path, calibration)  # the plan's inputs (same source and seed)
        result.runs = {REFERENCE_RUNNER: run_onnx(onnx_path, result.feeds), f"onnxruntime-{mode}": run_onnx(mixed, result.feeds)}
    return result


def _check_file(onnx_path: Path, path: Path, calibration: str | None, device: str) -> CheckResult:
    from talkrt.precision.plan import calibration_feeds, run_onnx, task_gates

    if not path.is_file():
        raise TalkrtError(f"candidate not found: {path} (give fp16, auto, an .onnx file or an engine)")
    gates = task_gates(onnx_path)
    feeds = calibration_feeds(onnx_path, calibration)
    reference = run_onnx(onnx_path, feeds)
    if path.suffix == ".onnx":
        _same_inputs(path, onnx_path, feeds)
        name, actual = f"onnxruntime:{path.name}", run_onnx(path, feeds)
    else:
        from talkrt.engines.sidecar import read_sidecar

        actual = _run_engine(path, feeds, device)
        name = f"{read_sidecar(path)['backend']['name']}:{path.name}"
    return CheckResult(str(path), _rows(gates, reference, actual), feeds, {REFERENCE_RUNNER: reference, name: actual})


def _same_inputs(path: Path, onnx_path: Path, feeds: Mapping[str, np.ndarray]) -> None:
    from talkrt.engines.model_files import load_onnx
    from talkrt.engines.profiles import graph_inputs

    names = {i.name for i in graph_inputs(load_onnx(path))}
    if names != set(feeds):
        raise TalkrtError(f"{path.name} takes inputs {sorted(names)}, not those of {onnx_path.name} {sorted(feeds)}: it is not a version of the same graph")


def save_polygraphy_inputs(feeds: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """One iteration of inputs, as ``polygraphy run --save-inputs`` writes them (read back by ``--load-inputs``)."""
    from polygraphy.json import save_json

    with atomic_path(path) as tmp:
        save_json([dict(feeds)], str(tmp))


def save_polygraphy_outputs(runs: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike) -> None:
    """Each runner's outputs (one iteration), as ``polygraphy run --save-outputs`` writes them (read back by ``--load-outputs``)."""
    from polygraphy.comparator import RunResults
    from polygraphy.logger import G_LOGGER

    results = RunResults()
    for name, outputs in runs.items():
        results.add([dict(outputs)], runner_name=name)
    with atomic_path(path) as tmp, G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # it would announce the temporary name
        results.save(str(tmp))


def _run_engine(engine: Path, feeds: dict[str, np.ndarray], device: str) -> dict[str, np.ndarray]:
    import torch

    from talkrt.engines.devices import visible_gpu
    from talkrt.engines.runners import make_runner
    from talkrt.engines.sidecar import read_sidecar

    if torch.device(device).type != "cuda" or visible_gpu(device) is None:
        read_sidecar(engine, verify=True)  # a damaged or replaced engine is the first thing to fix
        raise TalkrtError(f"checking the engine {engine} runs it on a CUDA GPU and none is visible; on the CPU check an ONNX candidate instead: --candidate fp16, auto or FILE.onnx")
    runner = make_runner("trt", engine, device=device)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(value)).to(runner.device) for name, value in feeds.items()}
    outputs = runner.run(inputs)
    torch.cuda.synchronize(runner.device)
    return {name: tensor.float().cpu().numpy() for name, tensor in outputs.items()}
