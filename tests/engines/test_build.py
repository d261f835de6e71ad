"""Engine builds with the real TensorRT-RTX builder (CPU-only ahead of time) and their sidecars."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from talkrt.engines.backends import DEFAULT_RTX_COMPUTE_CAPABILITIES, default_rtx_compute_capabilities
from talkrt.engines.build import BuildOptions, build_engine, compute_capability_list, read_sidecar
from talkrt.engines.cache import engine_key
from talkrt.engines.devices import Gpu, visible_gpu
from talkrt.engines.profiles import parse_profile_override
from talkrt.engines.sanitize import fold_constants, key_inputs, sanitize_for_build
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

    # The default set spelled out: without --cc the target depends on the GPU present (tested below).
    result = build_engine(wav2lip_onnx, out, BuildOptions(backend="tensorrt-rtx", compute_capabilities=DEFAULT_RTX_COMPUTE_CAPABILITIES), Recorder())
    return result, phases


@pytest.mark.parametrize(
    "gpu, expected",
    [(None, DEFAULT_RTX_COMPUTE_CAPABILITIES), (Gpu("NVIDIA GeForce RTX 4090", "8.9"), ("8.9",)), (Gpu("NVIDIA RTX PRO 6000", "12.0"), ("12.0",))],
    ids=["no-gpu", "ada", "blackwell-rtx"],
)
def test_default_rtx_target(gpu, expected) -> None:
    assert default_rtx_compute_capabilities(gpu) == expected


@pytest.mark.parametrize("gpu", [Gpu("NVIDIA H100 80GB HBM3", "9.0"), Gpu("NVIDIA B200", "10.0")], ids=["hopper", "blackwell-dc"])
def test_rtx_refuses_at_once_on_gpus_it_cannot_run_on(gpu) -> None:
    with pytest.raises(TalkrtError, match=rf"TensorRT-RTX has no kernels for {gpu.name} .*--backend tensorrt.*--backend ort or torch"):
        default_rtx_compute_capabilities(gpu)


def test_default_build_target_follows_the_gpu_present(tmp_path) -> None:
    """Holds on any machine: no GPU -> the default set, an RTX GPU -> it alone, Hopper -> refused."""
    gpu = visible_gpu()
    onnx_path = _foreign_graph(tmp_path / "relu.onnx")
    options = BuildOptions(backend="tensorrt-rtx", profile_overrides=(parse_profile_override("x:1,4,9"),))
    if gpu is not None and not gpu.rtx_supported:
        with pytest.raises(TalkrtError, match="TensorRT-RTX has no kernels"):
            build_engine(onnx_path, tmp_path / "relu.engine", options)
        return
    result = build_engine(onnx_path, tmp_path / "relu.engine", options)
    assert tuple(result.metadata["target"]["compute_capabilities"]) == default_rtx_compute_capabilities(gpu)


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
    import polygraphy

    folding = sidecar["sanitize"]
    assert folding["tool"] == f"polygraphy {polygraphy.__version__}" and folding["fallback"] is None
    assert folding["nodes_before"] == len(onnx.load(str(wav2lip_onnx), load_external_data=False).graph.node)
    assert 0 < folding["nodes_after"] <= folding["nodes_before"]
    assert sidecar["build_inputs"]["sanitize"] == key_inputs() and key_inputs()["polygraphy"] == polygraphy.__version__
    assert not list(result.engine.parent.glob(".*folded.onnx*"))  # the folded graph was temporary


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
    with pytest.raises(TalkrtError, match="is not a valid ONNX file"):
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
    assert not list(tmp_path.glob(".*mixed.onnx")) and not list(tmp_path.glob(".*folded.onnx*"))  # the temporary graphs are gone
    folding, counts = fp16.metadata["sanitize"], plan["counts"]
    assert folding["nodes_before"] == counts["nodes"] + counts["casts_added"] >= folding["nodes_after"]  # the mixed graph is what was folded


def test_auto_build_of_an_encoder(tmp_path) -> None:
    from talkrt.models.registry import get_spec
    from talkrt.export.onnx import export_onnx

    spec = get_spec("wav2vec2", preset="tiny-wav2vec2")
    export_onnx(spec, spec.build_module(None), tmp_path / "w2v.onnx")
    result = build_engine(tmp_path / "w2v.onnx", tmp_path / "w2v.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.9",), precision="auto"))
    plan = result.metadata["precision"]
    assert plan["mode"] == "auto" and plan["passed"]
    assert any("LayerNormalization" in reason for reason in plan["fp32_nodes"].values())


# --------------------------------------------------------------------------- constant folding


def _foldable_graph(path, external: bool = False):
    """y = relu(x + exp(c * 0.5)): three nodes compute a constant; the output's dim has its own name."""
    c = numpy_helper.from_array(np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16), "c")
    nodes = [
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32)), name="half"),
        helper.make_node("Mul", ["c", "half"], ["scaled"], name="scale"),
        helper.make_node("Exp", ["scaled"], ["offset"], name="exp"),
        helper.make_node("Add", ["x", "offset"], ["h"], name="add"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "foldable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 16])],
        [c],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["n", 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="test")
    helper.set_model_props(model, {"talkrt.spec": json.dumps({"dims": {"n": [1, 2, 4]}})})
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def _ort(path, feeds):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_folding_keeps_interface_metadata_and_numerics(tmp_path, external) -> None:
    source = _foldable_graph(tmp_path / "foldable.onnx", external)
    folded = sanitize_for_build(source, tmp_path / "scratch" / ".foldable.folded.onnx")
    assert folded.record["nodes_before"] == 5 and folded.record["nodes_after"] == 2 and folded.record["fallback"] is None
    assert folded.temporary == [folded.path]  # the folded constant is small enough to stay inline
    original, result = onnx.load(str(source)), onnx.load(str(folded.path))
    assert [n.op_type for n in result.graph.node] == ["Add", "Relu"]
    assert result.metadata_props == original.metadata_props and result.producer_name == "test"
    assert result.graph.input == original.graph.input and result.graph.output == original.graph.output  # "rows" is not renamed "n"
    assert result.graph.value_info == original.graph.value_info
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)}
    np.testing.assert_allclose(_ort(folded.path, feeds), _ort(source, feeds), rtol=1e-6, atol=1e-6)


