"""Per-stage, per-frame latency profiler of the talking-head pipeline (DESIGN.md, "Profiler vocabulary").

One run is timed on one clock whose zero is the start of the run (``Profiler.start``,
called implicitly by the first profiler call):

* On CUDA every ``stage`` records a ``torch.cuda.Event`` pair on the current stream
  inside an NVTX range ``talkrt/<stage>``, and ``frames_ready`` records one event.
  Nothing synchronises in the hot path: ``start`` synchronises once to pin an
  origin event to ``time.perf_counter``, and ``report`` resolves every event
  against that origin. Host-side marks (audio arrival, ``host=True`` stages such as
  a PyAV encode) use ``perf_counter`` and land on the same clock.
* On the CPU everything is ``time.perf_counter``.

Definitions used by :class:`ProfileReport` (all times in ms since the run start):

* **Per-frame stage cost.** A stage call covering a batch of ``n`` frames adds
  ``duration / n`` to each of them; calls touching the same frame add up. Calls
  with no frames (``tts``) count in ``calls`` and ``total_ms`` only.
* **Audio time of frame k**: when the audio frame k needs had arrived. Offline (no
  chunk ever reported) it is the first ``audio_available()`` mark: all audio at
  once. Streaming (``audio_chunk_arrived(end_sample)``, or ``audio_available``
  with a sample count), it is the first chunk after
  which frame k is computable: per ``alignment.frames_ready`` when a
  :class:`~talkrt.runtime.align.FeatureAlignment` is given to ``report``, else
  once the samples of the frame's own span ``[s_k, s_(k+1))`` arrived (no
  lookahead). Frames beyond the last chunk's reach get the last chunk's time
  (the end of the stream). Without any audio mark it is the run start.
* **End-to-end latency of frame k** = ready_k - max(audio_k, 0).
* **Time to first frame** (``avatar_first_frame_ms``, OpenTalking's name) = first
  frame ready - first audio available (run start when audio was never marked).
* **tts_first_pcm_ms** (only when a ``tts`` stage ran) = first audio available -
  start of the first ``tts`` call (its end, when audio was never marked).
* **Deadline misses.** Playback starts when the first frame is ready: frame k is
  presented at first_ready + (k - k0) / fps, k0 the lowest ready frame index. A
  frame misses when it is ready after its presentation time (by more than 1 us,
  so float noise on an exactly-on-time frame is not a miss), i.e. the viewer would
  see a stall. ``slack_ms`` per frame is presentation - ready. This
  counts real stalls of a buffered player rather than frames whose latency is
  over 1000/fps, which would flag every frame of a run with any buffering; the
  1000/fps line in the plot is the per-frame compute budget.
* **Per-batch time** (batch = one ``frames_ready`` call) = ready_b -
  max(ready_(b-1), latest audio time among its frames, 0): how long the batch took
  once it could start. ``steady_chunk_ms`` is its median over batches after the
  first.
* **Wall time** = run start to the last frame ready or stage end;
  ``render_fps`` = frames / wall, ``real_time_factor`` = wall / audio duration
  (< 1 is faster than real time).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import numpy as np
import torch

from talkrt.fileio import atomic_path, write_text_atomic
from talkrt.runtime.align import num_video_frames

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from talkrt.runtime.align import FeatureAlignment

__all__ = [
    "STAGES",
    "SCHEMA",
    "JSON_SCHEMA",
    "Percentiles",
    "StageStats",
    "ProfileReport",
    "Profiler",
]

STAGES: tuple[str, ...] = ("tts", "resample", "features", "windows", "render", "compose", "encode")
SCHEMA = "talkrt.profile/1"
_DECIMALS = 4  # ms rounded to 0.1 us in reports: far below any clock's resolution here
_LATE_TOLERANCE_MS = 1e-3  # a frame ready exactly on time is not late, whatever the float noise

FramesLike = Union[range, int, None]


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99/max of a set of milliseconds (numpy's linear interpolation)."""

    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Optional["Percentiles"]:
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0:
            return None
        p50, p90, p99 = np.percentile(array, [50, 90, 99])
        return cls(*(round(float(v), _DECIMALS) for v in (p50, p90, p99, array.max())))

    def to_json(self) -> dict[str, float]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max}


@dataclass(frozen=True)
class StageStats:
    """One stage over the run: calls, total time, and its per-frame cost over the frames it touched."""

    calls: int
    total_ms: float
    frames: int
    per_frame_ms: Optional[Percentiles]

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "total_ms": self.total_ms,
            "frames": self.frames,
            "per_frame_ms": None if self.per_frame_ms is None else self.per_frame_ms.to_json(),
        }


