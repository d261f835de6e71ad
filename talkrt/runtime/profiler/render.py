"""Views of a profile report: Markdown, a rich table for the terminal and a PNG plot."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np

from talkrt.fileio import atomic_path
from talkrt.runtime.profiler.vocabulary import LATE_TOLERANCE_MS, SCHEMA

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = ["ReportView", "markdown", "plot", "rich_table"]


class ReportView(Protocol):
    """What the views read of a report; :class:`~talkrt.runtime.profiler.report.ProfileReport` has all of it.

    Declared here rather than imported: the report module imports this one for its
    view methods, so this one names none of the report module's classes.
    """

    device: str
    device_name: str
    fps: float
    audio_seconds: float
    frames: int
    wall_ms: float
    render_fps: float
    real_time_factor: Optional[float]
    time_to_first_frame_ms: Optional[float]
    tts_first_pcm_ms: Optional[float]
    text_to_first_audio_ms: Optional[float]
    text_to_first_frame_ms: Optional[float]
    steady_real_time_factor: Optional[float]
    steady_chunk_ms: Optional[float]
    deadline_misses: int
    deadline_ms: float
    peak_device_memory_bytes: Optional[int]
    cuda_graph: Optional[dict[str, Any]]
    feature_context: Optional[str]
    h2d_bytes: int
    d2h_bytes: int
    end_to_end_ms: Any  # Percentiles (p50, p90, p99, max) or None
    stages: Mapping[str, Any]  # stage name -> StageStats (calls, total_ms, frames, per_frame_ms)
    frame_index: list[int]
    frame_latency_ms: list[Optional[float]]
    frame_slack_ms: list[Optional[float]]
    frame_stage_ms: dict[str, list[float]]

_STAGE_HEADER = ["stage", "calls", "total ms", "frames", "p50 ms", "p90 ms", "p99 ms", "max ms"]


def _summary_items(report: ReportView) -> list[tuple[str, str]]:
    frames = max(report.frames, 1)
    return [
        ("device", f"{report.device_name} ({report.device})"),
        ("frames", f"{report.frames} at {_num(report.fps)} fps, {_num(report.audio_seconds)} s of audio"),
        ("wall time", f"{_ms(report.wall_ms)}"),
        ("render_fps", _num(report.render_fps, 1)),
        ("real-time factor", _num(report.real_time_factor, 3)),
        ("avatar_first_frame_ms (time to first frame)", _ms(report.time_to_first_frame_ms)),
        ("tts_first_pcm_ms", _ms(report.tts_first_pcm_ms)),
        *_text_items(report),
        ("steady_chunk_ms", _ms(report.steady_chunk_ms)),
        (
            "deadline misses",
            f"{report.deadline_misses}/{report.frames} ({100.0 * report.deadline_misses / frames:.1f} %) "
            f"at {_num(report.deadline_ms, 2)} ms/frame",
        ),
        ("peak device memory", _bytes(report.peak_device_memory_bytes)),
        ("audio features", report.feature_context or "-"),
        ("CUDA graphs", "-" if report.cuda_graph is None else ("used: " if report.cuda_graph["used"] else "not used: ") + report.cuda_graph["reason"]),
        ("host->device / device->host", f"{_bytes(report.h2d_bytes)} / {_bytes(report.d2h_bytes)}"),
    ]


def _text_items(report: ReportView) -> list[tuple[str, str]]:
    """A text run's numbers; none for a run from audio."""
    if report.text_to_first_audio_ms is None:
        return []
    return [
        ("text to first audio (TTFA)", _ms(report.text_to_first_audio_ms)),
        ("text to first frame (TTFV)", _ms(report.text_to_first_frame_ms)),
        ("steady real-time factor (after the first speech)", _num(report.steady_real_time_factor, 3)),
    ]


def _stage_rows(report: ReportView) -> list[list[str]]:
    rows = []
    for name, stats in report.stages.items():
        pf = stats.per_frame_ms
        cells = ["-"] * 4 if pf is None else [_num(v, 3) for v in (pf.p50, pf.p90, pf.p99, pf.max)]
        rows.append([name, str(stats.calls), _num(stats.total_ms, 2), str(stats.frames), *cells])
    e2e = report.end_to_end_ms
    cells = ["-"] * 4 if e2e is None else [_num(v, 3) for v in (e2e.p50, e2e.p90, e2e.p99, e2e.max)]
    rows.append(["end to end", "", _num(report.wall_ms, 2), str(report.frames), *cells])
    return rows


