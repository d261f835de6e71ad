"""Constant folding before a build: ``polygraphy surgeon sanitize --fold-constants`` on the graph the builder parses.

Polygraphy evaluates constant subgraphs once with ONNX Runtime and re-infers shapes
between passes. The folded graph keeps everything else of the source: its model
fields (metadata_props with the talkrt spec, opsets), its graph inputs and outputs
exactly (shape inference may rename symbolic dims) and its value_info. When folding
fails the build parses the source as is and the sidecar says why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from talkrt.optional import available

TOOL = "polygraphy"


@dataclass
class Sanitized:
    path: Path  # the file to parse: the folded graph, or the source after a failure
    record: dict  # the sidecar's "sanitize" entry
    temporary: list[Path] = field(default_factory=list)  # files to delete once parsed


def key_inputs() -> dict:
    """The versions that determine the folded graph: Polygraphy drives it, ONNX-GraphSurgeon and ONNX Runtime compute it."""
    return {"tool": TOOL, **{name: _version(name) for name in ("polygraphy", "onnx_graphsurgeon", "onnxruntime")}}


def _version(module: str) -> str | None:
    if not available(module):
        return None
    return importlib.import_module(module).__version__


def sanitize_for_build(source: Path, scratch: Path) -> Sanitized:
    """Fold the constants of the graph at ``source`` into ``scratch`` (plus ``scratch``.data for large or external weights)."""
    import polygraphy

    tool = f"{TOOL} {polygraphy.__version__}"
    before, external = _outline(source)
    try:
        folded = fold_constants(onnx.load(str(source)))  # with its external data: folding needs the weights
        written = _save(folded, scratch, external)
    except Exception as exc:  # any folding or saving failure: build the source as is, and say so
        for path in (scratch, _data_path(scratch)):
            path.unlink(missing_ok=True)
        reason = f"constant folding failed ({type(exc).__name__}: {_first_line(exc)}); the graph was built as is"
        return Sanitized(source, {"tool": tool, "nodes_before": before, "nodes_after": before, "fallback": reason})
    return Sanitized(scratch, {"tool": tool, "nodes_before": before, "nodes_after": len(folded.graph.node), "fallback": None}, written)


def _outline(source: Path) -> tuple[int, bool]:
    """(node count, whether the weights are external); loading the data would lose where it lived."""
    model = onnx.load(str(source), load_external_data=False)
    return len(model.graph.node), any(uses_external_data(t) for t in model.graph.initializer)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its constant subgraphs folded; its model fields, graph inputs, outputs and value_info unchanged."""
    from polygraphy.backend.onnx import fold_constants as polygraphy_fold
    from polygraphy.logger import G_LOGGER

    if not available("onnxruntime"):
        raise RuntimeError('folding evaluates constants with ONNX Runtime, which is not installed: pip install "talkrt[cpu]"')
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # failures surface as exceptions (error_ok=False), progress stays quiet
        folded = polygraphy_fold(model, copy=True, error_ok=False)
    _keep_interface(model.graph, folded.graph)
    _keep_model_fields(model, folded)
    return folded


def _keep_interface(source: onnx.GraphProto, folded: onnx.GraphProto) -> None:
    for kind in ("input", "output"):
        names, wanted = [v.name for v in getattr(folded, kind)], [v.name for v in getattr(source, kind)]
        if names != wanted:
            raise RuntimeError(f"folding changed the graph {kind}s from {wanted} to {names}")
        folded.ClearField(kind)
        getattr(folded, kind).extend(getattr(source, kind))
    produced = {name for node in folded.node for name in node.output}
    folded.ClearField("value_info")
    folded.value_info.extend(v for v in source.value_info if v.name in produced)


def _keep_model_fields(source: onnx.ModelProto, folded: onnx.ModelProto) -> None:
    """Every model field but the graph as in the source (the graph surgeon drops metadata_props)."""
    for descriptor, _ in folded.ListFields():
        if descriptor.name != "graph":
            folded.ClearField(descriptor.name)
    for descriptor, value in source.ListFields():
        if descriptor.name == "graph":
            continue
        target = getattr(folded, descriptor.name)
        if hasattr(target, "extend"):
            target.extend(value)
        elif hasattr(target, "CopyFrom"):
            target.CopyFrom(value)
        else:
            setattr(folded, descriptor.name, value)


def _data_path(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def _save(model: onnx.ModelProto, path: Path, external: bool) -> list[Path]:
    """Write ``model``; its weights go to ``path``.data when the source had external data or they pass protobuf's 2 GiB limit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _data_path(path)
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    if external or weights >= onnx.checker.MAXIMUM_PROTOBUF:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    else:
        onnx.save(model, str(path))
    return [p for p in (path, data) if p.exists()]  # small tensors stay inline, so the data file may not exist


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "no message")[:300]