@dataclass
class ProfileReport:
    """The numbers of one run; see the module docstring for every definition.

    Raw arrays are parallel to ``frame_index`` (sorted video-frame indices seen by
    ``frames_ready`` or any stage); entries of frames never marked ready are None.
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
    steady_chunk_ms: Optional[float]
    deadline_misses: int
    peak_device_memory_bytes: Optional[int]
    h2d_bytes: int
    d2h_bytes: int
    stages: dict[str, StageStats]
    end_to_end_ms: Optional[Percentiles]
    frame_index: list[int] = field(default_factory=list)
    frame_stage_ms: dict[str, list[float]] = field(default_factory=dict)
    frame_audio_ms: list[float] = field(default_factory=list)
    frame_ready_ms: list[Optional[float]] = field(default_factory=list)
    frame_latency_ms: list[Optional[float]] = field(default_factory=list)
    frame_slack_ms: list[Optional[float]] = field(default_factory=list)
    batch_frames: list[tuple[int, int]] = field(default_factory=list)
    batch_ready_ms: list[float] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)
    talkrt_version: str = ""
    cuda_graph: Optional[dict[str, Any]] = None  # {"used": bool, "reason": str}; None off the pipeline

    # ---------------------------------------------------------------- derived names

    @property
    def avatar_first_frame_ms(self) -> Optional[float]:
        """OpenTalking's name for time to first frame."""
        return self.time_to_first_frame_ms

    @property
    def deadline_ms(self) -> float:
        """The per-frame budget 1000/fps."""
        return 1000.0 / self.fps

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        """A plain dict following :data:`JSON_SCHEMA` (``schema: "talkrt.profile/1"``)."""
        return {
            "schema": SCHEMA,
            "talkrt_version": self.talkrt_version,
            "device": self.device,
            "device_name": self.device_name,
            "fps": self.fps,
            "deadline_ms": round(self.deadline_ms, _DECIMALS),
            "audio_seconds": self.audio_seconds,
            "frames": self.frames,
            "wall_ms": self.wall_ms,
            "render_fps": self.render_fps,
            "real_time_factor": self.real_time_factor,
            "time_to_first_frame_ms": self.time_to_first_frame_ms,
            "avatar_first_frame_ms": self.avatar_first_frame_ms,
            "tts_first_pcm_ms": self.tts_first_pcm_ms,
            "steady_chunk_ms": self.steady_chunk_ms,
            "deadline_misses": self.deadline_misses,
            "peak_device_memory_bytes": self.peak_device_memory_bytes,
            "cuda_graph": self.cuda_graph,
            "h2d_bytes": self.h2d_bytes,
            "d2h_bytes": self.d2h_bytes,
            "end_to_end_ms": None if self.end_to_end_ms is None else self.end_to_end_ms.to_json(),
            "stages": {name: stats.to_json() for name, stats in self.stages.items()},
            "per_frame": {
                "frame_index": list(self.frame_index),
                "audio_ms": list(self.frame_audio_ms),
                "ready_ms": list(self.frame_ready_ms),
                "latency_ms": list(self.frame_latency_ms),
                "slack_ms": list(self.frame_slack_ms),
                "stage_ms": {name: list(values) for name, values in self.frame_stage_ms.items()},
            },
            "batches": {
                "frames": [[start, stop] for start, stop in self.batch_frames],
                "ready_ms": list(self.batch_ready_ms),
                "batch_ms": list(self.batch_ms),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProfileReport":
        """Rebuild a report from :meth:`to_json` output (e.g. to compare saved runs)."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} report (schema={data.get('schema')!r})")

        def pct(value: Optional[dict]) -> Optional[Percentiles]:
            return None if value is None else Percentiles(**value)

        per_frame, batches = data["per_frame"], data["batches"]
        return cls(
            device=data["device"],
            device_name=data["device_name"],
            fps=data["fps"],
            audio_seconds=data["audio_seconds"],
            frames=data["frames"],
            wall_ms=data["wall_ms"],
            render_fps=data["render_fps"],
            real_time_factor=data["real_time_factor"],
            time_to_first_frame_ms=data["time_to_first_frame_ms"],
            tts_first_pcm_ms=data["tts_first_pcm_ms"],
            steady_chunk_ms=data["steady_chunk_ms"],
            deadline_misses=data["deadline_misses"],
            peak_device_memory_bytes=data["peak_device_memory_bytes"],
            h2d_bytes=data["h2d_bytes"],
            d2h_bytes=data["d2h_bytes"],
            stages={
                name: StageStats(s["calls"], s["total_ms"], s["frames"], pct(s["per_frame_ms"]))
                for name, s in data["stages"].items()
            },
            end_to_end_ms=pct(data["end_to_end_ms"]),
            frame_index=list(per_frame["frame_index"]),
            frame_stage_ms={k: list(v) for k, v in per_frame["stage_ms"].items()},
            frame_audio_ms=list(per_frame["audio_ms"]),
            frame_ready_ms=list(per_frame["ready_ms"]),
            frame_latency_ms=list(per_frame["latency_ms"]),
            frame_slack_ms=list(per_frame["slack_ms"]),
            batch_frames=[(int(a), int(b)) for a, b in batches["frames"]],
            batch_ready_ms=list(batches["ready_ms"]),
            batch_ms=list(batches["batch_ms"]),
            talkrt_version=data.get("talkrt_version", ""),
            cuda_graph=data.get("cuda_graph"),
        )

    def save_json(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    # ---------------------------------------------------------------- text

    def _summary_items(self) -> list[tuple[str, str]]:
        frames = max(self.frames, 1)
        return [
            ("device", f"{self.device_name} ({self.device})"),
            ("frames", f"{self.frames} at {_num(self.fps)} fps, {_num(self.audio_seconds)} s of audio"),
            ("wall time", f"{_ms(self.wall_ms)}"),
            ("render_fps", _num(self.render_fps, 1)),
            ("real-time factor", _num(self.real_time_factor, 3)),
            ("avatar_first_frame_ms (time to first frame)", _ms(self.time_to_first_frame_ms)),
            ("tts_first_pcm_ms", _ms(self.tts_first_pcm_ms)),
            ("steady_chunk_ms", _ms(self.steady_chunk_ms)),
            (
                "deadline misses",
                f"{self.deadline_misses}/{self.frames} ({100.0 * self.deadline_misses / frames:.1f} %) "
                f"at {_num(self.deadline_ms, 2)} ms/frame",
            ),
            ("peak device memory", _bytes(self.peak_device_memory_bytes)),
            ("CUDA graphs", "-" if self.cuda_graph is None else ("used: " if self.cuda_graph["used"] else "not used: ") + self.cuda_graph["reason"]),
            ("host->device / device->host", f"{_bytes(self.h2d_bytes)} / {_bytes(self.d2h_bytes)}"),
        ]

    def _stage_rows(self) -> list[list[str]]:
        rows = []
        for name, stats in self.stages.items():
            pf = stats.per_frame_ms
            cells = ["-"] * 4 if pf is None else [_num(v, 3) for v in (pf.p50, pf.p90, pf.p99, pf.max)]
            rows.append([name, str(stats.calls), _num(stats.total_ms, 2), str(stats.frames), *cells])
        e2e = self.end_to_end_ms
        cells = ["-"] * 4 if e2e is None else [_num(v, 3) for v in (e2e.p50, e2e.p90, e2e.p99, e2e.max)]
        rows.append(["end to end", "", _num(self.wall_ms, 2), str(self.frames), *cells])
        return rows

    _STAGE_HEADER = ["stage", "calls", "total ms", "frames", "p50 ms", "p90 ms", "p99 ms", "max ms"]

    def to_markdown(self) -> str:
        """A summary list and one table row per stage that ran, then the end-to-end row."""
        lines = [f"## talkrt profile ({SCHEMA})", ""]
        lines += [f"- **{key}**: {value}" for key, value in self._summary_items()]
        lines += [
            "",
            "Per-frame columns: a batch's time divided over its frames (stages); "
            "ready minus audio available (end to end).",
            "",
            "| " + " | ".join(self._STAGE_HEADER) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(self._STAGE_HEADER) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self._stage_rows()]
        return "\n".join(lines) + "\n"

    def save_markdown(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, self.to_markdown())

    def rich_table(self) -> "Table":
        """The stage table for the terminal; the summary goes in the caption."""
        from rich.table import Table

        table = Table(
            title=f"talkrt profile: {self.frames} frames on {self.device_name}",
            caption=" · ".join(f"{k}: {v}" for k, v in self._summary_items()[2:]),
            caption_justify="left",
        )
        for i, header in enumerate(self._STAGE_HEADER):
            table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        rows = self._stage_rows()
        for i, row in enumerate(rows):
            last = i == len(rows) - 1
            table.add_row(*row, end_section=(i == len(rows) - 2), style="bold" if last else None)
        return table

    # ---------------------------------------------------------------- plot

    def plot(self, path: str | os.PathLike, *, dpi: int = 120) -> None:
        """PNG: per-frame stage cost (stacked) against the 1000/fps budget, and end-to-end latency.

        matplotlib is imported lazily and used through its Agg canvas directly, so the
        global pyplot backend of the caller is left alone.
        """
        from talkrt.optional import require

        require("matplotlib")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        x = np.asarray(self.frame_index, dtype=np.int64)
        fig = Figure(figsize=(11, 7), layout="constrained")
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1])
        fig.suptitle(
            f"talkrt profile: {self.frames} frames on {self.device_name} · render {_num(self.render_fps, 1)} fps"
            f" · RTF {_num(self.real_time_factor, 3)} · first frame {_ms(self.time_to_first_frame_ms)}"
            f" · deadline misses {self.deadline_misses}",
            fontsize=10,
        )

        # Stage costs per frame, stacked in pipeline order (tts has no frames).
        series = [(n, np.asarray(v, dtype=np.float64)) for n, v in self.frame_stage_ms.items()]
        series = [(n, v) for n, v in series if v.size and np.any(v > 0)]
        if series and x.size:
            top.stackplot(x, *[v for _, v in series], labels=[n for n, _ in series], alpha=0.85, step="mid")
        top.axhline(self.deadline_ms, color="red", linestyle="--", linewidth=1.2,
                    label=f"deadline 1000/fps = {_num(self.deadline_ms, 1)} ms")
        top.set_ylabel("stage cost per frame (ms)")
        top.set_title("per-frame cost by stage (batch time / frames in batch)", fontsize=9, loc="left")
        top.legend(loc="upper right", fontsize=8, ncols=4)
        top.grid(alpha=0.3)

        # End-to-end latency per frame with p50 / p99 and the frames that stalled playback.
        latency = np.asarray([np.nan if v is None else v for v in self.frame_latency_ms], dtype=np.float64)
        if latency.size and np.isfinite(latency).any():
            bottom.plot(x, latency, color="black", linewidth=1.0, marker="." if x.size <= 200 else None,
                        label="end-to-end latency")
            slack = np.asarray([np.nan if v is None else v for v in self.frame_slack_ms], dtype=np.float64)
            late = np.isfinite(slack) & (slack < -_LATE_TOLERANCE_MS)
            if late.any():
                bottom.scatter(x[late], latency[late], color="red", marker="x", zorder=3,
                               label=f"ready after presentation time ({int(late.sum())})")
        if self.end_to_end_ms is not None:
            for value, name, colour in ((self.end_to_end_ms.p50, "p50", "tab:blue"),
                                        (self.end_to_end_ms.p99, "p99", "tab:orange")):
                bottom.axhline(value, color=colour, linestyle=":", linewidth=1.2)
                bottom.annotate(f"{name} {_num(value, 1)} ms", xy=(1.0, value), xycoords=("axes fraction", "data"),
                                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                                color=colour, fontsize=8)
        bottom.axhline(self.deadline_ms, color="red", linestyle="--", linewidth=1.0,
                       label=f"deadline {_num(self.deadline_ms, 1)} ms")
        bottom.set_ylabel("end-to-end latency (ms)")
        bottom.set_xlabel("video frame")
        bottom.set_title("ready time - time its audio was available", fontsize=9, loc="left")
        bottom.legend(loc="upper left", fontsize=8)
        bottom.grid(alpha=0.3)
        finite = latency[np.isfinite(latency)] if latency.size else latency
        top_value = max(self.deadline_ms, float(finite.max()) if finite.size else 0.0)
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


# --------------------------------------------------------------------------- JSON schema

_MS = {"type": "number"}
_MS_OR_NULL = {"type": ["number", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_PERCENTILES = {
    "type": "object",
    "properties": {"p50": _MS, "p90": _MS, "p99": _MS, "max": _MS},
    "required": ["p50", "p90", "p99", "max"],
    "additionalProperties": False,
}
_PERCENTILES_OR_NULL = {"anyOf": [_PERCENTILES, {"type": "null"}]}

#: JSON schema (draft 2020-12) of :meth:`ProfileReport.to_json`. All times are
#: milliseconds on the run's clock (0 = run start); per-frame arrays are parallel to
#: ``per_frame.frame_index``; ``null`` means "not measured" (never NaN).
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://talkrt.dev/schemas/talkrt.profile/1",
    "title": "talkrt per-stage, per-frame latency profile",
    "type": "object",
    "properties": {
        "schema": {"const": SCHEMA},
        "talkrt_version": {"type": "string"},
        "device": {"type": "string", "description": "torch device, e.g. cuda:0 or cpu"},
        "device_name": {"type": "string"},
        "fps": {"type": "number", "exclusiveMinimum": 0},
        "deadline_ms": {"type": "number", "exclusiveMinimum": 0, "description": "1000 / fps"},
        "audio_seconds": {"type": "number", "minimum": 0},
        "frames": _COUNT,
        "wall_ms": {"type": "number", "minimum": 0},
        "render_fps": {"type": "number", "minimum": 0},
        "real_time_factor": {"type": ["number", "null"], "minimum": 0},
        "time_to_first_frame_ms": _MS_OR_NULL,
        "avatar_first_frame_ms": _MS_OR_NULL,
        "tts_first_pcm_ms": _MS_OR_NULL,
        "steady_chunk_ms": _MS_OR_NULL,
        "deadline_misses": _COUNT,
        "peak_device_memory_bytes": {"type": ["integer", "null"], "minimum": 0, "description": "device-wide memory in use at its peak (cudaMemGetInfo: every library's allocations, TensorRT and ONNX Runtime included)"},
        "cuda_graph": {
            "type": ["object", "null"],
            "properties": {"used": {"type": "boolean"}, "reason": {"type": "string"}},
            "required": ["used", "reason"],
            "additionalProperties": False,
        },
        "h2d_bytes": _COUNT,
        "d2h_bytes": _COUNT,
        "end_to_end_ms": _PERCENTILES_OR_NULL,
        "stages": {
            "type": "object",
            "propertyNames": {"enum": list(STAGES)},
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "calls": _COUNT,
                    "total_ms": {"type": "number", "minimum": 0},
                    "frames": _COUNT,
                    "per_frame_ms": _PERCENTILES_OR_NULL,
                },
                "required": ["calls", "total_ms", "frames", "per_frame_ms"],
                "additionalProperties": False,
            },
        },
        "per_frame": {
            "type": "object",
            "properties": {
                "frame_index": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "audio_ms": {"type": "array", "items": _MS},
                "ready_ms": {"type": "array", "items": _MS_OR_NULL},
                "latency_ms": {"type": "array", "items": _MS_OR_NULL},
                "slack_ms": {"type": "array", "items": _MS_OR_NULL},
                "stage_ms": {
                    "type": "object",
                    "propertyNames": {"enum": list(STAGES)},
                    "additionalProperties": {"type": "array", "items": {"type": "number", "minimum": 0}},
                },
            },
            "required": ["frame_index", "audio_ms", "ready_ms", "latency_ms", "slack_ms", "stage_ms"],
            "additionalProperties": False,
        },
        "batches": {
            "type": "object",
            "properties": {
                "frames": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "prefixItems": [{"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 0}],
                        "minItems": 2,
                        "maxItems": 2,
                    },
                    "description": "[start, stop) frame range of each frames_ready call, in ready order",
                },
                "ready_ms": {"type": "array", "items": _MS},
                "batch_ms": {"type": "array", "items": {"type": "number", "minimum": 0}},
            },
            "required": ["frames", "ready_ms", "batch_ms"],
            "additionalProperties": False,
        },
    },
    "required": [
        "schema", "talkrt_version", "device", "device_name", "fps", "deadline_ms", "audio_seconds",
        "frames", "wall_ms", "render_fps", "real_time_factor", "time_to_first_frame_ms",
        "avatar_first_frame_ms", "tts_first_pcm_ms", "steady_chunk_ms", "deadline_misses",
        "peak_device_memory_bytes", "h2d_bytes", "d2h_bytes", "end_to_end_ms", "stages",
        "per_frame", "batches",
    ],
    "additionalProperties": False,
}


# --------------------------------------------------------------------------- profiler

# A timestamp is either a host perf_counter() value (float) or a CUDA event, resolved in report().
_Stamp = Union[float, "torch.cuda.Event"]


class Profiler:
    """Times pipeline stages per frame; see the module docstring for the definitions.

    ``sample_rate`` is the rate of the sample counts given to ``audio_available`` /
    ``audio_chunk_arrived`` (the pipeline's 16 kHz clock). With ``enabled=False``
    every method is a cheap no-op and ``report`` returns an empty report.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        enabled: bool = True,
        nvtx: bool = True,
        *,
        sample_rate: int = 16000,
    ) -> None:
        self.device = torch.device(device)  # (engines.devices.normalize_device is a layer above)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"profiler device {self.device} requested but CUDA is not available")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        elif self.device.type != "cpu":
            raise ValueError(f"unsupported profiler device {self.device} (use cpu or cuda)")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.enabled = bool(enabled)
        self.cuda = self.device.type == "cuda"
        self.nvtx = bool(nvtx) and self.cuda
        self.sample_rate = int(sample_rate)
        self._started = False
        self._reset()

    # ---------------------------------------------------------------- lifecycle

    def _reset(self) -> None:
        self._origin_host = 0.0
        self._origin_event: Optional[torch.cuda.Event] = None
        self._stage_calls: list[tuple[str, Optional[range], _Stamp, _Stamp]] = []
        self._ready: list[tuple[range, _Stamp]] = []
        self._audio_first: list[float] = []  # audio_available() marks without a sample count
        self._audio_chunks: list[tuple[int, float]] = []  # (end_sample, host time)
        self.h2d_bytes = 0
        self.d2h_bytes = 0
        self._peak_used = 0

    def start(self) -> None:
        """Begin a run: clear previous records, reset peak memory, pin the clock's zero.

        On CUDA this synchronises the device once (outside the hot path) so that the
        origin event and ``perf_counter`` describe the same instant. Called
        implicitly by the first stage / mark if not called explicitly.
        """
        self._reset()
        self._started = True
        if not self.enabled:
            return
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._sample_memory()
            self._origin_event = torch.cuda.Event(enable_timing=True)
            self._origin_host = time.perf_counter()
            self._origin_event.record(torch.cuda.current_stream(self.device))
            self._origin_event.synchronize()
        else:
            self._origin_host = time.perf_counter()

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    def _now(self) -> _Stamp:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    # ---------------------------------------------------------------- hot path

    @contextlib.contextmanager
    def stage(self, name: str, frames: FramesLike = None, *, host: bool = False) -> Iterator[None]:
        """Time one step over the video frames in ``frames`` (a batch; None for no frames, e.g. tts).

        On CUDA: an event pair on the current stream and an NVTX range ``talkrt/<name>``;
        ``host=True`` times CPU work (a PyAV encode) with ``perf_counter`` instead.
        """
        if name not in STAGES:
            raise ValueError(f"unknown profiler stage {name!r}; stages are {', '.join(STAGES)}")
        span = _as_range(frames)
        if not self.enabled:
            yield
            return
        self._ensure_started()
        on_device = self.cuda and not host
        if self.nvtx:
            torch.cuda.nvtx.range_push(f"talkrt/{name}")
        begin = self._now() if on_device else time.perf_counter()
        try:
            yield
        finally:
            end = self._now() if on_device else time.perf_counter()
            if self.nvtx:
                torch.cuda.nvtx.range_pop()
            self._stage_calls.append((name, span, begin, end))

    def frames_ready(self, frames: range | int, *, t: Optional[float] = None) -> None:
        """Mark ``frames`` as ready (an event on the current stream on CUDA, or host time ``t``)."""
        span = _as_range(frames)
        if not self.enabled or span is None or len(span) == 0:
            return
        self._ensure_started()
        stamp: _Stamp = float(t) if t is not None else (self._now() if self.cuda else time.perf_counter())
        self._ready.append((span, stamp))
        if self.cuda:
            self._sample_memory()

    def _sample_memory(self) -> None:
        """Device-wide memory in use (no sync): sees TensorRT's and ONNX Runtime's allocations too."""
        free, total = torch.cuda.mem_get_info(self.device)
        self._peak_used = max(self._peak_used, total - free)

    def audio_available(
        self,
        *,
        samples: Optional[int] = None,
        seconds: Optional[float] = None,
        t: Optional[float] = None,
    ) -> None:
        """The first audio is available at ``t`` (``perf_counter``; default now): t0 of time to first frame.

        With ``samples`` / ``seconds`` it also reports that much audio as arrived, like
        ``audio_chunk_arrived``. A run that never reports chunks is offline: all of its
        audio counts as available at the first mark.
        """
        if samples is not None and seconds is not None:
            raise ValueError("give samples or seconds, not both")
        if not self.enabled:
            return
        self._ensure_started()
        when = time.perf_counter() if t is None else float(t)
        if seconds is not None:
            samples = round(seconds * self.sample_rate)
        if samples is None:
            self._audio_first.append(when)
        else:
            self._audio_chunks.append((int(samples), when))

    def audio_chunk_arrived(self, end_sample: int, t: Optional[float] = None) -> None:
        """Streaming: samples [0, end_sample) had arrived at ``t`` (``perf_counter``; default now)."""
        if end_sample < 0:
            raise ValueError("end_sample must be non-negative")
        if not self.enabled:
            return
        self._ensure_started()
        self._audio_chunks.append((int(end_sample), time.perf_counter() if t is None else float(t)))

    def count_copy(self, nbytes: int | torch.Tensor, direction: Literal["h2d", "d2h"]) -> None:
        """Account bytes copied between host and device (a tensor counts its ``nbytes``)."""
        if isinstance(nbytes, torch.Tensor):
            nbytes = nbytes.nbytes
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ValueError("nbytes must be non-negative")
        if direction == "h2d":
            if self.enabled:
                self.h2d_bytes += nbytes
        elif direction == "d2h":
            if self.enabled:
                self.d2h_bytes += nbytes
        else:
            raise ValueError(f"direction must be 'h2d' or 'd2h', not {direction!r}")

    # ---------------------------------------------------------------- report

    def _resolve(self, stamp: _Stamp) -> float:
        """ms since the run start, on one clock for host times and CUDA events."""
        if isinstance(stamp, float):
            return (stamp - self._origin_host) * 1000.0
        stamp.synchronize()
        assert self._origin_event is not None
        return float(self._origin_event.elapsed_time(stamp))

    def _host_ms(self, t: float) -> float:
        return (t - self._origin_host) * 1000.0

    def report(
        self,
        audio_seconds: float,
        fps: float,
        *,
        alignment: Optional["FeatureAlignment"] = None,
        cuda_graph=None,
    ) -> ProfileReport:
        """Resolve every mark and compute the run's numbers (the only place that synchronises).

        ``fps`` may be any number (or Fraction) > 0. ``alignment`` decides which audio
        each frame needs when audio arrived in chunks (default: the frame's own span).
        ``cuda_graph`` (anything with ``use`` and ``reason``) is the pipeline's capture decision.
        """
        from talkrt import __version__

        fps_value = float(fps)
        if not fps_value > 0:
            raise ValueError("fps must be positive")
        if audio_seconds < 0:
            raise ValueError("audio_seconds must be non-negative")
        if alignment is not None and alignment.sample_rate != self.sample_rate:
            raise ValueError(
                f"alignment {alignment.name} runs at {alignment.sample_rate} Hz, the profiler at {self.sample_rate} Hz"
            )

        # Resolve every stamp to ms since run start.
        calls = [(name, span, self._resolve(b), self._resolve(e)) for name, span, b, e in self._stage_calls]
        ready_marks = sorted(((self._resolve(stamp), span) for span, stamp in self._ready), key=lambda m: m[0])

        # Frames: everything marked ready or touched by a stage.
        ready_ms: dict[int, float] = {}
        for when, span in ready_marks:
            for k in span:
                ready_ms.setdefault(k, when)  # a frame is ready the first time it is marked
        touched = set(ready_ms)
        for _, span, _, _ in calls:
            if span is not None:
                touched.update(span)
        index = sorted(touched)
        position = {k: i for i, k in enumerate(index)}
        n = len(index)
        frames = len(ready_ms) if ready_ms else n

        # Per-stage totals and per-frame division.
        stage_frame = {name: np.zeros(n) for name in STAGES}
        stage_calls = {name: 0 for name in STAGES}
        stage_total = {name: 0.0 for name in STAGES}
        stage_touched = {name: np.zeros(n, dtype=bool) for name in STAGES}
        for name, span, begin, end in calls:
            duration = max(0.0, end - begin)
            stage_calls[name] += 1
            stage_total[name] += duration
            if span is not None and len(span):
                rows = [position[k] for k in span]
                stage_frame[name][rows] += duration / len(span)
                stage_touched[name][rows] = True
        ran = [name for name in STAGES if stage_calls[name]]
        stages = {
            name: StageStats(
                calls=stage_calls[name],
                total_ms=round(stage_total[name], _DECIMALS),
                frames=int(stage_touched[name].sum()),
                per_frame_ms=Percentiles.of(stage_frame[name][stage_touched[name]]),
            )
            for name in ran
        }

        # Audio: when each frame's audio was available.
        first_audio_candidates = [self._host_ms(t) for t in self._audio_first]
        first_audio_candidates += [self._host_ms(t) for _, t in self._audio_chunks]
        first_audio = min(first_audio_candidates) if first_audio_candidates else None
        frame_audio = self._frame_audio_ms(index, fps, audio_seconds, alignment)

        # End-to-end latency, deadlines, batches.
        ready = np.array([ready_ms.get(k, np.nan) for k in index], dtype=np.float64)
        audio = np.array(frame_audio, dtype=np.float64)
        latency = ready - np.maximum(audio, 0.0)
        is_ready = np.isfinite(ready)
        slack = np.full(n, np.nan)
        deadline_misses = 0
        first_ready = None
        if is_ready.any():
            first_ready = float(ready[is_ready].min())
            k0 = min(ready_ms)
            presentation = first_ready + (np.asarray(index, dtype=np.float64) - k0) * 1000.0 / fps_value
            slack = presentation - ready
            deadline_misses = int((slack[is_ready] < -_LATE_TOLERANCE_MS).sum())

        batch_frames, batch_ready, batch_ms = [], [], []
        previous = 0.0
        for when, span in ready_marks:
            needed = max((float(audio[position[k]]) for k in span), default=0.0)
            batch_frames.append((span.start, span.stop))
            batch_ready.append(round(when, _DECIMALS))
            batch_ms.append(round(max(0.0, when - max(previous, needed, 0.0)), _DECIMALS))
            previous = max(previous, when)

        ends = [end for _, _, _, end in calls] + [when for when, _ in ready_marks]
        wall_ms = max([0.0, *ends])
        tts_calls = [(b, e) for name, _, b, e in calls if name == "tts"]
        tts_first_pcm = None
        if tts_calls:
            tts_begin, tts_end = min(tts_calls)
            tts_first_pcm = (first_audio if first_audio is not None else tts_end) - tts_begin
        ttff = None if first_ready is None else first_ready - (first_audio if first_audio is not None else 0.0)

        peak = None
        if self.cuda and self.enabled and self._started:
            self._sample_memory()
            peak = max(self._peak_used, int(torch.cuda.max_memory_allocated(self.device)))

        def rounded(values: np.ndarray) -> list[Optional[float]]:
            return [round(float(v), _DECIMALS) if math.isfinite(v) else None for v in values]

        return ProfileReport(
            device=str(self.device),
            device_name=_device_name(self.device),
            fps=fps_value,
            audio_seconds=float(audio_seconds),
            frames=frames,
            wall_ms=round(wall_ms, _DECIMALS),
            render_fps=round(frames / (wall_ms / 1000.0), _DECIMALS) if wall_ms > 0 else 0.0,
            real_time_factor=round(wall_ms / 1000.0 / audio_seconds, 6) if audio_seconds > 0 else None,
            time_to_first_frame_ms=None if ttff is None else round(ttff, _DECIMALS),
            tts_first_pcm_ms=None if tts_first_pcm is None else round(tts_first_pcm, _DECIMALS),
            steady_chunk_ms=round(float(np.median(batch_ms[1:])), _DECIMALS) if len(batch_ms) > 1 else None,
            deadline_misses=deadline_misses,
            peak_device_memory_bytes=peak,
            h2d_bytes=self.h2d_bytes,
            d2h_bytes=self.d2h_bytes,
            stages=stages,
            end_to_end_ms=Percentiles.of(latency[is_ready]),
            frame_index=index,
            frame_stage_ms={name: [round(float(v), _DECIMALS) for v in stage_frame[name]] for name in ran},
            frame_audio_ms=[round(float(v), _DECIMALS) for v in audio],
            frame_ready_ms=rounded(ready),
            frame_latency_ms=rounded(latency),
            frame_slack_ms=rounded(slack),
            batch_frames=batch_frames,
            batch_ready_ms=batch_ready,
            batch_ms=batch_ms,
            talkrt_version=__version__,
            cuda_graph=None if cuda_graph is None else {"used": bool(cuda_graph.use), "reason": str(cuda_graph.reason)},
        )

    def _frame_audio_ms(
        self,
        index: list[int],
        fps: float,
        audio_seconds: float,
        alignment: Optional["FeatureAlignment"],
    ) -> list[float]:
        """When the audio each frame needs had arrived (ms since run start; 0 when never marked)."""
        if not self._audio_chunks:  # offline: all of the audio arrived with the first mark
            offline = [self._host_ms(t) for t in self._audio_first]
            when = min(offline) if offline else 0.0
            return [when] * len(index)
        chunks = sorted(self._audio_chunks, key=lambda c: c[1])
        total = round(audio_seconds * self.sample_rate)
        last_time = self._host_ms(chunks[-1][1])
        # Cumulative count of computable frames after each chunk, in arrival order.
        marks: list[tuple[int, float]] = []
        reach = 0
        for end_sample, when in chunks:
            end_sample = min(end_sample, total) if total else end_sample
            final = bool(total) and end_sample >= total  # the stream's end is known only once reached
            if alignment is not None:
                count = alignment.frames_ready(end_sample, fps, total_samples=total if final else None)
            elif final:
                count = num_video_frames(total, fps, self.sample_rate)
            else:  # frame k's own span [s_k, s_{k+1}) is inside [0, end_sample)
                count = max(0, num_video_frames(end_sample + 1, fps, self.sample_rate) - 1)
            if count > reach:
                reach = count
                marks.append((reach, self._host_ms(when)))
        result = []
        cursor = 0
        for k in index:  # index is sorted, and so are the marks' reaches
            while cursor < len(marks) and marks[cursor][0] <= k:
                cursor += 1
            result.append(marks[cursor][1] if cursor < len(marks) else last_time)
        return result


def _as_range(frames: FramesLike) -> Optional[range]:
    if frames is None:
        return None
    if isinstance(frames, bool):
        raise TypeError("frames must be a range, an int or None")
    if isinstance(frames, int):
        return range(frames, frames + 1)
    if isinstance(frames, range):
        if frames.step != 1 or frames.start < 0:
            raise ValueError(f"frames must be a contiguous range of non-negative indices, not {frames!r}")
        return frames
    raise TypeError(f"frames must be a range, an int or None, not {type(frames).__name__}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"
