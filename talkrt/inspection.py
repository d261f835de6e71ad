"""What is inside an ONNX file or an engine, as plain data for the CLI to print."""

from __future__ import annotations

import json
import os
from pathlib import Path



def _dims(value) -> list:
    return [d.dim_param or d.dim_value or "?" for d in value.type.tensor_type.shape.dim]


def describe_onnx(path: str | os.PathLike) -> dict:
    import onnx

    from talkrt.engines.profiles import graph_inputs
    from talkrt.export.onnx import op_counts

    from talkrt.engines.model_files import load_onnx

    model = load_onnx(path)
    elem = onnx.helper.tensor_dtype_to_np_dtype
    return {
        "kind": "onnx",
        "path": str(path),
        "bytes": Path(path).stat().st_size,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": i.name, "dtype": i.dtype, "dims": list(i.shape)} for i in graph_inputs(model)],
        "outputs": [
            {"name": o.name, "dtype": elem(o.type.tensor_type.elem_type).name, "dims": _dims(o)} for o in model.graph.output
        ],
        "nodes": len(model.graph.node),
        "parameters": sum(int(_numel(i.dims)) for i in model.graph.initializer),
        "op_counts": op_counts(model),
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


def _numel(dims) -> int:
    count = 1
    for d in dims:
        count *= d
    return count


def describe_engine(path: str | os.PathLike) -> dict:
    """The engine's sidecar, once the file is checked to be the engine it describes (size and sha256)."""
    from talkrt.engines.build import read_sidecar

    return {"kind": "engine", "path": str(path), "bytes": Path(path).stat().st_size, "sidecar": read_sidecar(path, verify=True)}


def describe(path: str | os.PathLike) -> dict:
    """ONNX files are recognised by content (a protobuf ModelProto); anything with a sidecar is an engine."""
    from talkrt.engines.model_files import check_model_path

    path = check_model_path(path, "file")
    if path.suffix == ".onnx":
        return describe_onnx(path)
    if Path(f"{path}.json").is_file() or path.suffix in (".engine", ".plan", ".trt"):
        return describe_engine(path)
    return describe_onnx(path)


def rich_views(info: dict, file: str | os.PathLike) -> list:
    """What `talkrt inspect` prints for ``describe(file)``: a headline and rich tables."""
    from rich.markup import escape
    from rich.table import Table

    def table(title: str, columns: tuple[str, ...], rows, **options) -> Table:
        view = Table(title=title, **options)
        for column in columns:
            view.add_column(column, justify="right" if column == "count" else "left", overflow="fold")
        for row in rows:
            view.add_row(*row)
        return view

    size = f"{info['bytes'] / (1 << 20):.1f} MiB"
    if info["kind"] == "engine":
        rows = ((key, value if isinstance(value, str) else json.dumps(value)) for key, value in info["sidecar"].items())
        return [table(f"engine {escape(str(file))} ({size})", ("key", "value"), rows, show_header=False)]
    meta = info["metadata"]
    headline = f"[bold]{escape(str(file))}[/]: {size}, opset {info['opset']}, {info['nodes']} nodes, {info['parameters']:,} parameters, producer {escape(str(info['producer']))}"
    tensors = [(kind[:-1], t["name"], t["dtype"], "x".join(str(d) for d in t["dims"]), meta.get(f"talkrt.tensor.{t['name']}", "")) for kind in ("inputs", "outputs") for t in info[kind]]
    views = [headline, table("inputs and outputs", ("", "name", "dtype", "dims", "convention"), tensors), table("op counts", ("op", "count"), ((op, str(n)) for op, n in info["op_counts"].items()))]
    if meta:
        views.append(table("metadata", ("key", "value"), meta.items()))
    return views
