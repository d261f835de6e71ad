"""`talkrt doctor`: which backends are present and what each enables."""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    component: str
    status: str  # version or "missing"/"no GPU"
    ok: bool
    enables: str


def _version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # missing, or present but broken (e.g. a shared library not found)
        reason = "missing" if isinstance(exc, ModuleNotFoundError) else f"broken: {type(exc).__name__}: {str(exc)[:60]}"
        return False, reason
    return True, str(getattr(mod, "__version__", "present"))


def run_checks() -> list[Check]:
    from talkrt.optional import INSTALL_HINTS

    checks = [Check("python", platform.python_version(), True, "talkrt itself")]
    ok, version = _version("torch")
    checks.append(Check("torch", version, ok, "model definitions, export, the CPU pipeline"))
    if ok:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            major, minor = torch.cuda.get_device_capability()
            gpu = f"{torch.cuda.get_device_name()} (sm{major}{minor}), CUDA {torch.version.cuda}"
        else:
            gpu = f"no CUDA device (torch built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'for CPU only'})"
        checks.append(Check("CUDA GPU", gpu, cuda, "the zero-copy GPU pipeline and TensorRT engines"))
    for module, label in (("onnx", "onnx"), ("onnxscript", "onnxscript")):
        ok, version = _version(module)
        checks.append(Check(label, version, ok, "ONNX export (dynamo exporter)" if module == "onnxscript" else "ONNX files"))
    ok, version = _version("onnxruntime")
    if ok:
        import onnxruntime

        version = f"{version}; providers: {', '.join(onnxruntime.get_available_providers())}"
    checks.append(Check("onnxruntime", version, ok, INSTALL_HINTS["onnxruntime"][0] + ("" if ok else f" — {INSTALL_HINTS['onnxruntime'][1]}")))
    for module in ("tensorrt_rtx", "tensorrt"):
        ok, version = _version(module)
        enables, command = INSTALL_HINTS[module]
        checks.append(Check(module, version, ok, enables + ("" if ok else f" — {command}")))
    ok, version = _version("av")
    checks.append(Check("PyAV", version, ok, INSTALL_HINTS["av"][0] + ("" if ok else f" — {INSTALL_HINTS['av'][1]}")))
    return checks


def rich_table(checks: list[Check]):
    """The checks as `talkrt doctor` prints them."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="talkrt doctor")
    for column in ("component", "status", "enables"):
        table.add_column(column)
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[yellow]✗[/]"
        table.add_row(f"{mark} {check.component}", escape(check.status), escape(check.enables))
    return table
