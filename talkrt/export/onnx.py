"""Export an ExportSpec's module to ONNX: fold weight norm, export with the spec's
exporter and opset, write metadata, check, validate, and only then write the file."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.export.spec import ExportSpec
from talkrt.fileio import atomic_path

Step = Callable[[str], None]


@dataclass
class ExportReport:
    path: Path
    seconds: float
    op_counts: dict[str, int]
    validation: list = field(default_factory=list)  # list[validate.ParityResult]

    def rich_table(self, tolerance):
        """The parity results as a rich table (``tolerance``: the spec's)."""
        from rich.table import Table

        table = Table(title=f"parity: ONNX Runtime vs PyTorch (atol {tolerance.atol:g}, rtol {tolerance.rtol:g})")
        for column in ("output", "shape", "max abs error", "relative error", "within"):
            table.add_column(column)
        for result in self.validation:
            shape = ", ".join(f"{k}={v}" for k, v in result.point.items())
            table.add_row(result.output, shape, f"{result.max_abs:.3g}", f"{result.max_rel:.3g}", "[green]yes[/]" if result.ok else "[red]no[/]")
        return table


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace weight-norm reparametrizations (new ``parametrizations`` and legacy
    ``weight_g``/``weight_v`` hooks) by plain weights, so the graph holds one
    initializer per conv and no ReduceL2/Div/Mul chain."""
    from torch.nn.utils import parametrize

    for layer in module.modules():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        for hook in list(layer._forward_pre_hooks.values()):
            if type(hook).__name__ == "WeightNorm":
                torch.nn.utils.remove_weight_norm(layer, hook.name)
    return module


class _Exportable(nn.Module):
    """Calls the wrapped module with the spec's inputs as positional tensors."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *tensors: torch.Tensor):
        return self.module(*tensors)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress lines and warns about optional torchvision ops."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx_proto(spec: ExportSpec, module: nn.Module) -> onnx.ModelProto:
    """Trace ``module`` at the spec's opt point and return the ONNX model with dynamic dims named as in the spec."""
    example = spec.example_inputs()
    args = tuple(example[t.name] for t in spec.inputs)
    input_names = [t.name for t in spec.inputs]
    output_names = [t.name for t in spec.outputs]
    wrapper = _Exportable(module).eval()
    with torch.no_grad(), _quiet_exporter():
        if spec.exporter == "dynamo":
            program = torch.onnx.export(
                wrapper,
                args,
                input_names=input_names,
                output_names=output_names,
                opset_version=spec.opset,
                dynamo=True,
                # one entry per forward argument; the wrapper takes them as *tensors
                dynamic_shapes=(tuple(t.dynamic_axes or None for t in spec.inputs),),
                optimize=True,
                verbose=False,
            )
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(
                wrapper,
                args,
                buffer,
                input_names=input_names,
                output_names=output_names,
                opset_version=spec.opset,
                dynamo=False,
                dynamic_axes={t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs) if t.dynamic_axes},
            )
            proto = onnx.load_from_string(buffer.getvalue())
    wrapper.eval()  # export restores the wrapper's training flag recursively; keep everything in eval
    _name_output_dims(proto, spec)
    return proto


def _name_output_dims(proto: onnx.ModelProto, spec: ExportSpec) -> None:
    """Give outputs the spec's symbolic dim names (dynamo may invent its own, e.g. ``s0``)."""
    for value, tensor in zip(proto.graph.output, spec.outputs):
        dims = value.type.tensor_type.shape.dim
        for axis, size in enumerate(tensor.shape):
            if axis < len(dims) and isinstance(size, str):
                dims[axis].ClearField("dim_value")
                dims[axis].dim_param = size


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)


def read_metadata(path_or_proto: str | os.PathLike | onnx.ModelProto) -> dict[str, str]:
    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in proto.graph.node).most_common())


def export_onnx(
    spec: ExportSpec,
    module: nn.Module,
    out: str | os.PathLike,
    *,
    validate: bool = True,
    step: Step = lambda _: None,
) -> ExportReport:
    """Export, check and (by default) validate; ``out`` is written only if all of it succeeds.

    Weight norm is folded into ``module`` in place (the outputs do not change): a
    deep copy would share torch's generated parametrization class with the
    original, and removing the parametrization from the copy breaks both.
    """
    from talkrt.export.validate import assert_parity, validate_onnx

    start = time.perf_counter()
    module = fold_weight_norm(module.eval())
    step(f"tracing {spec.name} with the {spec.exporter} exporter at opset {spec.opset}")
    try:
        proto = to_onnx_proto(spec, module)
    except Exception as exc:  # the exporter's own errors are long; keep the cause, one line
        raise TalkrtError(f"export of {spec.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    set_metadata(proto, spec.onnx_metadata())
    onnx.checker.check_model(proto, full_check=True)
    report = ExportReport(Path(out), 0.0, op_counts(proto))
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        if validate:
            step(f"validating against PyTorch at {len(spec.validation_points)} shapes")
            report.validation = validate_onnx(spec, module, tmp)
            assert_parity(spec, report.validation)
    report.seconds = time.perf_counter() - start
    return report
