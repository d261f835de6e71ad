"""HuBERT / Wav2Vec2 export: parity at several lengths (400 samples, odd, 60 s), metadata, TensorRT-RTX builds."""

from __future__ import annotations

import json

import onnx
import pytest

from talkrt.engines.build import BuildOptions, build_engine
from talkrt.engines.profiles import parse_profile_override
from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.export.validate import validate_onnx

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module", params=["tiny-hubert", "tiny-wav2vec2"])
def exported(request, tmp_path_factory):
    preset = request.param
    architecture = "hubert" if "hubert" in preset else "wav2vec2"
    spec = get_spec(architecture, preset=preset)
    module = spec.build_module(None, seed=7)
    path = tmp_path_factory.mktemp(preset) / f"{preset}.onnx"
    report = export_onnx(spec, module, path)
    return spec, module, path, report


def test_parity_at_many_lengths(exported) -> None:
    spec, module, path, report = exported
    assert [r.point for r in report.validation] == [{"batch": 1, "samples": 400}, {"batch": 3, "samples": 12345}]
    points = ({"batch": 2, "samples": 401}, {"batch": 1, "samples": 16001}, {"batch": 1, "samples": 960000})
    results = validate_onnx(spec, module, path, points=points, seed=50)
    assert all(r.ok for r in results), [r.describe() for r in results]


def test_graph_dims_and_metadata(exported) -> None:
    spec, _, path, _ = exported
    model = onnx.load(str(path))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)]
    assert dims == [["batch", "samples"], ["batch", "frames", 64]]
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops and "ReduceL2" not in ops  # weight norm folded, LayerNorm one node
    meta = read_metadata(path)
    assert meta["talkrt.feature_rate"] == "50" and meta["talkrt.layer"] == "2"
    stored = json.loads(meta["talkrt.spec"])
    assert stored["derived_dims"] == {"frames": "floor((samples - 400) / 320) + 1"}
    assert "LayerNormalization" in stored["keep_fp32_ops"]
    expected_norm = "inside graph" if spec.family == "hubert" else "none"  # tiny-wav2vec2 is a do_normalize=false preset
    assert meta["talkrt.normalize"] == expected_norm


def test_rtx_build_with_samples_profile(exported, tmp_path) -> None:
    _, _, path, _ = exported
    options = BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("samples:3200,32000,480000"),))
    result = build_engine(path, tmp_path / "encoder.engine", options)
    assert result.metadata["profiles"][0]["input_values"] == {"min": [1, 3200], "opt": [1, 32000], "max": [4, 480000]}
    assert result.engine.stat().st_size > 0


def test_base_model_exports_and_builds(tmp_path) -> None:
    """The real-size chinese-hubert-base graph (94M parameters): parity at 60 s, and a TensorRT-RTX build."""
    spec = get_spec("hubert", preset="chinese-hubert-base", layer=9)
    module = spec.build_module(None)
    path = tmp_path / "hubert.onnx"
    export_onnx(spec, module, path)
    (result,) = validate_onnx(spec, module, path, points=({"batch": 1, "samples": 960000},))
    assert result.ok, result.describe()
    assert read_metadata(path)["talkrt.layer"] == "9"
    engine = build_engine(path, tmp_path / "hubert.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.9",)))
    assert engine.metadata["profiles"][0]["input_values"]["max"] == [4, 480000]


def test_preset_family_mismatch() -> None:
    with pytest.raises(TalkrtError, match="is a hubert model; use `talkrt export hubert`"):
        get_spec("wav2vec2", preset="chinese-hubert-base")
    with pytest.raises(TalkrtError, match="unknown preset"):
        get_spec("hubert", preset="hubert-xxl")
