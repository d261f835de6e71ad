"""Engine builds with the real TensorRT-RTX builder (CPU-only ahead of time) and their sidecars."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

from talkrt.engines.build import BuildOptions, build_engine, compute_capability_list, read_sidecar
from talkrt.engines.cache import engine_key
from talkrt.engines.profiles import parse_profile_override
from talkrt.errors import TalkrtError
from talkrt.fileio import sha256_file

pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")


@pytest.fixture(scope="module")
def wav2lip_engine(wav2lip_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "wav2lip.engine"
    phases: list[str] = []

    class Recorder:
        def phase_start(self, name, parent, num_steps):
            phases.append(name)

        def step_complete(self, name, step):
            pass

        def phase_finish(self, name):
            pass

    result = build_engine(wav2lip_onnx, out, BuildOptions(backend="tensorrt-rtx"), Recorder())
    return result, phases


def test_rtx_build_writes_engine_and_sidecar(wav2lip_engine, wav2lip_onnx) -> None:
    result, phases = wav2lip_engine
    assert result.engine.stat().st_size > 100 << 20  # 36M FP32 weights live in the plan
    assert "Building engine" in phases  # progress reached the monitor
    sidecar = read_sidecar(result.engine)
    assert sidecar == result.metadata
    assert sidecar["onnx_sha256"] == sha256_file(wav2lip_onnx)
    assert sidecar["backend"]["name"] == "tensorrt-rtx"
    import tensorrt_rtx

    assert sidecar["backend"]["version"] == tensorrt_rtx.__version__
    assert sidecar["target"] == {"compute_capabilities": ["8.0", "8.6", "8.9", "12.0"]}
    assert sidecar["precision"]["mode"] == "fp32"
    assert sidecar["family"] == "wav2lip"
    assert sidecar["profiles"] == [
        {
            "audio_sequences": {"min": [1, 1, 80, 16], "opt": [8, 1, 80, 16], "max": [128, 1, 80, 16]},
            "face_sequences": {"min": [1, 6, 96, 96], "opt": [8, 6, 96, 96], "max": [128, 6, 96, 96]},
        }
    ]
    assert sidecar["cache_key"] == engine_key(sidecar["build_inputs"])
    assert sidecar["build_seconds"] > 0 and sidecar["engine_bytes"] == result.engine.stat().st_size


def test_profile_override_and_targets_change_the_key(wav2lip_onnx, wav2lip_engine, tmp_path) -> None:
    options = BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("batch:1,2,4"),), compute_capabilities=("8.6",))
    result = build_engine(wav2lip_onnx, tmp_path / "small.engine", options)
    assert result.metadata["profiles"][0]["face_sequences"]["max"] == [4, 6, 96, 96]
    assert result.metadata["target"] == {"compute_capabilities": ["8.6"]}
    assert result.metadata["cache_key"] != wav2lip_engine[0].metadata["cache_key"]


def _foreign_graph(path, op="Relu", domain=""):
    """A graph talkrt did not export: no spec metadata, an unnamed-range dynamic dim."""
    node = helper.make_node(op, ["x"], ["y"], domain=domain, name="the_node")
    graph = helper.make_graph(
        [node],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_foreign_graph_needs_a_profile(tmp_path) -> None:
    model = _foreign_graph(tmp_path / "foreign.onnx")
    with pytest.raises(TalkrtError, match=r"dynamic dim 'n' with no range: pass --profile n:MIN,OPT,MAX"):
        build_engine(model, tmp_path / "foreign.engine", BuildOptions(backend="tensorrt-rtx"))
    assert not (tmp_path / "foreign.engine").exists()
    result = build_engine(model, tmp_path / "foreign.engine", BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("x:1,4,9"),)))
    assert result.metadata["profiles"][0]["x"] == {"min": [1, 16], "opt": [4, 16], "max": [9, 16]}
    assert result.metadata["family"] is None


def test_unsupported_op_names_the_node(tmp_path) -> None:
    model = _foreign_graph(tmp_path / "custom.onnx", op="FancyWarp", domain="com.example")
    with pytest.raises(TalkrtError, match=r"cannot parse custom\.onnx: .*the_node.*FancyWarp"):
        build_engine(model, tmp_path / "custom.engine", BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("n:1,1,1"),)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx"]


@pytest.mark.parametrize(
    "options, message",
    [
        (BuildOptions(backend="tensorrt-rtx", compute_capabilities=("9.0",)), "cannot target compute capability 9.0"),
        (BuildOptions(backend="tensorrt-rtx", precision="int4"), "unknown precision 'int4'"),
        (BuildOptions(backend="tensorrt-rtx", hardware_compat="ampere_plus"), "are TensorRT options"),
        (BuildOptions(backend="vulkan"), "unknown backend 'vulkan'"),
        (BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("batch:4,2,1"),)), "need 1 <= min <= opt <= max"),
        (BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("frames:1,2,4"),)), "no input or dynamic dim of that name"),
    ],
    ids=["hopper-on-rtx", "precision", "rtx-compat", "backend", "profile-order", "profile-name"],
)
def test_bad_requests_fail_before_writing(wav2lip_onnx, tmp_path, options, message) -> None:
    with pytest.raises(TalkrtError, match=message):
        build_engine(wav2lip_onnx, tmp_path / "x.engine", options)
    assert list(tmp_path.iterdir()) == []


def test_not_an_onnx_file(tmp_path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not a protobuf")
    with pytest.raises(TalkrtError, match="is not an ONNX model"):
        build_engine(bogus, tmp_path / "model.engine", BuildOptions(backend="tensorrt-rtx"))


def test_compute_capability_spellings() -> None:
    assert compute_capability_list(["8.6,sm89", "SM120", "12.1"]) == ("8.6", "8.9", "12.0", "12.1")
    with pytest.raises(TalkrtError, match="bad compute capability"):
        compute_capability_list(["ampere"])


@pytest.mark.parametrize("text", ["batch", "batch:1,2", "batch:a,b,c", ":1,2,3"])
def test_bad_profile_syntax(text) -> None:
    with pytest.raises(TalkrtError, match="bad --profile"):
        parse_profile_override(text)


def test_sidecar_problems_are_explained(tmp_path) -> None:
    engine = tmp_path / "lonely.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(TalkrtError, match="has no sidecar .* talkrt build MODEL.onnx --out"):
        read_sidecar(engine)
    (tmp_path / "lonely.engine.json").write_text("{broken")
    with pytest.raises(TalkrtError, match="not valid JSON"):
        read_sidecar(engine)


@pytest.mark.gpu
def test_tensorrt_builds_for_the_gpu_present(wav2lip_onnx, tmp_path) -> None:
    pytest.importorskip("tensorrt")
    result = build_engine(wav2lip_onnx, tmp_path / "trt.engine", BuildOptions(backend="tensorrt"))
    import torch

    assert result.metadata["target"]["gpu"] == torch.cuda.get_device_name()
    assert json.loads((tmp_path / "trt.engine.json").read_text())["backend"]["name"] == "tensorrt"


def test_fp16_and_auto_builds_record_the_plan(wav2lip_onnx, tmp_path) -> None:
    """Strongly typed TensorRT-RTX builds from the mixed graph; the sidecar says what stays FP32 and whether the gates hold."""
    fp32 = build_engine(wav2lip_onnx, tmp_path / "fp32.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",)))
    fp16 = build_engine(wav2lip_onnx, tmp_path / "fp16.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",), precision="fp16"))
    plan = fp16.metadata["precision"]
    assert plan["mode"] == "fp16" and plan["passed"] and plan["applied_as"] == "strongly typed network from the mixed FP16 graph"
    assert {g["metric"] for g in plan["gates_after"]} == {"psnr"}
    assert fp16.engine.stat().st_size < 0.6 * fp32.engine.stat().st_size  # FP16 weights
    assert fp16.metadata["cache_key"] != fp32.metadata["cache_key"]
    assert not list(tmp_path.glob(".*mixed.onnx"))  # the temporary mixed graph is gone


def test_auto_build_of_an_encoder(tmp_path) -> None:
    from talkrt.export import get_spec
    from talkrt.export.onnx import export_onnx

    spec = get_spec("wav2vec2", preset="tiny-wav2vec2")
    export_onnx(spec, spec.build_module(None), tmp_path / "w2v.onnx")
    result = build_engine(tmp_path / "w2v.onnx", tmp_path / "w2v.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.9",), precision="auto"))
    plan = result.metadata["precision"]
    assert plan["mode"] == "auto" and plan["passed"]
    assert any("LayerNormalization" in reason for reason in plan["fp32_nodes"].values())
