"""`talkrt inspect`, `talkrt check` and `talkrt doctor`: what a file holds, how a candidate compares, what is installed."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import app, console, user_errors, wrote


@app.command()
@user_errors
def inspect(
    file: Annotated[Path, typer.Argument(help="An ONNX file or an engine (with its .json sidecar).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Inputs, outputs, dims, metadata and op counts of an ONNX file; the sidecar of an engine."""
    from talkrt.inspection import describe, rich_views

    info = describe(file)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for view in rich_views(info, file):
        console.print(view, highlight=False)


@app.command()
@user_errors
def check(
    onnx_file: Annotated[Path, typer.Argument(help="The FP32 ONNX graph (the reference).")],
    candidate: Annotated[str, typer.Option("--candidate", help="fp16 or auto (the plan `talkrt build --precision` would use), an .onnx file, or an engine (run on the GPU).")] = "fp16",
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Shorthand for --candidate ENGINE.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Inputs (.npz keyed by input name; default: drawn from the spec).")] = None,
    save_inputs: Annotated[Optional[Path], typer.Option("--save-inputs", help="Write the inputs compared on, as `polygraphy run --save-inputs` does.")] = None,
    save_outputs: Annotated[Optional[Path], typer.Option("--save-outputs", help="Write every runner's outputs, as `polygraphy run --save-outputs` does.")] = None,
) -> None:
    """Verdict table: the candidate against FP32 on the model's task-level gates (PSNR, cosine, SNR, max abs)."""
    from talkrt.errors import ValidationFailed
    from talkrt.precision.check import check as run_check

    with console.status(f"checking {engine or candidate} against {onnx_file}"):
        result = run_check(onnx_file, str(engine) if engine else candidate, str(calibration) if calibration else None, save_inputs=save_inputs, save_outputs=save_outputs)
    console.print(result.rich_table(onnx_file.name))
    for path, what in ((save_inputs, "inputs"), (save_outputs, f"outputs of {', '.join(result.runs)}")):
        if path:
            wrote(f"{what} to {path}")
    if not result.passed:
        raise ValidationFailed(f"{result.candidate} fails {sum(not r['passed'] for r in result.rows)} of {len(result.rows)} gates against FP32")
    console.print("[green]as good as FP32 on every gate[/]")


@app.command()
@user_errors
def doctor() -> None:
    """What is installed (torch, CUDA, ONNX Runtime, TensorRT, TensorRT-RTX, PyAV) and what each enables."""
    from talkrt.doctor import rich_table, run_checks

    console.print(rich_table(run_checks()))
