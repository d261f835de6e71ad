"""The report of one profiled run, its JSON document and the JSON schema generated from its fields.

Each field of :class:`ProfileReport` says where it sits in the JSON document and
which bounds its numbers have; ``to_json``, ``from_json`` and :data:`JSON_SCHEMA`
all walk the same fields, so the three cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union, get_args, get_origin, get_type_hints

import numpy as np

from talkrt.fileio import write_text_atomic
from talkrt.runtime.profiler.render import markdown as _markdown, plot as _plot, rich_table as _rich_table
from talkrt.runtime.profiler.vocabulary import DECIMALS, SCHEMA, STAGES

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = ["JSON_SCHEMA", "Percentiles", "ProfileReport", "StageStats"]


@dataclass(frozen=True)
class _Json:
    """How a report value appears in the JSON document, beyond what its type says."""

    group: Optional[str] = None  # the object of the document it sits in; None: the document itself
    key: Optional[str] = None  # its key there; None: the attribute's name
    description: Optional[str] = None
    schema: Optional[dict[str, Any]] = None  # replaces the schema derived from the type
    required: bool = True  # False: documents may omit it (older ones did)
    bounds: dict[str, float] = field(default_factory=dict)  # on the numbers inside, also in lists and maps
    digits: Optional[int] = None  # rounded to this many decimals in the document


def _json(group: Optional[str] = None, key: Optional[str] = None, *, description: Optional[str] = None,
          schema: Optional[dict[str, Any]] = None, required: bool = True, **bounds: float) -> dict[str, _Json]:
    """Field metadata for a report value (``bounds``: ``minimum``, ``exclusiveMinimum``)."""
    return {"json": _Json(group, key, description, schema, required, bounds)}


class _Derived(property):
    """A read-only value computed from the fields, which the JSON document carries right after ``follows``."""

    def __init__(self, getter: Callable[[Any], Any], follows: str, spec: _Json) -> None:
        super().__init__(getter)
        self.follows, self.json = follows, spec


def _derived(follows: str, *, digits: Optional[int] = None, description: Optional[str] = None,
             **bounds: float) -> Callable[[Callable[[Any], Any]], _Derived]:
    def wrap(getter: Callable[[Any], Any]) -> _Derived:
        return _Derived(getter, follows, _Json(description=description, bounds=bounds, digits=digits))

    return wrap


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
        return cls(*(round(float(v), DECIMALS) for v in (p50, p90, p99, array.max())))

    def to_json(self) -> dict[str, float]:
        return _to_json(self)


@dataclass(frozen=True)
class StageStats:
    """One stage over the run: calls, total time, and its per-frame cost over the frames it touched."""

    calls: int
    total_ms: float = field(metadata=_json(minimum=0))
    frames: int
    per_frame_ms: Optional[Percentiles]

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


_CUDA_GRAPH_SCHEMA = {
    "type": ["object", "null"],
    "properties": {"used": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["used", "reason"],
    "additionalProperties": False,
}


# Fields are keyword-only and listed in the order of the JSON document.
@dataclass(kw_only=True)
class ProfileReport:
    """The numbers of one run; :mod:`talkrt.runtime.profiler.summary` defines each of them.

    Raw arrays are parallel to ``frame_index`` (sorted video-frame indices seen by
    ``frames_ready`` or any stage); entries of frames never marked ready are None.
    """

    talkrt_version: str = ""
    device: str = field(metadata=_json(description="torch device, e.g. cuda:0 or cpu"))
    device_name: str
    fps: float = field(metadata=_json(exclusiveMinimum=0))
    audio_seconds: float = field(metadata=_json(minimum=0))
    frames: int
    wall_ms: float = field(metadata=_json(minimum=0))
    render_fps: float = field(metadata=_json(minimum=0))
    real_time_factor: Optional[float] = field(metadata=_json(minimum=0))
    time_to_first_frame_ms: Optional[float]
    tts_first_pcm_ms: Optional[float]
    # Text runs only (None otherwise), and absent from older documents.
    text_to_first_audio_ms: Optional[float] = field(default=None, metadata=_json(required=False, description=(
        "text runs: from the start of the run to the first chunk of speech ready (TTFA)")))
    text_to_first_frame_ms: Optional[float] = field(default=None, metadata=_json(required=False, description=(
        "text runs: from the start of the run to the first frame ready (TTFV)")))
    steady_real_time_factor: Optional[float] = field(default=None, metadata=_json(required=False, minimum=0, description=(
        "text runs: time after the first chunk of speech / the speech after it (the cost once started)")))
    steady_chunk_ms: Optional[float]
    deadline_misses: int
    peak_device_memory_bytes: Optional[int] = field(metadata=_json(description=(
        "device-wide memory in use at its peak (cudaMemGetInfo: every library's allocations, "
        "TensorRT and ONNX Runtime included)")))
    feature_context: Optional[str] = field(default=None, metadata=_json(required=False, description=(
        "what each frame's audio features were computed from: the whole utterance, exact incremental "
        "columns, or the sliding context a transformer streamed on; None off the pipeline")))
    # {"used": bool, "reason": str}; None off the pipeline, and absent from older documents
    cuda_graph: Optional[dict[str, Any]] = field(default=None, metadata=_json(schema=_CUDA_GRAPH_SCHEMA, required=False))
    h2d_bytes: int
    d2h_bytes: int
    end_to_end_ms: Optional[Percentiles]
    stages: dict[str, StageStats]
    frame_index: list[int] = field(default_factory=list, metadata=_json("per_frame", "frame_index"))
    frame_audio_ms: list[float] = field(default_factory=list, metadata=_json("per_frame", "audio_ms"))
    frame_ready_ms: list[Optional[float]] = field(default_factory=list, metadata=_json("per_frame", "ready_ms"))
    frame_latency_ms: list[Optional[float]] = field(default_factory=list, metadata=_json("per_frame", "latency_ms"))
    frame_slack_ms: list[Optional[float]] = field(default_factory=list, metadata=_json("per_frame", "slack_ms"))
    frame_stage_ms: dict[str, list[float]] = field(default_factory=dict, metadata=_json("per_frame", "stage_ms", minimum=0))
    batch_frames: list[tuple[int, int]] = field(default_factory=list, metadata=_json(
        "batches", "frames", description="[start, stop) frame range of each frames_ready call, in ready order"))
    batch_ready_ms: list[float] = field(default_factory=list, metadata=_json("batches", "ready_ms"))
    batch_ms: list[float] = field(default_factory=list, metadata=_json("batches", "batch_ms", minimum=0))

    # ---------------------------------------------------------------- derived values

    @_derived("fps", digits=DECIMALS, description="1000 / fps", exclusiveMinimum=0)
    def deadline_ms(self) -> float:
        """The per-frame budget 1000/fps."""
        return 1000.0 / self.fps

    @_derived("time_to_first_frame_ms")
    def avatar_first_frame_ms(self) -> Optional[float]:
        """OpenTalking's name for time to first frame."""
        return self.time_to_first_frame_ms

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        """A plain dict following :data:`JSON_SCHEMA` (``schema: "talkrt.profile/1"``)."""
        document: dict[str, Any] = {"schema": SCHEMA}
        for entry in _entries():
            value = getattr(self, entry.attr)
            if entry.json.digits is not None:
                value = round(value, entry.json.digits)
            target = document if entry.json.group is None else document.setdefault(entry.json.group, {})
            target[entry.key] = _to_json(value)
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProfileReport":
        """Rebuild a report from :meth:`to_json` output (e.g. to compare saved runs)."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} report (schema={data.get('schema')!r})")
        values = {}
        for entry in _entries():
            if entry.derived:
                continue
            source = data if entry.json.group is None else data[entry.json.group]
            if entry.key not in source and entry.json.group is None and entry.has_default:
                continue  # written before this field existed
            values[entry.attr] = _from_json(entry.type, source[entry.key])
        return cls(**values)

    def save_json(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    # ---------------------------------------------------------------- views

    def to_markdown(self) -> str:
        """A summary list and one table row per stage that ran, then the end-to-end row."""
        return _markdown(self)

    def save_markdown(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, self.to_markdown())

    def rich_table(self) -> "Table":
        """The stage table for the terminal; the summary goes in the caption."""
        return _rich_table(self)

    def plot(self, path: str | os.PathLike, *, dpi: int = 120) -> None:
        """PNG: per-frame stage cost (stacked) against the 1000/fps budget, and end-to-end latency."""
        _plot(self, path, dpi=dpi)

    def save_all(self, stem: Path) -> tuple[Path, Path, Path]:
        """JSON, Markdown and PNG beside each other (:func:`report_paths`)."""
        json_path, markdown_path, plot_path = report_paths(stem)
        self.save_json(json_path)
        self.save_markdown(markdown_path)
        self.plot(plot_path)
        return json_path, markdown_path, plot_path


def report_paths(stem: Path) -> tuple[Path, Path, Path]:
    """Where a report's views go: stem.json, stem.md, stem.png."""
    return stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")


