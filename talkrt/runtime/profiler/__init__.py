"""Per-stage, per-frame latency profiler of the talking-head pipeline.

* :mod:`~talkrt.runtime.profiler.recorder`: :class:`Profiler`, which marks stages,
  frames ready, audio arrival and copies during a run;
* :mod:`~talkrt.runtime.profiler.summary`: :func:`summarize`, the pure step from
  recorded marks to the run's numbers, and where each number is defined;
* :mod:`~talkrt.runtime.profiler.report`: :class:`ProfileReport`, its JSON
  document and :data:`JSON_SCHEMA` generated from its fields;
* :mod:`~talkrt.runtime.profiler.render`: Markdown, terminal table and PNG plot.
"""

from __future__ import annotations

from talkrt.runtime.profiler.recorder import Clock, FramesLike, Profiler
from talkrt.runtime.profiler.report import JSON_SCHEMA, Percentiles, ProfileReport, StageStats, report_paths
from talkrt.runtime.profiler.summary import CaptureDecision, RecordedRun, StageCall, summarize
from talkrt.runtime.profiler.vocabulary import SCHEMA, STAGES

__all__ = [
    "STAGES",
    "SCHEMA",
    "JSON_SCHEMA",
    "Percentiles",
    "StageStats",
    "ProfileReport",
    "report_paths",
    "Profiler",
    "Clock",
    "FramesLike",
    "CaptureDecision",
    "RecordedRun",
    "StageCall",
    "summarize",
]
