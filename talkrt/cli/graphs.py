"""Graphs and engines: `talkrt export NAME` (one command per graph in the registry, its options by how it takes weights),
`build` (an engine and its sidecar, with progress bars), `triton` (a model repository), `inspect`, `check` and `doctor`."""

import json
from inspect import Parameter
from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import App, SeedOpt, TrustOpt, app, console, say, variant, wrote
from talkrt.models.registry import families

app.add_typer(export_app := App(help="PyTorch -> validated ONNX, one command per model graph.", no_args_is_help=True), name="export")

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Official checkpoint: a file, or a transformers directory (config.json + weights).")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="Random weights (tests, demos, benchmarks).")]
ValidateOpt = Annotated[bool, typer.Option("--validate/--no-validate", help="Check ONNX Runtime against PyTorch before writing.")]
LayerOpt = Annotated[Optional[int], typer.Option(help="Hidden layer to output (0 = before the first transformer layer; default: the last).")]
NormalizeOpt = Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="Per-utterance normalisation inside the graph (default: the checkpoint's preprocessor_config.json, else the preset's).")]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", "-o", help="Directory for the graphs and manifest.json.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")]


# The options of each way of taking weights (see talkrt.models.family.Graph).
WEIGHTS = ("checkpoint", "random_init", "trust", "seed", "validate")
OPTIONS = {"checkpoint": ("out", "graph_choice", *WEIGHTS), "transformers": ("out", "preset", "layer", "normalize", *WEIGHTS), "none": ("out", "validate"), "directory": ("out_dir", "preset", *WEIGHTS)}


def _register(name: str, graph) -> None:
    """`talkrt export NAME` with the options its way of taking weights needs."""

    def export(out: OutOpt = None, out_dir: OutDirOpt = None, graph_choice: str = "", preset: Optional[str] = None, checkpoint: CheckpointOpt = None, random_init: RandomInitOpt = False,
               layer: LayerOpt = None, normalize: NormalizeOpt = None, trust: TrustOpt = False, seed: SeedOpt = 0, validate: ValidateOpt = True) -> None:
        from talkrt.export.named import export_named
        with console.status(f"exporting {name}") as status:
            done = export_named(name, out=out, out_dir=out_dir, graph_choice=graph_choice, preset=preset, checkpoint=checkpoint, random_init=random_init,
                                layer=layer, normalize=normalize, trust=trust, seed=seed, validate=validate, step=lambda text: status.update(text))
        if done.report:
            console.print(done.report.rich_table(done.tolerance))
        wrote(done.headline)

    keep = [option for option in OPTIONS[graph.weights] if (option != "graph_choice" or graph.variants) and (option != "layer" or graph.layer)]
    annotations = {"out": OutOpt, "out_dir": OutDirOpt, "preset": Annotated[Optional[str], typer.Option(help=graph.presets)],
                   "graph_choice": Annotated[str, typer.Option("--graph", help=f"{' or '.join(graph.variants)}.")]}
    defaults = {"out": Parameter.empty, "out_dir": Parameter.empty, "graph_choice": graph.variants[0] if graph.variants else ""}
    export_app.command(name)(variant(export, name, graph.help, keep=keep, annotations=annotations, **defaults))


for _name, _graph in [item for family in families() for item in family.graphs.items()]:
    _register(_name, _graph)


@app.command()
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
    from talkrt.engines.build import BuildOptions, build_engine_file
    options = BuildOptions.parse(backend=backend, precision=precision, profiles=profile or (), extra_profiles=add_profile or (), compute_capabilities=compute_capability or (), optimization_level=opt_level,
                                 calibration=calibration, timing_cache=timing_cache, hardware_compat=hardware_compat, version_compatible=version_compatible, cache=cache)
    if onnx_file.is_dir():  # an exported voice: its graphs' engines, recorded in its manifest
        from talkrt.models.registry import build_directory
        with console.status(f"building the engines in {onnx_file}"):
            return wrote(build_directory(onnx_file, options))
    from talkrt.engines.progress import build_progress
    with build_progress(console) as progress:
        *details, headline = build_engine_file(onnx_file, out, options, progress).summary()
    for line in details:
        say(line)
    wrote(headline)


@app.command()
def triton(
    out_dir: Annotated[Path, typer.Argument(help="The Triton model repository to write (a new or empty folder).")],
    models: Annotated[Path, typer.Option("--from", help="Directory of exported graphs (`talkrt export` names).")],
    engines: Annotated[bool, typer.Option("--engines", help="Serve the TensorRT engines beside the ONNX files (<name>.engine and its sidecar).")] = False,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Instances of each model per GPU.")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch Triton's dynamic batcher forms.")] = 8,
    max_queue_delay_us: Annotated[int, typer.Option("--max-queue-delay-us", min=0, help="How long a request may wait for a batch to fill.")] = 100,
    avatar: Annotated[Optional[Path], typer.Option("--avatar", help="Also the streaming session model and offline render for this avatar (from `talkrt avatar prepare`: its renderer).")] = None,
    gpu: Annotated[bool, typer.Option("--gpu/--cpu", help="Model instances on the GPU or the CPU.")] = True,
) -> None:
    """A Triton Inference Server model repository of exported graphs: a model per graph, a stateful session model and a README."""
    from talkrt.triton.repository import write_repository
    wrote(write_repository(out_dir, models, engines=engines, instances=instances, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us, avatar=avatar, gpu=gpu))


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="An ONNX file or an engine (with its .json sidecar).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Inputs, outputs, dims, metadata and op counts of an ONNX file; the sidecar of an engine."""
    from talkrt.inspection import describe, rich_views
    if as_json:
        return print(json.dumps(describe(file), indent=2))
    for view in rich_views(describe(file), file):
        console.print(view, highlight=False)


@app.command()
def check(
    onnx_file: Annotated[Path, typer.Argument(help="The FP32 ONNX graph (the reference).")],
    candidate: Annotated[str, typer.Option("--candidate", help="fp16 or auto (the plan `talkrt build --precision` would use), an .onnx file, or an engine (run on the GPU).")] = "fp16",
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Shorthand for --candidate ENGINE.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Inputs (.npz keyed by input name; default: drawn from the spec).")] = None,
    save_inputs: Annotated[Optional[Path], typer.Option("--save-inputs", help="Write the inputs compared on, as `polygraphy run --save-inputs` does.")] = None,
    save_outputs: Annotated[Optional[Path], typer.Option("--save-outputs", help="Write every runner's outputs, as `polygraphy run --save-outputs` does.")] = None,
) -> None:
    """Verdict table: the candidate against FP32 on the model's task-level gates (PSNR, cosine, SNR, max abs)."""
    from talkrt.precision.check import check as run_check
    with console.status(f"checking {engine or candidate} against {onnx_file}"):
        result = run_check(onnx_file, str(engine) if engine else candidate, str(calibration) if calibration else None, save_inputs=save_inputs, save_outputs=save_outputs)
    console.print(result.rich_table(onnx_file.name))
    for line in result.saved:
        wrote(line)
    result.raise_unless_passed()
    console.print("[green]as good as FP32 on every gate[/]")


@app.command()
def doctor() -> None:
    """What is installed (torch, CUDA, ONNX Runtime, TensorRT, TensorRT-RTX, PyAV) and what each enables."""
    from talkrt.doctor import rich_table, run_checks
    console.print(rich_table(run_checks()))
