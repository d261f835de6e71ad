"""`talkrt build`: an engine and its sidecar from an ONNX file (or a voice's directory), with progress bars."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import app, console, say, user_errors, wrote
from talkrt.outputs import check_outputs


@app.command()
@user_errors
def build(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX file (from talkrt export, or any graph with --profile for its dynamic dims).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Engine file to write (default: beside the ONNX, .engine).")] = None,
    backend: Annotated[str, typer.Option(help="auto, tensorrt (datacenter GPU) or tensorrt-rtx (RTX GPUs; builds without a GPU).")] = "auto",
    profile: Annotated[Optional[list[str]], typer.Option("--profile", help="NAME:MIN,OPT,MAX for a dynamic dim or input (e.g. batch:1,8,32 or face_sequences:1x6x96x96,...); repeatable.")] = None,
    add_profile: Annotated[Optional[list[str]], typer.Option("--add-profile", help="Another optimization profile: overrides separated by ';', e.g. 'samples:3200,16000,32000'; repeatable.")] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16 (the spec's FP32 ops kept) or auto (FP16, with nodes moved back to FP32 until the spec's gates hold).")] = "fp32",
    calibration: Annotated[Optional[Path], typer.Option(help="Inputs for --precision auto (.npz keyed by input name; default: drawn from the spec).")] = None,
    compute_capability: Annotated[Optional[list[str]], typer.Option("--compute-capability", "--cc", help="TensorRT-RTX targets, e.g. 8.6,12.0 (default: 8.0,8.6,8.9,12.0, or the RTX GPU present).")] = None,
    opt_level: Annotated[int, typer.Option(min=0, max=5, help="Builder optimization level.")] = 3,
    timing_cache: Annotated[Optional[Path], typer.Option(help="TensorRT timing cache: used if present, updated after the build.")] = None,
    hardware_compat: Annotated[str, typer.Option(help="TensorRT: none, ampere_plus or same_compute_capability.")] = "none",
    version_compatible: Annotated[bool, typer.Option(help="TensorRT: an engine later TensorRT versions can load (with the lean runtime).")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and store engines in the engine cache ($TALKRT_CACHE, default ~/.cache/talkrt/engines).")] = True,
) -> None:
    """Build a serialized engine and its JSON sidecar from an ONNX file (reusing a matching one at once)."""
    from talkrt.engines.build import BuildOptions, build_engine, sidecar_path

    options = BuildOptions.parse(backend=backend, precision=precision, profiles=profile or (), extra_profiles=add_profile or (), compute_capabilities=compute_capability or (),
                                 optimization_level=opt_level, calibration=calibration, timing_cache=timing_cache, hardware_compat=hardware_compat,
                                 version_compatible=version_compatible, cache=cache)
    if onnx_file.is_dir():  # an exported voice: its graphs' engines, recorded in its manifest
        from talkrt.models.registry import MANIFEST, build_directory

        with console.status(f"building the engines in {onnx_file}"):
            manifest = build_directory(onnx_file, options)
        return wrote(f"{', '.join(str(onnx_file / e) for e in manifest['engines'].values())} and updated {onnx_file / MANIFEST}")
    from talkrt.engines.progress import build_progress

    out = out or onnx_file.with_suffix(".engine")
    check_outputs({"--out": [out, sidecar_path(out)]}, {"ONNX_FILE": onnx_file, "--calibration": calibration})
    with build_progress(console) as progress:
        *details, headline = build_engine(onnx_file, out, options, progress).summary()
    for line in details:
        say(line)
    wrote(headline)
