"""`talkrt triton`'s repository: every config.pbtxt parses with Triton's own ModelConfig protobuf
and describes the graph it serves; bad inputs are refused in one line and nothing is overwritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from talkrt.errors import TalkrtError
from talkrt.export.spec import StoredSpec
from talkrt.triton.repository import write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install talkrt[triton])")


def parse(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def dtype(name: str) -> str:
    return model_config_pb2.DataType.Name(name) if isinstance(name, int) else name


def assert_matches_graph(config, spec: StoredSpec, batched: bool) -> None:
    for declared, tensors in ((config.input, spec.inputs), (config.output, spec.outputs)):
        assert [t.name for t in declared] == [t.name for t in tensors]
        for entry, tensor in zip(declared, tensors):
            assert dtype(entry.data_type) == {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}[tensor.dtype]
            shape = tensor.shape[1:] if batched else tensor.shape
            assert list(entry.dims) == [-1 if isinstance(size, str) else size for size in shape]


def test_onnx_repository_configs_parse_and_match_the_graphs(models_dir, triton_avatar, tmp_path) -> None:
    summary = write_repository(tmp_path / "repo", models_dir, avatar=triton_avatar, gpu=False, instances=2, max_batch=16, max_queue_delay_us=250)
    repo = tmp_path / "repo"
    assert "wav2lip" in summary and "talkrt_session" in summary and "talkrt_render" in summary
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "talkrt_render", "talkrt_session", "wav2lip"]
    config = parse(repo / "wav2lip" / "config.pbtxt")
    spec = StoredSpec.from_onnx(models_dir / "wav2lip.onnx")
    assert config.name == "wav2lip" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16  # the graph's batch dim goes to 128
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [(2, "KIND_CPU")]
    assert config.version_policy.latest.num_versions == 1
    assert_matches_graph(config, spec, batched=True)
    assert (repo / "wav2lip" / "1" / "model.onnx").read_bytes() == (models_dir / "wav2lip.onnx").read_bytes()

    session = parse(repo / "talkrt_session" / "config.pbtxt")
    assert session.backend == "python" and session.max_batch_size == 4
    controls = {c.name: model_config_pb2.ModelSequenceBatching.Control.Kind.Name(c.control[0].kind) for c in session.sequence_batching.control_input}
    assert controls == {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END"}
    assert session.sequence_batching.oldest.max_candidate_sequences == 4
    assert [t.name for t in session.input] == ["AUDIO", "SAMPLE_RATE"]
    assert [t.name for t in session.output] == ["FRAMES", "PTS", "FIRST", "FRAME_AUDIO"]
    params = {key: value.string_value for key, value in session.parameters.items()}
    assert json.loads(params["models"]) == {"generator": "wav2lip/1/model.onnx"}
    assert (repo / params["avatar"]).is_file() and (repo / "talkrt_session" / "1" / "model.py").is_file()
    assert "Instances per GPU" in (repo / "README.md").read_text()

    render = parse(repo / "talkrt_render" / "config.pbtxt")
    assert render.backend == "python" and render.max_batch_size == 0 and not render.HasField("sequence_batching")
    assert [t.name for t in render.output] == ["FRAMES", "PTS", "FIRST", "FRAME_AUDIO"]
    params = {key: value.string_value for key, value in render.parameters.items()}
    assert params["mode"] == "render" and json.loads(params["graphs"]) == {"generator": "wav2lip"} and params["batch_size"] == "8"
    assert json.loads((repo / "talkrt_render" / "1" / "wav2lip.spec.json").read_text()) == dict(spec.data)


def fake_engine(models_dir: Path, tmp_path: Path) -> Path:
    """A folder with the graph and an 'engine' beside it: bytes plus the sidecar `talkrt build` writes
    (two profiles, the first axis up to 32 and 64)."""
    folder = tmp_path / "engines"
    folder.mkdir()
    (folder / "wav2lip.onnx").hardlink_to(models_dir / "wav2lip.onnx")
    engine = folder / "wav2lip.engine"
    engine.write_bytes(b"not really an engine")
    profile = lambda top: {name: {"min": [1, *rest], "opt": [8, *rest], "max": [top, *rest]} for name, rest in (("audio_sequences", [1, 80, 16]), ("face_sequences", [6, 96, 96]))}
    sidecar = {"backend": {"name": "tensorrt", "version": "10.0"}, "target": {"gpu": "test"}, "engine_bytes": engine.stat().st_size,
               "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(), "profiles": [profile(32), profile(64)]}
    Path(f"{engine}.json").write_text(json.dumps(sidecar))
    return folder


def test_engine_repository_is_tensorrt_plan_with_the_profiles_batch(models_dir, tmp_path) -> None:
    folder = fake_engine(models_dir, tmp_path)
    write_repository(tmp_path / "repo", folder, engines=True, max_batch=48, instances=3)
    config = parse(tmp_path / "repo" / "wav2lip" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 32  # the smaller profile's maximum
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind), list(g.profile)) for g in config.instance_group] == [(3, "KIND_GPU", ["0"])]
    assert_matches_graph(config, StoredSpec.from_onnx(models_dir / "wav2lip.onnx"), batched=True)
    version = tmp_path / "repo" / "wav2lip" / "1"
    assert (version / "model.plan").read_bytes() == b"not really an engine" and (version / "model.plan.json").is_file()


def test_no_batching_when_max_batch_is_zero(models_dir, tmp_path) -> None:
    write_repository(tmp_path / "repo", models_dir, max_batch=0)
    config = parse(tmp_path / "repo" / "wav2lip" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert_matches_graph(config, StoredSpec.from_onnx(models_dir / "wav2lip.onnx"), batched=False)
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"


def test_bad_inputs_are_refused_in_one_line_and_nothing_is_overwritten(models_dir, triton_avatar, tmp_path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (dict(out_dir=taken, models_dir=models_dir), "not empty"),
        (dict(out_dir=tmp_path / "a", models_dir=tmp_path / "missing"), "not a directory"),
        (dict(out_dir=tmp_path / "b", models_dir=tmp_path / "taken"), "no exported graph"),
        (dict(out_dir=models_dir / "repo", models_dir=models_dir), "inside --from"),
        (dict(out_dir=tmp_path / "c", models_dir=models_dir, engines=True), "no engine beside it"),
        (dict(out_dir=tmp_path / "d", models_dir=models_dir, engines=True, gpu=False), "need a GPU"),
        (dict(out_dir=tmp_path / "e", models_dir=models_dir, instances=0), "--instances 0"),
        (dict(out_dir=tmp_path / "f", models_dir=models_dir, avatar=tmp_path / "nope.npz"), "--avatar"),
        (dict(out_dir=tmp_path / "g", models_dir=models_dir, avatar=triton_avatar, fps="fast"), "--fps"),
        (dict(out_dir=triton_avatar, models_dir=models_dir), "is a file"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TalkrtError, match=message) as caught:
            write_repository(**kwargs)
        assert "\n" not in str(caught.value)
    assert (taken / "keep.txt").read_text() == "mine"
    # a failure part-way (the bad frame rate) leaves neither the repository nor its staging folder
    assert not (tmp_path / "g").exists() and not list(tmp_path.glob(".g.*"))


def test_the_command_writes_the_repository_and_refuses_in_one_line(models_dir, triton_avatar, tmp_path) -> None:
    from talkrt.cli import main

    out = tmp_path / "repository"
    assert main(["triton", str(out), "--from", str(models_dir), "--avatar", str(triton_avatar), "--cpu", "--instances", "2", "--max-batch", "4"]) == 0
    config = parse(out / "wav2lip" / "config.pbtxt")
    assert config.max_batch_size == 4 and [group.count for group in config.instance_group] == [2]
    assert (out / "README.md").is_file() and (out / "talkrt_session" / "config.pbtxt").is_file()
    assert main(["triton", str(out), "--from", str(models_dir)]) == 2  # not empty: refused, kept
    assert parse(out / "wav2lip" / "config.pbtxt").max_batch_size == 4
