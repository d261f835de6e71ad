"""`talkrt build`: an engine and its sidecar from an ONNX file (or a VITS directory), with progress bars."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from talkrt.cli.common import app, console, mib, say, user_errors, wrote
from talkrt.outputs import check_outputs


class _RichBuildProgress:
    """Shows TensorRT's build phases as progress bars."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[str, tuple[int, int]] = {}  # phase -> (task id, steps)

    def phase_start(self, name: str, parent: str | None, num_steps: int) -> None:
        indent = "  " if parent else ""
        steps = max(num_steps, 1)
        self.tasks[name] = (self.progress.add_task(indent + name, total=steps), steps)

    def step_complete(self, name: str, step: int) -> None:
        if name in self.tasks:
            self.progress.update(self.tasks[name][0], completed=step + 1)

    def phase_finish(self, name: str) -> None:
        if name in self.tasks:
            self.progress.remove_task(self.tasks.pop(name)[0])


@app.command()
@user_errors
def build(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX file (from talkrt export, or any graph with --profile for its dynamic dims).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Engine file to write (default: beside the ONNX, .engine).")] = None,
    backend: Annotated[str, typer.Option(help="auto, tensorrt (datacenter GPU) or tensorrt-rtx (RTX GPUs; builds without a GPU).")] = "auto",
    profile: Annotated[
        Optional[list[str]],
        typer.Option("--profile", help="NAME:MIN,OPT,MAX for a dynamic dim or input (e.g. batch:1,8,32 or face_sequences:1x6x96x96,...); repeatable."),
    ] = None,
    add_profile: Annotated[
        Optional[list[str]],
        typer.Option("--add-profile", help="Another optimization profile: overrides separated by ';', e.g. 'samples:3200,16000,32000'; repeatable."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16 (the spec's FP32 ops kept) or auto (FP16, with nodes moved back to FP32 until the spec's gates hold).")] = "fp32",
    calibration: Annotated[Optional[Path], typer.Option(help="Inputs for --precision auto (.npz keyed by input name; default: drawn from the spec).")] = None,
    compute_capability: Annotated[
        Optional[list[str]], typer.Option("--compute-capability", "--cc", help="TensorRT-RTX targets, e.g. 8.6,12.0 (default: 8.0,8.6,8.9,12.0, or the RTX GPU present).")
    ] = None,
    opt_level: Annotated[int, typer.Option(min=0, max=5, help="Builder optimization level.")] = 3,
    timing_cache: Annotated[Optional[Path], typer.Option(help="TensorRT timing cache: used if present, updated after the build.")] = None,
    hardware_compat: Annotated[str, typer.Option(help="TensorRT: none, ampere_plus or same_compute_capability.")] = "none",
    version_compatible: Annotated[bool, typer.Option(help="TensorRT: an engine later TensorRT versions can load (with the lean runtime).")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and store engines in the engine cache ($TALKRT_CACHE, default ~/.cache/talkrt/engines).")] = True,
) -> None:
    """Build a serialized engine and its JSON sidecar from an ONNX file (reusing a matching one at once)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from talkrt.engines.build import BuildOptions, build_engine, compute_capability_list, sidecar_path
    from talkrt.engines.profiles import parse_profile_override

    options = BuildOptions(
        backend=backend,
        precision=precision,
        profile_overrides=tuple(parse_profile_override(p) for p in profile or ()),
        extra_profiles=tuple(tuple(parse_profile_override(p) for p in extra.split(";") if p.strip()) for extra in add_profile or ()),
        compute_capabilities=compute_capability_list(compute_capability or ()),
        optimization_level=opt_level,
        calibration=str(calibration) if calibration else None,
        timing_cache=str(timing_cache) if timing_cache else None,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        cache=cache,
    )
    if onnx_file.is_dir():  # an exported VITS directory: its encoder and decoder
        from talkrt.models.vits.synth import build_vits_engines

        check_outputs({"DIR": onnx_file}, directories=["DIR"])
        with console.status(f"building the VITS engines in {onnx_file}"):
            manifest = build_vits_engines(onnx_file, options)
        wrote(f"{', '.join(str(onnx_file / e) for e in manifest['engines'].values())} and updated {onnx_file / 'manifest.json'}")
        return
    out = out or onnx_file.with_suffix(".engine")
    check_outputs({"--out": [out, sidecar_path(out)]}, {"ONNX_FILE": onnx_file, "--calibration": calibration})
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True) as bars:
        result = build_engine(onnx_file, out, options, _RichBuildProgress(bars))
    meta = result.metadata
    target = meta["target"]
    where = ", ".join("sm" + cc.replace(".", "") for cc in target["compute_capabilities"]) if "compute_capabilities" in target else f"{target['gpu']} (sm{target['compute_capability'].replace('.', '')})"
    for index, shapes_by_input in enumerate(meta["profiles"]):
        for name, shapes in shapes_by_input.items():
            low, opt, high = ("x".join(map(str, shapes[k])) for k in ("min", "opt", "max"))
            say(f"  profile {index} {name}: min {low}  opt {opt}  max {high}")
    plan = meta["precision"]
    if plan["mode"] != "fp32":
        fp32 = plan.get("fp32_nodes", {})
        verdict = "gates hold" if plan.get("passed") else "[red]gates fail[/]"
        say(f"  precision {plan['mode']}: {len(fp32)} nodes kept in FP32, {verdict}; {plan.get('applied_as', '')}")
    folding = meta.get("sanitize")  # absent from sidecars written before folding
    if folding:
        shown = f"[yellow]{escape(folding['fallback'])}[/]" if folding["fallback"] else f"{folding['nodes_before']} -> {folding['nodes_after']} nodes"
        say(f"  constant folding ({folding['tool']}): {shown}")
    done = f"reused ({result.reused})" if result.reused else f"in {meta['build_seconds']:.1f} s"
    wrote(f"{result.engine} ({mib(meta['engine_bytes'])}, {meta['backend']['name']} {meta['backend']['version']}, {plan['mode']}, for {where}) {done}; sidecar {result.sidecar.name}")
