"""ONNX -> serialized engine with TensorRT-RTX or TensorRT, plus its JSON sidecar and a cache entry.

Precision: ``fp32`` builds the graph as exported. ``fp16`` and ``auto`` first make
a mixed-precision plan (precision/plan.py): strongly typed builders (TensorRT
11, TensorRT-RTX) parse the mixed graph; TensorRT 10 parses the FP32 graph with
the FP16 flag and FP32 constraints on the plan's FP32 layers. Either way the
sidecar records which nodes stay FP32 and why.

The parser gets that graph with its constants folded by Polygraphy
(engines/sanitize.py); the sidecar records the node counts before and after, or
why folding failed and the graph was parsed as is.

Reading a sidecar back (read_sidecar, rebuild_command, sidecar_path) lives in
engines/sidecar.py, below devices and backends; this module re-exports it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import onnx

import talkrt
from talkrt.engines.backends import HARDWARE_COMPAT, BuildProgress, make_logger, make_monitor, parse_errors, select_backend
from talkrt.engines.cache import EngineCache, engine_key
from talkrt.engines.model_files import load_onnx
from talkrt.engines.profiles import Profile, ProfileOverride, graph_inputs, resolve_profile, spec_dims
from talkrt.engines.sanitize import key_inputs, sanitize_for_build
from talkrt.engines.sidecar import ENGINE_BUILDERS, read_sidecar, rebuild_command, sidecar_path
from talkrt.errors import TalkrtError
from talkrt.fileio import atomic_path, sha256_file, write_bytes_atomic, write_text_atomic

PRECISIONS = ("fp32", "fp16", "auto")

__all__ = ["ENGINE_BUILDERS", "PRECISIONS", "BuildOptions", "BuildResult", "build_engine", "read_sidecar", "rebuild_command", "sidecar_path", "compute_capability_list"]


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "auto"  # auto | tensorrt-rtx | tensorrt
    precision: str = "fp32"  # fp32 | fp16 | auto
    profile_overrides: tuple[ProfileOverride, ...] = ()  # the first (default) profile
    extra_profiles: tuple[tuple[ProfileOverride, ...], ...] = ()  # more profiles, each from the spec's dims plus its overrides
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets, e.g. ("8.6", "12.0"); () = default
    optimization_level: int = 3
    workspace_mib: int | None = None
    calibration: str | None = None  # .npz of inputs for --precision auto (default: drawn from the spec)
    timing_cache: str | None = None  # TensorRT: loaded if present, saved after the build
    hardware_compat: str = "none"  # TensorRT: none | ampere_plus | same_compute_capability
    version_compatible: bool = False  # TensorRT: needs the lean runtime where the engine runs
    cache: bool = True
    cache_dir: str | None = None

    @classmethod
    def parse(cls, *, profiles: Sequence[str] = (), extra_profiles: Sequence[str] = (), compute_capabilities: Sequence[str] = (),
              calibration=None, timing_cache=None, **options) -> "BuildOptions":
        """Options as a user types them: ``NAME:MIN,OPT,MAX`` overrides, extra profiles as
        overrides separated by ';', compute capabilities as lists such as ``8.6,12.0``."""
        from talkrt.engines.profiles import parse_profile_override

        return cls(
            profile_overrides=tuple(parse_profile_override(p) for p in profiles),
            extra_profiles=tuple(tuple(parse_profile_override(p) for p in extra.split(";") if p.strip()) for extra in extra_profiles),
            compute_capabilities=compute_capability_list(compute_capabilities),
            calibration=str(calibration) if calibration else None,
            timing_cache=str(timing_cache) if timing_cache else None,
            **options,
        )


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    metadata: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    reused: str | None = None  # why an existing engine was reused instead of building

    def summary(self) -> list[str]:
        """What `talkrt build` prints: the profiles, the precision plan, constant folding, then the engine."""
        meta = self.metadata
        target, plan, folding = meta["target"], meta["precision"], meta.get("sanitize")  # no sanitize: written before folding
        where = ", ".join("sm" + cc.replace(".", "") for cc in target["compute_capabilities"]) if "compute_capabilities" in target else f"{target['gpu']} (sm{target['compute_capability'].replace('.', '')})"
        lines = [
            f"  profile {index} {name}: min {'x'.join(map(str, shapes['min']))}  opt {'x'.join(map(str, shapes['opt']))}  max {'x'.join(map(str, shapes['max']))}"
            for index, shapes_by_input in enumerate(meta["profiles"])
            for name, shapes in shapes_by_input.items()
        ]
        if plan["mode"] != "fp32":
            verdict = "gates hold" if plan.get("passed") else "GATES FAIL"
            lines.append(f"  precision {plan['mode']}: {len(plan.get('fp32_nodes', {}))} nodes kept in FP32, {verdict}; {plan.get('applied_as', '')}")
        if folding:
            lines.append(f"  constant folding ({folding['tool']}): {folding['fallback'] or str(folding['nodes_before']) + ' -> ' + str(folding['nodes_after']) + ' nodes'}")
        done = f"reused ({self.reused})" if self.reused else f"in {meta['build_seconds']:.1f} s"
        size = f"{meta['engine_bytes'] / (1 << 20):.1f} MiB"
        lines.append(f"{self.engine} ({size}, {meta['backend']['name']} {meta['backend']['version']}, {plan['mode']}, for {where}) {done}; sidecar {self.sidecar.name}")
        return lines


def _profiles_json(profiles: list[Profile]) -> list[dict]:
    return [{name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in profile.items()} for profile in profiles]


def build_engine_file(onnx_path: str | os.PathLike, out: str | os.PathLike | None, options: BuildOptions, progress: BuildProgress | None = None) -> BuildResult:
    """`talkrt build` of one file: the engine goes beside the ONNX file unless ``out`` says where,
    and every path is checked before the build starts."""
    from talkrt.outputs import check_outputs

    out = Path(out) if out else Path(onnx_path).with_suffix(".engine")
    check_outputs({"--out": [out, sidecar_path(out)]}, {"ONNX_FILE": onnx_path, "--calibration": options.calibration})
    return build_engine(onnx_path, out, options, progress)


def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    progress: BuildProgress | None = None,
) -> BuildResult:
    """Build ``onnx_path`` into ``out`` and write ``out.json``; both appear only if the build succeeds.

    A matching engine (same build inputs) at ``out`` or in the cache is reused at once.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    if options.precision not in PRECISIONS:
        raise TalkrtError(f"unknown precision {options.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if options.hardware_compat not in HARDWARE_COMPAT:
        raise TalkrtError(f"unknown hardware compatibility {options.hardware_compat!r}; choose one of {', '.join(HARDWARE_COMPAT)}")
    if options.calibration and options.precision != "auto":
        raise TalkrtError("--calibration is for --precision auto")
    model = load_onnx(onnx_path)
    inputs = graph_inputs(model)
    dims = spec_dims(model)
    profiles = [resolve_profile(inputs, dims, overrides) for overrides in (options.profile_overrides, *options.extra_profiles)]
    backend = select_backend(options.backend)
    target = backend.target(options.compute_capabilities)

    build_inputs = {
        "onnx_sha256": sha256_file(onnx_path),
        "backend": {"name": backend.name, "version": backend.version},
        "target": target,
        "precision": {"mode": options.precision, "calibration_sha256": sha256_file(options.calibration) if options.calibration else None},
        "profiles": _profiles_json(profiles),
        "options": {"optimization_level": options.optimization_level, "hardware_compat": options.hardware_compat, "version_compatible": options.version_compatible},
        "sanitize": key_inputs(),  # the folded graph is a function of the ONNX file and these versions
    }
    key = engine_key(build_inputs)
    cache = EngineCache(options.cache_dir) if options.cache else None
    reused = _reuse(out, key, build_inputs, cache)
    if reused is not None:
        return reused

    log: list[str] = []
    trt = backend.trt
    logger = make_logger(trt, log)
    start = time.perf_counter()
    plan, parse_path, cleanup = _precision(model, onnx_path, out, options, backend)
    temporary = [cleanup] if cleanup is not None else []
    try:
        sanitized = sanitize_for_build(parse_path, out.with_name(f".{out.name}.folded.onnx"))
        temporary += sanitized.temporary
        if sanitized.record["fallback"]:
            log.append(f"[WARNING] {sanitized.record['fallback']}")
        builder = trt.Builder(logger)
        network = builder.create_network(backend.network_flags())
        parser = trt.OnnxParser(network, logger)
        # parse_from_file (not bytes) so an external .onnx.data sidecar resolves.
        if not parser.parse_from_file(str(sanitized.path)):
            raise TalkrtError(f"{backend.name} cannot parse {onnx_path.name}: {parse_errors(parser)}")
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
    config = builder.create_builder_config()
    config.builder_optimization_level = options.optimization_level
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    backend.configure(config, target, options.hardware_compat, options.version_compatible)
    if plan["mode"] != "fp32" and not backend.strongly_typed:
        plan["applied_as"] = f"FP16 builder flag with FP32 constraints on {backend.apply_fp16_constraints(network, config, plan['fp32_nodes'])} layers"
    if options.timing_cache and Path(options.timing_cache).is_file():
        if backend.load_timing_cache(config, Path(options.timing_cache).read_bytes()) is None:
            log.append(f"[INFO] {backend.name} has no timing cache; {options.timing_cache} was not used")
    for profile in profiles:
        trt_profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            trt_profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(trt_profile)
    if progress is not None:
        config.progress_monitor = make_monitor(trt, progress)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = [line for line in log if line.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        raise TalkrtError(f"{backend.name} could not build {onnx_path.name}: {errors[-1] if errors else 'no error reported'}")
    seconds = time.perf_counter() - start
    if options.timing_cache:
        data = backend.save_timing_cache(config)
        if data:
            write_bytes_atomic(options.timing_cache, data)

    props = {p.key: p.value for p in model.metadata_props}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(memoryview(serialized))
    metadata = {
        "talkrt_version": talkrt.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "onnx": str(onnx_path),
        "onnx_sha256": build_inputs["onnx_sha256"],
        "family": props.get("talkrt.family"),
        "graph": props.get("talkrt.graph"),
        "backend": build_inputs["backend"],
        "target": target,
        "precision": plan,
        "sanitize": sanitized.record,
        "profiles": build_inputs["profiles"],
        "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in inputs],
        "outputs": [{"name": o.name, "dims": [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]} for o in model.graph.output],
        "builder_optimization_level": options.optimization_level,
        "build_seconds": round(seconds, 3),
        "build_inputs": build_inputs,
        "cache_key": key,
        "engine_bytes": out.stat().st_size,
        "engine_sha256": sha256_file(out),
    }
    write_text_atomic(sidecar_path(out), json.dumps(metadata, indent=2) + "\n")
    if cache is not None:
        cache.store(key, out, metadata)
    return BuildResult(out, sidecar_path(out), metadata, log)


def _reuse(out: Path, key: str, build_inputs: dict, cache: EngineCache | None) -> BuildResult | None:
    """An engine built from the same inputs, already at ``out`` or in the cache."""
    if out.is_file() and sidecar_path(out).is_file():
        try:
            existing = json.loads(sidecar_path(out).read_text())
        except json.JSONDecodeError:
            existing = {}
        if existing.get("cache_key") == key and existing.get("engine_sha256") == sha256_file(out):
            return BuildResult(out, sidecar_path(out), existing, reused=f"{out} was already built from the same inputs")
    if cache is None:
        return None
    lookup = cache.lookup(key, build_inputs)
    if lookup.engine is None:
        return None
    metadata = cache.copy_out(key, out)
    return BuildResult(out, sidecar_path(out), metadata, reused=lookup.reason)


def _precision(model: onnx.ModelProto, onnx_path: Path, out: Path, options: BuildOptions, backend) -> tuple[dict, Path, Path | None]:
    """The precision plan, the file to parse, and a temporary file to delete after parsing."""
    if options.precision == "fp32":
        return {"mode": "fp32", "fp32_nodes": "all", "reason": "FP32 build: every node keeps the graph's FP32 type"}, onnx_path, None
    from talkrt.precision.plan import plan_precision

    mixed, report = plan_precision(model, options.precision, options.calibration)
    plan = report.to_json()
    if not backend.strongly_typed:
        return plan, onnx_path, None  # TensorRT 10: FP32 graph, FP16 flag and layer constraints
    plan["applied_as"] = "strongly typed network from the mixed FP16 graph"
    mixed_path = out.with_name(f".{out.name}.mixed.onnx")
    onnx.save(mixed, str(mixed_path))
    plan["mixed_onnx_sha256"] = sha256_file(mixed_path)
    return plan, mixed_path, mixed_path


def compute_capability_list(values: Sequence[str]) -> tuple[str, ...]:
    """'8.6,12.0' or ['8.6', '12.0'] -> ('8.6', '12.0'); also accepts sm86 / SM120."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    normalized = []
    for item in items:
        digits = item.lower().removeprefix("sm").removeprefix("_")
        if "." not in digits and digits.isdigit() and len(digits) >= 2:
            digits = f"{digits[:-1]}.{digits[-1]}"
        try:
            major, minor = (int(x) for x in digits.split("."))
        except ValueError:
            raise TalkrtError(f"bad compute capability {item!r}: use e.g. 8.6 or sm86") from None
        normalized.append(f"{major}.{minor}")
    return tuple(normalized)
