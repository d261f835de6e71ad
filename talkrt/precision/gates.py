"""Task-level gates: a gate's metric of a reduced-precision output against the FP32
reference, the gates a spec JSON carries, and the result rows the reports print."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from talkrt.export.spec import Gate, StoredSpec


def gate_value(gate: Gate, reference: np.ndarray, actual: np.ndarray) -> float:
    """The gate's metric of ``actual`` against the FP32 ``reference`` (``region`` applied first)."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise ValueError(f"{gate.output}: shapes differ, reference {reference.shape} vs actual {actual.shape}")
    if gate.region:
        if len(gate.region) > reference.ndim - 1:
            raise ValueError(f"{gate.output}: region has {len(gate.region)} axes, the output only {reference.ndim - 1} after the batch axis")
        crop = (slice(None),) + tuple(slice(start, stop) for start, stop in gate.region)
        reference, actual = reference[crop], actual[crop]
    # Equal values (infinities included) differ by exactly 0, not inf - inf.
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(reference == actual, 0.0, actual - reference)
    finite = bool(np.all(np.isfinite(diff)))
    worst = -math.inf if gate.higher_is_better else math.inf
    if gate.metric == "max_abs":
        return float(np.abs(diff).max(initial=0.0)) if finite else math.inf
    if not finite:
        return worst
    if gate.metric == "psnr":
        mse = float(np.mean(diff**2)) if diff.size else 0.0
        return math.inf if mse == 0.0 else 10.0 * math.log10(gate.peak**2 / mse)
    if gate.metric == "snr":
        noise = float(np.sum(diff**2))
        signal = float(np.sum(reference**2))
        if noise == 0.0:
            return math.inf
        return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)
    if gate.metric == "cosine":
        return float(row_cosines(reference, actual).min(initial=1.0))
    raise ValueError(f"unknown gate metric {gate.metric!r}")


def row_cosines(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The cosine of each row (the last axis, e.g. a feature frame) of ``actual`` against
    ``reference``; 1 where both rows are ~0."""
    reference, actual = np.asarray(reference, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if reference.size == 0:
        return np.ones(0)
    last = reference.shape[-1] if reference.ndim else 1
    ref_rows, act_rows = reference.reshape(-1, last), actual.reshape(-1, last)
    ref_norm, act_norm = np.linalg.norm(ref_rows, axis=1), np.linalg.norm(act_rows, axis=1)
    # "~0": below 1e-6 of the largest reference row (or exactly 0 when everything is 0).
    tiny = 1e-6 * float(ref_norm.max(initial=0.0))
    both_zero = (ref_norm <= tiny) & (act_norm <= tiny)
    denominator = ref_norm * act_norm
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(denominator > 0, np.sum(ref_rows * act_rows, axis=1) / np.where(denominator > 0, denominator, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosine)


def gates_from_spec_json(spec_json: Mapping | str) -> list[Gate]:
    """The gates stored in a spec JSON (the ``talkrt.spec`` metadata value, as text or parsed)."""
    return list(StoredSpec.from_json(spec_json).gates)


def _describe(gate: Gate) -> str:
    return gate.description or f"{gate.metric} of {gate.output}" + (f" over {list(map(list, gate.region))}" if gate.region else "")


def _gate_results(gates: list[Gate], reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[dict]:
    results = []
    for gate in gates:
        value = gate_value(gate, reference[gate.output], actual[gate.output])
        results.append({"gate": _describe(gate), "output": gate.output, "metric": gate.metric, "threshold": gate.threshold, "value": value, "passed": gate.passes(value)})
    return results


def _fmt(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _summary(results: list[dict]) -> str:
    return ", ".join(f"{r['metric']} {r['output']} {_fmt(r['value'])}" for r in results)
