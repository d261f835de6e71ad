"""The engine cache: hits reuse at once, any change of inputs misses, stale or damaged entries are refused."""

from __future__ import annotations

import json

import pytest

from talkrt.engines.build import BuildOptions, build_engine
from talkrt.engines.cache import EngineCache
from talkrt.engines.profiles import parse_profile_override

pytest.importorskip("tensorrt_rtx")

SMALL = (parse_profile_override("batch:1,2,4"),)


def _options(cache_dir, **changes) -> BuildOptions:
    base = {"backend": "tensorrt-rtx", "compute_capabilities": ("8.6",), "profile_overrides": SMALL, "cache_dir": str(cache_dir)}
    return BuildOptions(**{**base, **changes})


def test_hit_miss_and_refusal(wav2lip_onnx, tmp_path) -> None:
    cache_dir = tmp_path / "cache"
    first = build_engine(wav2lip_onnx, tmp_path / "a.engine", _options(cache_dir))
    assert first.reused is None
    key = first.metadata["cache_key"]
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"{key}.engine", f"{key}.engine.json"]

    # Same inputs, another output path: served from the cache, byte for byte.
    second = build_engine(wav2lip_onnx, tmp_path / "b.engine", _options(cache_dir))
    assert second.reused == f"reused cached engine {key[:12]}"
    assert (tmp_path / "b.engine").read_bytes() == (tmp_path / "a.engine").read_bytes()
    assert json.loads((tmp_path / "b.engine.json").read_text())["cache_key"] == key

    # Same inputs, same output: nothing to do.
    again = build_engine(wav2lip_onnx, tmp_path / "a.engine", _options(cache_dir))
    assert again.reused and "already built" in again.reused

    # Another profile or target: a different key, a new build.
    other = build_engine(wav2lip_onnx, tmp_path / "c.engine", _options(cache_dir, compute_capabilities=("8.9",)))
    assert other.reused is None and other.metadata["cache_key"] != key

    # An entry whose sidecar says another runtime built it is never served.
    sidecar = cache_dir / f"{key}.engine.json"
    stale = json.loads(sidecar.read_text())
    stale["build_inputs"]["backend"]["version"] = "1.6.0.0"
    sidecar.write_text(json.dumps(stale))
    lookup = EngineCache(cache_dir).lookup(key, first.metadata["build_inputs"])
    assert lookup.engine is None and "was built with backend" in lookup.reason and "1.6.0.0" in lookup.reason
    rebuilt = build_engine(wav2lip_onnx, tmp_path / "d.engine", _options(cache_dir))
    assert rebuilt.reused is None
    assert json.loads(sidecar.read_text())["build_inputs"]["backend"]["version"] != "1.6.0.0"  # the entry was replaced


def test_damaged_entry_is_rebuilt(wav2lip_onnx, tmp_path) -> None:
    cache_dir = tmp_path / "cache"
    key = build_engine(wav2lip_onnx, tmp_path / "a.engine", _options(cache_dir)).metadata["cache_key"]
    engine = cache_dir / f"{key}.engine"
    engine.write_bytes(engine.read_bytes()[:1000])
    lookup = EngineCache(cache_dir).lookup(key, json.loads((cache_dir / f"{key}.engine.json").read_text())["build_inputs"])
    assert lookup.engine is None and "damaged" in lookup.reason
    result = build_engine(wav2lip_onnx, tmp_path / "b.engine", _options(cache_dir))
    assert result.reused is None and (tmp_path / "b.engine").stat().st_size > 1000


def test_no_cache_and_several_profiles(wav2lip_onnx, tmp_path) -> None:
    options = BuildOptions(
        backend="tensorrt-rtx",
        compute_capabilities=("8.6",),
        profile_overrides=(parse_profile_override("batch:1,1,1"),),
        extra_profiles=((parse_profile_override("batch:2,8,32"),),),
        cache=False,
        cache_dir=str(tmp_path / "unused"),
    )
    result = build_engine(wav2lip_onnx, tmp_path / "two.engine", options)
    assert [p["face_sequences"]["max"][0] for p in result.metadata["profiles"]] == [1, 32]
    assert not (tmp_path / "unused").exists()