# --------------------------------------------------------------------------- field walking


@dataclass(frozen=True)
class _Entry:
    attr: str  # the ProfileReport attribute
    type: Any
    json: _Json
    derived: bool
    has_default: bool

    @property
    def key(self) -> str:
        return self.json.key or self.attr


@functools.cache
def _entries() -> tuple[_Entry, ...]:
    """The report's fields and derived values in document order."""
    hints = get_type_hints(ProfileReport)
    derived = [value for value in vars(ProfileReport).values() if isinstance(value, _Derived)]
    entries = []
    for f in dataclasses.fields(ProfileReport):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        entries.append(_Entry(f.name, hints[f.name], _json_of(f), derived=False, has_default=has_default))
        for value in derived:
            if value.follows == f.name:
                name = value.fget.__name__
                entries.append(_Entry(name, get_type_hints(value.fget)["return"], value.json, derived=True, has_default=False))
    return tuple(entries)


def _json_of(f: dataclasses.Field) -> _Json:
    return f.metadata.get("json", _Json())


def _optional_inner(tp: Any) -> Any:
    """X for Optional[X], else None."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0]
    return None


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    inner = _optional_inner(tp)
    if inner is not None:
        return _from_json(inner, value)
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        return tp(**{f.name: _from_json(hints[f.name], value[f.name]) for f in dataclasses.fields(tp)})
    if origin is dict:
        return {k: _from_json(args[1], v) for k, v in value.items()}
    if origin is list:
        return [_from_json(args[0], v) for v in value]
    if origin is tuple:
        return tuple(int(v) if a is int else _from_json(a, v) for a, v in zip(args, value, strict=True))
    return value


# --------------------------------------------------------------------------- JSON schema


def _schema_of(tp: Any, bounds: dict[str, float]) -> dict[str, Any]:
    """JSON schema of a report type; ``bounds`` go on its numbers."""
    inner = _optional_inner(tp)
    if inner is not None:
        schema = _schema_of(inner, bounds)
        if schema.get("type") in ("number", "integer", "string", "boolean"):
            return {**schema, "type": [schema["type"], "null"]}
        return {"anyOf": [schema, {"type": "null"}]}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:  # the report's integers are counts, byte sizes and frame indices
        return {"type": "integer", "minimum": 0, **bounds}
    if tp is float:
        return {"type": "number", **bounds}
    if tp is str:
        return {"type": "string"}
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0], bounds)}
    if origin is tuple:
        return {
            "type": "array",
            "prefixItems": [_schema_of(a, bounds) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is dict:  # the report's maps are keyed by stage name
        return {"type": "object", "propertyNames": {"enum": list(STAGES)}, "additionalProperties": _schema_of(args[1], bounds)}
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        return _object({f.name: _schema_of(hints[f.name], _json_of(f).bounds) for f in dataclasses.fields(tp)})
    raise TypeError(f"no JSON schema for {tp!r}")


def _object(properties: dict[str, Any], required: Optional[list[str]] = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _report_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {"schema": {"const": SCHEMA}}
    required = ["schema"]
    groups: dict[str, dict[str, Any]] = {}
    for entry in _entries():
        spec = entry.json
        schema = spec.schema if spec.schema is not None else _schema_of(entry.type, spec.bounds)
        if spec.description is not None:
            schema = {**schema, "description": spec.description}
        if spec.group is None:
            properties[entry.key] = schema
            if spec.required:
                required.append(entry.key)
        else:
            if spec.group not in groups:
                groups[spec.group] = properties[spec.group] = {}  # placeholder keeps the document order
                required.append(spec.group)
            groups[spec.group][entry.key] = schema
    for group, members in groups.items():
        properties[group] = _object(members)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://talkrt.dev/schemas/{SCHEMA}",
        "title": "talkrt per-stage, per-frame latency profile",
        **_object(properties, required),
    }


#: JSON schema (draft 2020-12) of :meth:`ProfileReport.to_json`, generated from the
#: report's fields. All times are milliseconds on the run's clock (0 = run start);
#: per-frame arrays are parallel to ``per_frame.frame_index``; ``null`` means "not
#: measured" (never NaN).
JSON_SCHEMA: dict[str, Any] = _report_schema()
