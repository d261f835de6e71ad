"""`talkrt export NAME`: one command per graph in the registry, its options by how it takes weights."""

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import SeedOpt, TrustOpt, app, command, console, variant, wrote
from talkrt.models.registry import families

export_app = typer.Typer(help="PyTorch -> validated ONNX, one command per model graph.", no_args_is_help=True)
app.add_typer(export_app, name="export")

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Official checkpoint: a file, or a transformers directory (config.json + weights).")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="Random weights (tests, demos, benchmarks).")]
ValidateOpt = Annotated[bool, typer.Option("--validate/--no-validate", help="Check ONNX Runtime against PyTorch before writing.")]
PresetOpt = Annotated[Optional[str], typer.Option(help="A named configuration (see the command's help).")]
LayerOpt = Annotated[Optional[int], typer.Option(help="Hidden layer to output (0 = before the first transformer layer; default: the last).")]
NormalizeOpt = Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="Per-utterance normalisation inside the graph (default: the checkpoint's preprocessor_config.json, else the preset's).")]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", "-o", help="Directory for the graphs and manifest.json.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")]


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
        from talkrt.export.named import export_named

        with console.status(f"exporting {name}") as status:
            done = export_named(name, out=out, out_dir=out_dir, graph_choice=graph_choice, preset=preset, checkpoint=checkpoint, random_init=random_init, layer=layer,
                                normalize=normalize, trust=trust_checkpoint, seed=seed, validate=validate, step=lambda text: status.update(text))
        if done.report:
            console.print(done.report.rich_table(done.tolerance))
        wrote(done.headline)

    keep = [option for option in OPTIONS[graph.weights] if (option != "graph_choice" or graph.variants) and (option != "layer" or graph.layer)]
    annotations = {"out": OutOpt, "out_dir": OutDirOpt, "preset": Annotated[Optional[str], typer.Option(help=graph.presets)]}
    if graph.variants:
        annotations["graph_choice"] = Annotated[str, typer.Option("--graph", help=f"{' or '.join(graph.variants)}.")]
    defaults = {"out": inspect.Parameter.empty, "out_dir": inspect.Parameter.empty, "graph_choice": graph.variants[0] if graph.variants else ""}
    command(export_app, name, variant(export, name, graph.help, keep=keep, annotations=annotations, **defaults))


for _family in families():
    for _name, _graph in _family.graphs.items():
        _register(_name, _graph)
