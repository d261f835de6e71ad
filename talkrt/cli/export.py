"""`talkrt export NAME`: one command per graph in the registry, its options by how it takes weights."""

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import OutOpt, SeedOpt, TrustOpt, app, command, console, mib, variant, wrote
from talkrt.errors import TalkrtError
from talkrt.models.registry import families
from talkrt.outputs import check_outputs

export_app = typer.Typer(help="PyTorch -> validated ONNX, one command per model graph.", no_args_is_help=True)
app.add_typer(export_app, name="export")

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Official checkpoint: a file, or a transformers directory (config.json + weights).")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="Random weights (tests, demos, benchmarks).")]
ValidateOpt = Annotated[bool, typer.Option("--validate/--no-validate", help="Check ONNX Runtime against PyTorch before writing.")]
PresetOpt = Annotated[Optional[str], typer.Option(help="A named configuration (see the command's help).")]
GraphOpt = Annotated[str, typer.Option(help="Which graph of the model to export.")]
LayerOpt = Annotated[Optional[int], typer.Option(help="Hidden layer to output (0 = before the first transformer layer; default: the last).")]
NormalizeOpt = Annotated[
    Optional[bool],
    typer.Option("--normalize/--no-normalize", help="Per-utterance normalisation inside the graph (default: the checkpoint's preprocessor_config.json, else the preset's)."),
]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", "-o", help="Directory for the graphs and manifest.json.")]


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
    wrote(f"{out} ({mib(out.stat().st_size)}, {nodes} nodes, opset {spec.opset}, {spec.exporter} exporter) in {report.seconds:.1f} s")


def _register(name: str, graph) -> None:
    """`talkrt export NAME` with the options its way of taking weights needs."""

    def checkpoint_command(out: OutOpt, graph_choice: GraphOpt = "", checkpoint: CheckpointOpt = None, random_init: RandomInitOpt = False,
                           trust_checkpoint: TrustOpt = False, seed: SeedOpt = 0, validate: ValidateOpt = True) -> None:
        options = {}
        if graph.variants:
            if graph_choice not in graph.variants:
                raise TalkrtError(f"--graph {graph_choice!r}: choose {' or '.join(graph.variants)}")
            options["graph"] = graph_choice
        run_export(name, weights_source(checkpoint, random_init), out, trust_checkpoint, seed, validate, **options)

    def transformers_command(out: OutOpt, preset: PresetOpt = None, checkpoint: CheckpointOpt = None, random_init: RandomInitOpt = False, layer: LayerOpt = None,
                             normalize: NormalizeOpt = None, trust_checkpoint: TrustOpt = False, seed: SeedOpt = 0, validate: ValidateOpt = True) -> None:
        source = weights_source(checkpoint, random_init)
        run_export(name, source, out, trust_checkpoint, seed, validate, preset=preset, normalize=normalize, checkpoint=source, **({"layer": layer} if graph.layer else {}))

    def weightless_command(out: OutOpt, validate: ValidateOpt = True) -> None:
        run_export(name, None, out, False, 0, validate)

    def directory_command(out_dir: OutDirOpt, checkpoint: CheckpointOpt = None, random_init: RandomInitOpt = False, preset: PresetOpt = None,
                          trust_checkpoint: TrustOpt = False, seed: SeedOpt = 0, validate: ValidateOpt = True) -> None:
        from talkrt.models.family import resolve

        source = weights_source(checkpoint, random_init)
        check_outputs({"--out-dir": out_dir}, {"--checkpoint": source}, directories=["--out-dir"])
        with console.status(f"exporting {name}") as status:
            manifest = resolve(graph.exporter)(out_dir, preset=preset, checkpoint=source, trust=trust_checkpoint, seed=seed, validate=validate, step=lambda text: status.update(text))
        details = ", ".join(f"{manifest[k]}{unit}" for k, unit in (("sample_rate", " Hz"), ("num_speakers", " speaker(s)"), ("source", "")) if k in manifest)
        wrote(f"{out_dir}: {', '.join(manifest['files'].values())} and manifest.json ({details})")

    func = {"checkpoint": checkpoint_command, "transformers": transformers_command, "none": weightless_command, "directory": directory_command}[graph.weights]
    drop = () if graph.variants or graph.weights != "checkpoint" else ("graph_choice",)
    drop += () if graph.layer or graph.weights != "transformers" else ("layer",)
    exported = variant(func, name, graph.help, drop=drop)
    if graph.variants or graph.presets:
        _annotate(exported, graph)
    command(export_app, name, exported)


def _annotate(func, graph) -> None:
    """The --graph and --preset options with this graph's own choices in their help."""
    parameters = []
    for p in inspect.signature(func).parameters.values():
        if p.name == "graph_choice":
            p = p.replace(annotation=Annotated[str, typer.Option("--graph", help=f"{' or '.join(graph.variants)}.")], default=graph.variants[0])
        elif p.name == "preset" and graph.presets:
            p = p.replace(annotation=Annotated[Optional[str], typer.Option(help=graph.presets)])
        parameters.append(p)
    func.__signature__ = inspect.signature(func).replace(parameters=parameters)
    func.__annotations__ = {p.name: p.annotation for p in parameters}


for _family in families():
    for _name, _graph in _family.graphs.items():
        _register(_name, _graph)
