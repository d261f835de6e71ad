"""`talkrt export NAME`: one command per graph in the registry, its options by how it takes weights."""

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import SeedOpt, TrustOpt, app, command, console, variant, wrote
from talkrt.errors import TalkrtError
from talkrt.models.registry import families
from talkrt.outputs import check_outputs

export_app = typer.Typer(help="PyTorch -> validated ONNX, one command per model graph.", no_args_is_help=True)
app.add_typer(export_app, name="export")

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Official checkpoint: a file, or a transformers directory (config.json + weights).")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="Random weights (tests, demos, benchmarks).")]
ValidateOpt = Annotated[bool, typer.Option("--validate/--no-validate", help="Check ONNX Runtime against PyTorch before writing.")]
PresetOpt = Annotated[Optional[str], typer.Option(help="A named configuration (see the command's help).")]
LayerOpt = Annotated[Optional[int], typer.Option(help="Hidden layer to output (0 = before the first transformer layer; default: the last).")]
NormalizeOpt = Annotated[
    Optional[bool],
    typer.Option("--normalize/--no-normalize", help="Per-utterance normalisation inside the graph (default: the checkpoint's preprocessor_config.json, else the preset's)."),
]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", "-o", help="Directory for the graphs and manifest.json.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")]


def weights_source(checkpoint: Optional[Path], random_init: bool) -> Optional[str]:
    if (checkpoint is None) == (not random_init):
        raise TalkrtError("give exactly one of --checkpoint PATH or --random-init")
    return None if random_init else str(checkpoint)


def run_export(name: str, weights: Optional[str], out: Path, trust: bool, seed: int, validate: bool, **spec_options) -> None:
    """Export graph ``name`` from the checkpoint ``weights`` (None: random weights from ``seed``)."""
    from talkrt.export.onnx import export_onnx
    from talkrt.models.registry import get_spec

    check_outputs({"--out": out}, {"--checkpoint": weights})
    spec = get_spec(name, **spec_options)
    with console.status(f"loading {spec.name} {'from ' + weights if weights else 'with random weights'}") as status:
        module = spec.build_module(weights, trust) if weights else spec.build_module(None, seed=seed)
        report = export_onnx(spec, module, out, validate=validate, step=lambda text: status.update(text))
    if report.validation:
        console.print(report.rich_table(spec.tolerance))
    nodes = sum(report.op_counts.values())
    wrote(f"{out} ({out.stat().st_size / (1 << 20):.1f} MiB, {nodes} nodes, opset {spec.opset}, {spec.exporter} exporter) in {report.seconds:.1f} s")


# The options of each way of taking weights (see talkrt.models.family.Graph).
OPTIONS = {
    "checkpoint": ("out", "graph_choice", "checkpoint", "random_init", "trust_checkpoint", "seed", "validate"),
    "transformers": ("out", "preset", "checkpoint", "random_init", "layer", "normalize", "trust_checkpoint", "seed", "validate"),
    "none": ("out", "validate"),
    "directory": ("out_dir", "checkpoint", "random_init", "preset", "trust_checkpoint", "seed", "validate"),
}


def _register(name: str, graph) -> None:
    """`talkrt export NAME` with the options its way of taking weights needs."""

    def export(out: OutOpt = None, out_dir: OutDirOpt = None, graph_choice: str = "", preset: PresetOpt = None, checkpoint: CheckpointOpt = None, random_init: RandomInitOpt = False,
               layer: LayerOpt = None, normalize: NormalizeOpt = None, trust_checkpoint: TrustOpt = False, seed: SeedOpt = 0, validate: ValidateOpt = True) -> None:
        source = None if graph.weights == "none" else weights_source(checkpoint, random_init)
        if graph.weights == "directory":
            from talkrt.models.family import resolve

            check_outputs({"--out-dir": out_dir}, {"--checkpoint": source}, directories=["--out-dir"])
            with console.status(f"exporting {name}") as status:
                manifest = resolve(graph.exporter)(out_dir, preset=preset, checkpoint=source, trust=trust_checkpoint, seed=seed, validate=validate, step=lambda text: status.update(text))
            details = ", ".join(f"{manifest[k]}{unit}" for k, unit in (("sample_rate", " Hz"), ("num_speakers", " speaker(s)"), ("source", "")) if k in manifest)
            return wrote(f"{out_dir}: {', '.join(manifest['files'].values())} and manifest.json ({details})")
        options = {"graph": graph_choice} if graph.variants else {}
        if graph.variants and graph_choice not in graph.variants:
            raise TalkrtError(f"--graph {graph_choice!r}: choose {' or '.join(graph.variants)}")
        if graph.weights == "transformers":
            options.update(preset=preset, normalize=normalize, checkpoint=source, **({"layer": layer} if graph.layer else {}))
        run_export(name, source, out, trust_checkpoint, seed, validate, **options)

    keep = [option for option in OPTIONS[graph.weights] if (option != "graph_choice" or graph.variants) and (option != "layer" or graph.layer)]
    annotations = {"out": OutOpt, "out_dir": OutDirOpt, "preset": Annotated[Optional[str], typer.Option(help=graph.presets)]}
    if graph.variants:
        annotations["graph_choice"] = Annotated[str, typer.Option("--graph", help=f"{' or '.join(graph.variants)}.")]
    defaults = {"out": inspect.Parameter.empty, "out_dir": inspect.Parameter.empty, "graph_choice": graph.variants[0] if graph.variants else ""}
    command(export_app, name, variant(export, name, graph.help, keep=keep, annotations=annotations, **defaults))


for _family in families():
    for _name, _graph in _family.graphs.items():
        _register(_name, _graph)
