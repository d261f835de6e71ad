"""Export a graph by its registry name from the options `talkrt export NAME` takes: the weights
source and the paths checked before anything loads, the graph's own options passed to its spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from talkrt.errors import TalkrtError
from talkrt.outputs import check_outputs

if TYPE_CHECKING:  # torch-free at import: the CLI builds its commands from this module's callers
    from talkrt.export.onnx import ExportReport
    from talkrt.export.spec import Tolerance


@dataclass(frozen=True)
class Exported:
    """What an export wrote (``headline``) and, for one validated graph, its parity report."""

    headline: str
    report: Optional[ExportReport] = None
    tolerance: Optional[Tolerance] = None


def weights_source(checkpoint: Optional[Path], random_init: bool) -> Optional[str]:
    if (checkpoint is None) == (not random_init):
        raise TalkrtError("give exactly one of --checkpoint PATH or --random-init")
    return None if random_init else str(checkpoint)


def export_named(
    name: str,
    *,
    out: Optional[Path] = None,
    out_dir: Optional[Path] = None,
    graph_choice: str = "",
    preset: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    random_init: bool = False,
    layer: Optional[int] = None,
    normalize: Optional[bool] = None,
    trust: bool = False,
    seed: int = 0,
    validate: bool = True,
    step: Callable[[str], None] = lambda text: None,
) -> Exported:
    """Export graph ``name`` (a file at ``out``) or a voice (a directory at ``out_dir``)."""
    from talkrt.models.family import resolve
    from talkrt.models.registry import graph_family

    graph = graph_family(name).graphs[name]
    source = None if graph.weights == "none" else weights_source(checkpoint, random_init)
    if graph.weights == "directory":
        check_outputs({"--out-dir": out_dir}, {"--checkpoint": source}, directories=["--out-dir"])
        manifest = resolve(graph.exporter)(out_dir, preset=preset, checkpoint=source, trust=trust, seed=seed, validate=validate, step=step)
        details = ", ".join(f"{manifest[k]}{unit}" for k, unit in (("sample_rate", " Hz"), ("num_speakers", " speaker(s)"), ("source", "")) if k in manifest)
        return Exported(f"{out_dir}: {', '.join(manifest['files'].values())} and manifest.json ({details})")
    options: dict = {}
    if graph.variants:
        if graph_choice not in graph.variants:
            raise TalkrtError(f"--graph {graph_choice!r}: choose {' or '.join(graph.variants)}")
        options["graph"] = graph_choice
    if graph.weights == "transformers":
        options.update(preset=preset, normalize=normalize, checkpoint=source, **({"layer": layer} if graph.layer else {}))
    return export_graph(name, source, out, trust, seed, validate, step, **options)


def export_graph(name: str, weights: Optional[str], out: Path, trust: bool, seed: int, validate: bool, step: Callable[[str], None], **spec_options) -> Exported:
    """Export graph ``name`` from the checkpoint ``weights`` (None: random weights from ``seed``)."""
    from talkrt.export.onnx import export_onnx
    from talkrt.models.registry import get_spec

    check_outputs({"--out": out}, {"--checkpoint": weights})
    spec = get_spec(name, **spec_options)
    step(f"loading {spec.name} {'from ' + weights if weights else 'with random weights'}")
    module = spec.build_module(weights, trust) if weights else spec.build_module(None, seed=seed)
    report = export_onnx(spec, module, out, validate=validate, step=step)
    nodes = sum(report.op_counts.values())
    headline = f"{out} ({out.stat().st_size / (1 << 20):.1f} MiB, {nodes} nodes, opset {spec.opset}, {spec.exporter} exporter) in {report.seconds:.1f} s"
    return Exported(headline, report if report.validation else None, spec.tolerance)
