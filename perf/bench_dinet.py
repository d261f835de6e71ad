"""DINet per-frame latency: PyTorch eager against ONNX Runtime at several batch sizes, in one run.

    python perf/bench_dinet.py [--batches 1 8] [--repeats 5] [--batch-repeats 8=3] [--device cpu|cuda]
                               [--precision fp32|fp16] [--no-ort] [--json out.json]

DINet(3, 15, 29) at the released size (416x320 face, 5 references, 29-dim
DeepSpeech window) is built with seeded random weights (speed does not depend on
the values) and exported once to a temporary directory with the project's
exporter (export time, with parity validation, is reported on its own).

Inputs for every batch size are drawn once (``spec.example_inputs``, seed 0) and
shared by both backends. Each backend (``torch``: the eval-mode module that was
exported; ``ort``: ONNX Runtime on the exported graph, CPU provider, or CUDA with
``--device cuda``) is created just before it is timed and released right after,
so an idle ONNX Runtime thread pool does not share the cores with PyTorch. Per
batch: one warm-up, then ``--repeats`` timed runs (``--batch-repeats B=N``
overrides it for batch B); medians are reported.

Reported per batch: ms per batch, ms per frame (batch ms / batch), frames per
second, ONNX Runtime speed vs eager (eager ms / ort ms), and each backend's max
|diff| against the fp32 module's output. ``--precision fp16`` runs the PyTorch
module in half precision (its fp32 output then comes from one untimed run per
batch; the ONNX graph stays fp32); ``--no-ort`` times PyTorch alone, without
the export.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from _machine import PRECISIONS, REPO, cpu_counters, cuda_problem, machine_info, other_cpu_share, torch_dtype  # noqa: E402  (perf/ is on sys.path when run as a script)

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from talkrt.models.dinet.specs import dinet_spec  # noqa: E402
from talkrt.export.onnx import export_onnx  # noqa: E402
from _report import cpu_share, emit, result_header, results_table  # noqa: E402  (imports talkrt)

console = Console(stderr=True)

BACKENDS = {"torch": "PyTorch eager", "ort": "ONNX Runtime"}
INPUT_SEED = 0


# ----------------------------------------------------------------------------- backends


class TorchRunner:
    def __init__(self, module: torch.nn.Module, device: str, dtype: torch.dtype) -> None:
        self.module = module.to(device, dtype).eval()
        self.device = device
        self.dtype = dtype
        self.label = f"{BACKENDS['torch']} {'fp16' if dtype == torch.float16 else 'fp32'}"

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(v).to(self.device) for v in inputs.values()]
            args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
            out = self.module(*args)
            out = out[0] if isinstance(out, (tuple, list)) else out
            result = out.float().cpu().numpy()  # the copy back to the host synchronizes
        return result


class OrtRunner:
    def __init__(self, path: Path, device: str) -> None:
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.provider = self.session.get_providers()[0]
        self.label = f"{BACKENDS['ort']} fp32 ({self.provider.removesuffix('ExecutionProvider')})"

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, inputs)[0]  # host in, host out (as eager above)


def time_runner(runner, inputs: dict[str, np.ndarray], repeats: int) -> tuple[list[float], float | None, np.ndarray]:
    runner(inputs)  # warm-up
    times, out = [], None
    cpu_before = cpu_counters()
    for _ in range(repeats):
        begin = time.perf_counter()
        out = runner(inputs)
        times.append((time.perf_counter() - begin) * 1000.0)
    return times, other_cpu_share(cpu_before, cpu_counters()), out


# ----------------------------------------------------------------------------- main


def parse_batch_repeats(items: list[str]) -> dict[int, int]:
    result = {}
    for item in items:
        batch, _, repeats = item.partition("=")
        result[int(batch)] = int(repeats)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch after one warm-up (default 5)")
    parser.add_argument("--batch-repeats", nargs="*", default=[], metavar="B=N", help="timed runs for batch B instead of --repeats")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the PyTorch module in fp32 or fp16 (default fp32)")
    parser.add_argument("--no-ort", action="store_true", help="time PyTorch alone: no export, no ONNX Runtime")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    try:
        batch_repeats = parse_batch_repeats(args.batch_repeats)
    except ValueError:
        parser.error("--batch-repeats takes B=N items, e.g. 8=3")
    if args.repeats < 1 or any(n < 1 for n in batch_repeats.values()):
        parser.error("repeats must be at least 1")
    if any(b < 1 for b in args.batches):
        parser.error("batch sizes must be at least 1")

    device = args.device
    dtype = torch_dtype(args.precision)
    backends = [name for name in BACKENDS if name == "torch" or not args.no_ort]
    problem = cuda_problem(device, ort=not args.no_ort)
    if problem:
        console.print(f"[red]{problem}[/red]")
        return 2

    spec = dinet_spec()
    batch_dim = next(d for d in spec.dims if d.name == "batch")
    for batch in args.batches:
        if not batch_dim.min <= batch <= batch_dim.max:
            console.print(f"[yellow]batch {batch} is outside the graph's profile {batch_dim.min}..{batch_dim.max} (ONNX Runtime still runs it)[/yellow]")
    inputs = {b: {name: t.numpy() for name, t in spec.example_inputs({"batch": b}, seed=INPUT_SEED).items()} for b in args.batches}
    repeats = {b: batch_repeats.get(b, args.repeats) for b in args.batches}

    timings: dict[str, dict[int, dict]] = {}
    outputs: dict[str, dict[int, np.ndarray]] = {}
    labels, providers = {}, []
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-dinet-") as tmp:
        onnx_path = Path(tmp) / "dinet.onnx"
        module = spec.build_module(None, seed=0)
        parameters = sum(p.numel() for p in module.parameters())
        export_seconds = onnx_mb = report = None
        if not args.no_ort:
            console.print("exporting DINet(3, 15, 29) (random weights, seed 0) with validation ...")
            begin = time.perf_counter()
            report = export_onnx(spec, module, onnx_path)
            export_seconds = round(time.perf_counter() - begin, 2)
            onnx_mb = round(onnx_path.stat().st_size / 2**20, 1)
        fp32_outputs = {}
        if dtype != torch.float32:  # the fp32 module's outputs, untimed: what half precision changes
            console.print("the fp32 module's outputs (untimed) ...")
            reference = TorchRunner(module, device, torch.float32)
            fp32_outputs = {batch: reference(inputs[batch]) for batch in args.batches}
            del reference

        for backend in backends:
            runner = TorchRunner(module, device, dtype) if backend == "torch" else OrtRunner(onnx_path, device)
            if backend == "ort":
                providers.append(runner.provider)
            labels[backend] = runner.label
            timings[backend], outputs[backend] = {}, {}
            for batch in args.batches:
                console.print(f"timing {runner.label}, batch {batch}: {repeats[batch]} runs after one warm-up ...")
                load_before = os.getloadavg()[0]
                times, other, out = time_runner(runner, inputs[batch], repeats[batch])
                timings[backend][batch] = {"ms": times, "other_cpu": other, "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
                outputs[backend][batch] = out
            del runner
            gc.collect()  # releases the ONNX Runtime session and its threads
            if device == "cuda":
                torch.cuda.empty_cache()

    rows = []
    for batch in args.batches:
        fp32_output = fp32_outputs.get(batch, outputs["torch"][batch])
        eager_ms = statistics.median(timings["torch"][batch]["ms"])
        for backend in backends:
            t = timings[backend][batch]
            ms = statistics.median(t["ms"])
            rows.append(
                {
                    "backend": backend,
                    "label": labels[backend],
                    "precision": args.precision if backend == "torch" else "fp32",
                    "batch": batch,
                    "repeats": repeats[batch],
                    "batch_ms_median": round(ms, 2),
                    "frame_ms": round(ms / batch, 2),
                    "fps": round(1000.0 * batch / ms, 2),
                    "speed_vs_eager": round(eager_ms / ms, 2),
                    "max_abs_diff_vs_fp32_eager": float(np.abs(outputs[backend][batch] - fp32_output).max()),
                    "runs_ms": [round(v, 2) for v in t["ms"]],
                    "other_cpu": t["other_cpu"],
                    "load_average_1min": t["load_average_1min"],
                }
            )

    result = {
        **result_header("DINet per-frame latency", machine_info(device, sorted(set(providers)))),
        "precision": args.precision,
        "model": "DINet(3, 15, 29), 416x320 face, 5 reference frames, DeepSpeech window 29x5",
        "weights": "random (dinet_spec().build_module(None, seed=0))",
        "parameters": parameters,
        "onnx_mb": onnx_mb,
        "opset": spec.opset,
        "exporter": spec.exporter,
        "input_seed": INPUT_SEED,
        "input_shapes": {b: {k: list(v.shape) for k, v in inputs[b].items()} for b in args.batches},
        "export_seconds": export_seconds,
        "export_note": "export_onnx with parity validation at the spec's validation points; not part of the timings",
        "export_validation": None if report is None else [str(v) for v in report.validation],
        "note": (
            "medians over the repeats after one warm-up, host arrays in and out for both backends; frame ms = batch ms / "
            "batch; fps = batch * 1000 / batch ms; speed_vs_eager = eager ms / this row's ms (eager in --precision); "
            "max_abs_diff_vs_fp32_eager: against the fp32 module's output; other_cpu: busy CPU time of "
            "other processes / all busy CPU time during the timed block"
        ),
        "results": rows,
    }

    table = results_table(
        f"DINet(3, 15, 29) 416x320 (random weights, {parameters / 1e6:.1f} M parameters), {device} ({result['machine']['device_name']})",
        (
            ("backend", "left"), ("batch", "right"), ("ms / batch", "right"), ("ms / frame", "right"), ("frames/s", "right"),
            ("speed vs eager", "right"), ("max |diff| vs fp32 eager", "right"), ("runs", "right"), ("others' CPU", "right"),
        ),
        (
            (
                row["label"], str(row["batch"]), f"{row['batch_ms_median']:.1f}", f"{row['frame_ms']:.1f}", f"{row['fps']:.2f}",
                f"{row['speed_vs_eager']:.2f}x", f"{row['max_abs_diff_vs_fp32_eager']:.1e}", str(row["repeats"]), cpu_share(row["other_cpu"]),
            )
            for row in rows
        ),
        caption="medians after one warm-up; speed vs eager = eager ms / this row's ms; max |diff| against the fp32 module",
    )
    lines = [f"{row['label']} batch {row['batch']} runs (ms): {', '.join(str(v) for v in row['runs_ms'])}" for row in rows]
    if export_seconds is not None:
        lines.append(f"export (with validation), not timed above: {export_seconds:.1f} s; ONNX file {onnx_mb} MB")
    emit(result, table, args.json, width=160, lines=lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