def markdown(report: ReportView) -> str:
    """A summary list and one table row per stage that ran, then the end-to-end row."""
    lines = [f"## talkrt profile ({SCHEMA})", ""]
    lines += [f"- **{key}**: {value}" for key, value in _summary_items(report)]
    lines += [
        "",
        "Per-frame columns: a batch's time divided over its frames (stages); "
        "ready minus audio available (end to end).",
        "",
        "| " + " | ".join(_STAGE_HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(_STAGE_HEADER) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _stage_rows(report)]
    return "\n".join(lines) + "\n"


def rich_table(report: ReportView) -> "Table":
    """The stage table for the terminal; the summary goes in the caption."""
    from rich.table import Table

    table = Table(
        title=f"talkrt profile: {report.frames} frames on {report.device_name}",
        caption=" · ".join(f"{k}: {v}" for k, v in _summary_items(report)[2:]),
        caption_justify="left",
    )
    for i, header in enumerate(_STAGE_HEADER):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    rows = _stage_rows(report)
    for i, row in enumerate(rows):
        last = i == len(rows) - 1
        table.add_row(*row, end_section=(i == len(rows) - 2), style="bold" if last else None)
    return table


def plot(report: ReportView, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """PNG: per-frame stage cost (stacked) against the 1000/fps budget, and end-to-end latency.

    matplotlib is imported lazily and used through its Agg canvas directly, so the
    global pyplot backend of the caller is left alone.
    """
    from talkrt.optional import require

    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    x = np.asarray(report.frame_index, dtype=np.int64)
    fig = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1])
    fig.suptitle(
        f"talkrt profile: {report.frames} frames on {report.device_name} · render {_num(report.render_fps, 1)} fps"
        f" · RTF {_num(report.real_time_factor, 3)} · first frame {_ms(report.time_to_first_frame_ms)}"
        f" · deadline misses {report.deadline_misses}",
        fontsize=10,
    )

    # Stage costs per frame, stacked in pipeline order (tts has no frames).
    series = [(n, np.asarray(v, dtype=np.float64)) for n, v in report.frame_stage_ms.items()]
    series = [(n, v) for n, v in series if v.size and np.any(v > 0)]
    if series and x.size:
        top.stackplot(x, *[v for _, v in series], labels=[n for n, _ in series], alpha=0.85, step="mid")
    top.axhline(report.deadline_ms, color="red", linestyle="--", linewidth=1.2,
                label=f"deadline 1000/fps = {_num(report.deadline_ms, 1)} ms")
    top.set_ylabel("stage cost per frame (ms)")
    top.set_title("per-frame cost by stage (batch time / frames in batch)", fontsize=9, loc="left")
    top.legend(loc="upper right", fontsize=8, ncols=4)
    top.grid(alpha=0.3)

    # End-to-end latency per frame with p50 / p99 and the frames that stalled playback.
    latency = np.asarray([np.nan if v is None else v for v in report.frame_latency_ms], dtype=np.float64)
    if latency.size and np.isfinite(latency).any():
        bottom.plot(x, latency, color="black", linewidth=1.0, marker="." if x.size <= 200 else None,
                    label="end-to-end latency")
        slack = np.asarray([np.nan if v is None else v for v in report.frame_slack_ms], dtype=np.float64)
        late = np.isfinite(slack) & (slack < -LATE_TOLERANCE_MS)
        if late.any():
            bottom.scatter(x[late], latency[late], color="red", marker="x", zorder=3,
                           label=f"ready after presentation time ({int(late.sum())})")
    if report.end_to_end_ms is not None:
        for value, name, colour in ((report.end_to_end_ms.p50, "p50", "tab:blue"),
                                    (report.end_to_end_ms.p99, "p99", "tab:orange")):
            bottom.axhline(value, color=colour, linestyle=":", linewidth=1.2)
            bottom.annotate(f"{name} {_num(value, 1)} ms", xy=(1.0, value), xycoords=("axes fraction", "data"),
                            xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                            color=colour, fontsize=8)
    bottom.axhline(report.deadline_ms, color="red", linestyle="--", linewidth=1.0,
                   label=f"deadline {_num(report.deadline_ms, 1)} ms")
    bottom.set_ylabel("end-to-end latency (ms)")
    bottom.set_xlabel("video frame")
    bottom.set_title("ready time - time its audio was available", fontsize=9, loc="left")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.grid(alpha=0.3)
    finite = latency[np.isfinite(latency)] if latency.size else latency
    top_value = max(report.deadline_ms, float(finite.max()) if finite.size else 0.0)
    bottom.set_ylim(0, top_value * 1.15)  # headroom for the p99 label
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _num(value: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _bytes(value: Optional[int]) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"  # pragma: no cover