def test_folded_graph_is_what_gets_built(tmp_path) -> None:
    source = _foldable_graph(tmp_path / "foldable.onnx", external=True)
    options = BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",), cache=False)
    result = build_engine(source, tmp_path / "foldable.engine", options)
    folding = read_sidecar(result.engine)["sanitize"]
    assert folding["nodes_before"] == 5 and folding["nodes_after"] == 2 < folding["nodes_before"] and folding["fallback"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foldable.engine", "foldable.engine.json", "foldable.onnx", "foldable.onnx.data"]


def test_folding_failure_falls_back_and_says_why(tmp_path, monkeypatch) -> None:
    import talkrt.engines.sanitize as sanitize

    def broken(model):
        raise RuntimeError("no kernel for Exp\nmore detail")

    monkeypatch.setattr(sanitize, "fold_constants", broken)
    options = BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",), cache=False)
    result = build_engine(_foldable_graph(tmp_path / "foldable.onnx"), tmp_path / "foldable.engine", options)
    folding = result.metadata["sanitize"]
    assert folding["nodes_before"] == folding["nodes_after"] == 5
    assert folding["fallback"] == "constant folding failed (RuntimeError: no kernel for Exp); the graph was built as is"
    assert f"[WARNING] {folding['fallback']}" in result.log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foldable.engine", "foldable.engine.json", "foldable.onnx"]


def test_polygraphy_version_is_in_the_key(tmp_path, monkeypatch) -> None:
    source = _foldable_graph(tmp_path / "foldable.onnx")
    options = BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",), cache=False)
    first = build_engine(source, tmp_path / "foldable.engine", options)
    assert build_engine(source, tmp_path / "foldable.engine", options).reused
    import polygraphy

    monkeypatch.setattr(polygraphy, "__version__", "0.0.1")
    again = build_engine(source, tmp_path / "foldable.engine", options)
    assert again.reused is None and again.metadata["cache_key"] != first.metadata["cache_key"]
    assert again.metadata["sanitize"]["tool"] == "polygraphy 0.0.1"


def test_folding_of_a_graph_without_constants_changes_nothing(tmp_path) -> None:
    model = onnx.load(str(_foreign_graph(tmp_path / "foreign.onnx")))
    folded = fold_constants(model)
    assert folded.graph.node == model.graph.node and folded.graph.input == model.graph.input and folded.graph.output == model.graph.output


def test_polygraphy_is_imported_lazily() -> None:
    code = "import sys, talkrt.engines.build, talkrt.precision.check; print('polygraphy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
