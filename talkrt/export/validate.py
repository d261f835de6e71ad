"""Parity: PyTorch against ONNX Runtime on fresh random inputs at several shapes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from talkrt.errors import ValidationFailed
from talkrt.export.spec import DimPoint, ExportSpec
from talkrt.optional import require


@dataclass(frozen=True)
class ParityResult:
    point: dict[str, int]
    output: str
    max_abs: float
    max_rel: float  # max_abs relative to the reference's largest magnitude
    worst_excess: float  # max of |diff| - (atol + rtol*|ref|); <= 0 means within tolerance

    @property
    def ok(self) -> bool:
        return self.worst_excess <= 0.0

    def describe(self) -> str:
        shape = ", ".join(f"{k}={v}" for k, v in self.point.items())
        return f"{self.output} at {shape}: max abs {self.max_abs:.3g}, rel {self.max_rel:.3g}"


def compare(point: dict[str, int], name: str, actual: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> ParityResult:
    if actual.shape != reference.shape:
        raise ValidationFailed(f"{name} at {point}: ONNX shape {actual.shape} differs from PyTorch {reference.shape}")
    actual64, reference64 = actual.astype(np.float64), reference.astype(np.float64)
    diff = np.abs(actual64 - reference64)
    if not np.all(np.isfinite(actual64)):
        return ParityResult(point, name, float("inf"), float("inf"), float("inf"))
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(reference64).max(initial=0.0))
    excess = float((diff - (atol + rtol * np.abs(reference64))).max(initial=-np.inf))
    return ParityResult(point, name, max_abs, max_abs / scale if scale > 0 else max_abs, excess)


def onnx_session(path: str | os.PathLike):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def validate_onnx(
    spec: ExportSpec,
    module: nn.Module,
    onnx_path: str | os.PathLike,
    points: tuple[DimPoint, ...] | None = None,
    seed: int = 1,
) -> list[ParityResult]:
    """Run PyTorch and ONNX Runtime on the same fresh inputs at each point (default: the spec's validation points)."""
    session = onnx_session(onnx_path)
    results = []
    for index, point in enumerate(points or spec.validation_points):
        inputs = spec.example_inputs(point, seed=seed + index)
        with torch.no_grad():
            reference = module(*(inputs[t.name] for t in spec.inputs))
        reference = reference if isinstance(reference, (tuple, list)) else (reference,)
        actual = session.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in inputs.items()})
        for tensor, ref, act in zip(spec.outputs, reference, actual):
            results.append(compare(dict(point), tensor.name, act, ref.numpy(), spec.tolerance.atol, spec.tolerance.rtol))
    return results


def assert_parity(spec: ExportSpec, results: list[ParityResult]) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        worst = max(failed, key=lambda r: r.worst_excess)
        raise ValidationFailed(
            f"{spec.name}: ONNX Runtime disagrees with PyTorch beyond atol {spec.tolerance.atol:g} / rtol {spec.tolerance.rtol:g} "
            f"({len(failed)} of {len(results)} checks; worst {worst.describe()}); nothing was written"
        )
