"""The command line, through Typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_checkpoints import fake_state_dict, official_wav2lip_container
from typer.testing import CliRunner

from talkrt.cli import app

runner = CliRunner()


def talkrt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "talkrt", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_export_from_official_checkpoint_then_build_and_inspect(tmp_path) -> None:
    checkpoint = tmp_path / "wav2lip_gan.pth"
    torch.save(official_wav2lip_container(fake_state_dict("wav2lip", seed=5)), checkpoint)
    onnx_path = tmp_path / "out[v1]" / "wav2lip.onnx"  # brackets are rich markup: printed as they are
    result = runner.invoke(app, ["export", "wav2lip", "--checkpoint", str(checkpoint), "--out", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert "parity" in result.output and "wrote" in result.output and "out[v1]" in result.output
    assert onnx_path.is_file()

    engine = tmp_path / "out[v1]" / "wav2lip.engine"
    result = runner.invoke(app, ["build", str(onnx_path), "--out", str(engine), "--backend", "tensorrt-rtx", "--profile", "batch:1,4,16", "--cc", "8.6"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(Path(f"{engine}.json").read_text())
    assert sidecar["profiles"][0]["face_sequences"]["max"] == [16, 6, 96, 96]
    assert sidecar["target"]["compute_capabilities"] == ["8.6"]

    result = runner.invoke(app, ["inspect", str(onnx_path), "--json"])
    info = json.loads(result.output)
    assert info["op_counts"]["Conv"] == 45 and info["metadata"]["talkrt.family"] == "wav2lip"
    assert [i["dims"] for i in info["inputs"]] == [["batch", 1, 80, 16], ["batch", 6, 96, 96]]
    result = runner.invoke(app, ["inspect", str(engine), "--json"])
    assert json.loads(result.output)["sidecar"]["cache_key"] == sidecar["cache_key"]


def test_user_mistakes_are_one_line_and_nonzero(tmp_path) -> None:
    out = tmp_path / "x.onnx"
    cases = [
        (["export", "wav2lip", "--out", str(out)], "give exactly one of --checkpoint PATH or --random-init"),
        (["export", "wav2lip", "--random-init", "--checkpoint", "w.pth", "--out", str(out)], "give exactly one of"),
        (["export", "wav2lip", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out)], "checkpoint not found"),
        (["build", str(tmp_path / "missing.onnx")], "ONNX file not found"),
        (["build", str(tmp_path / "m.onnx"), "--profile", "batch"], "bad --profile"),
        (["inspect", str(tmp_path / "nothing")], "file not found"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:"), result.output
    assert not out.exists()


def test_bad_checkpoint_loses_nothing(tmp_path) -> None:
    """A failed export leaves an existing artifact untouched and writes no temporary files."""
    bad = tmp_path / "truncated.pth"
    torch.save({"state_dict": fake_state_dict("wav2lip")}, tmp_path / "good.pth")
    bad.write_bytes((tmp_path / "good.pth").read_bytes()[:4096])
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    result = runner.invoke(app, ["export", "wav2lip", "--checkpoint", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "truncated or corrupt" in result.output
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pth", "model.onnx", "truncated.pth"]


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = runner.invoke(app, ["--debug", "build", str(tmp_path / "missing.onnx")])
    assert result.exit_code != 0
    assert "ONNX file not found" in str(result.exception)


def test_doctor_reports_backends() -> None:
    result = talkrt("doctor")
    assert result.returncode == 0, result.stderr
    for component in ("torch", "CUDA GPU", "onnxruntime", "tensorrt_rtx", "tensorrt", "PyAV"):
        assert component in result.stdout
    assert "CPUExecutionProvider" in result.stdout
    if "✗ tensorrt " in result.stdout:  # the missing datacenter TensorRT comes with its install command
        assert 'pip install "talkrt[gpu]"' in result.stdout


def test_subprocess_random_init_export_and_build(tmp_path) -> None:
    """The quick start's main job, as a user runs it."""
    export = talkrt("export", "wav2lip", "--random-init", "--out", "models/wav2lip.onnx", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    build = talkrt("build", "models/wav2lip.onnx", "--out", "models/wav2lip.engine", cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    assert "tensorrt-rtx" in build.stdout and "sm86" in build.stdout
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["wav2lip.engine", "wav2lip.engine.json", "wav2lip.onnx"]
    inspect = talkrt("inspect", "models/wav2lip.onnx", cwd=tmp_path)
    assert inspect.returncode == 0 and "BGR in [0, 1]" in inspect.stdout


def test_subprocess_error_exit_code(tmp_path) -> None:
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    result = talkrt("export", "wav2lip", "--checkpoint", "notes.pth", "--out", "w.onnx", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w.onnx").exists()


def test_import_is_light() -> None:
    """`import talkrt` pulls in neither torch nor any GPU backend."""
    code = "import sys, talkrt, talkrt.errors, talkrt.optional; heavy = {'torch', 'onnx', 'tensorrt', 'tensorrt_rtx', 'onnxruntime'} & set(sys.modules); print(sorted(heavy))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["--help"], ["export", "--help"], ["build", "--help"]])
def test_help(command) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 0 and "Usage" in result.output


def test_export_hubert_from_checkpoint_directory(tmp_path) -> None:
    """A transformers directory with legacy weight-norm names and do_normalize false in its preprocessor config."""
    from transformers import HubertConfig

    from talkrt.models.hubert.model import ENCODER_PRESETS, build_random

    preset = ENCODER_PRESETS["tiny-hubert"]
    state = build_random(preset, seed=1).state_dict()
    state = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    checkpoint = tmp_path / "my-hubert"
    checkpoint.mkdir()
    torch.save(state, checkpoint / "pytorch_model.bin")
    (checkpoint / "config.json").write_text(json.dumps(HubertConfig(**preset.config).to_dict()))
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    out = tmp_path / "hubert.onnx"
    result = runner.invoke(app, ["export", "hubert", "--checkpoint", str(checkpoint), "--layer", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).output)
    assert info["metadata"]["talkrt.normalize"] == "none" and info["metadata"]["talkrt.layer"] == "1"
    assert info["outputs"][0]["dims"] == ["batch", "frames", 64]

    result = runner.invoke(app, ["export", "hubert", "--checkpoint", str(checkpoint), "--layer", "5", "--out", str(out)])
    assert result.exit_code == 2 and "--layer 5 does not exist" in result.output


def test_demo_end_to_end(tmp_path) -> None:
    """`talkrt demo`: the MP4 decodes, its frames and duration match the audio, the audio is there, the profile is valid."""
    import jsonschema

    from talkrt.runtime.media import probe
    from talkrt.runtime.profiler import JSON_SCHEMA

    result = talkrt("demo", "--out-dir", "demo", "--seconds", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "demo"
    info = probe(out / "out.mp4")
    assert info["num_frames"] == 50 and info["video_codec"] == "h264"
    assert info["audio_codec"] == "aac" and info["audio_rate"] == 16000
    assert abs(info["audio_duration"] - 2.0) < 1e-3 and abs(info["video_duration"] - 2.0) < 0.04
    report = json.loads((out / "profile.json").read_text())
    jsonschema.validate(report, JSON_SCHEMA)
    assert report["frames"] == 50
    assert (out / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| render |" in (out / "profile.md").read_text()
    assert (out / "models" / "wav2lip.engine.json").is_file()


def test_avatar_prepare_then_run_and_profile(tmp_path, wav2lip_onnx) -> None:
    from talkrt.runtime.media import VideoWriter, probe, write_wav
    from talkrt.runtime.synthetic import synthetic_frames, synthetic_speech

    frames, boxes = synthetic_frames(num_frames=6)
    with VideoWriter(tmp_path / "face.mp4", fps=25, expect_exact=False) as writer:
        writer.write_frames(frames)
    (tmp_path / "boxes.json").write_text(json.dumps(np.asarray(boxes).tolist()))
    write_wav(tmp_path / "speech.wav", synthetic_speech(1.0, seed=9), 16000)

    result = runner.invoke(app, ["avatar", "prepare", str(tmp_path / "face.mp4"), "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "face.npz")])
    assert result.exit_code == 0, result.output
    common = ["--audio", str(tmp_path / "speech.wav"), "--avatar", str(tmp_path / "face.npz"), "--backend", "ort", "--model", str(wav2lip_onnx)]
    result = runner.invoke(app, ["run", *common, "--fps", "30", "--out", str(tmp_path / "out.mp4")])
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "out.mp4")["num_frames"] == 30
    result = runner.invoke(app, ["profile", *common, "--stream-chunk-ms", "40", "--report", str(tmp_path / "rep"), "--out", str(tmp_path / "streamed.mp4")])
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "streamed.mp4")["num_frames"] == 25
    assert json.loads((tmp_path / "rep.json").read_text())["frames"] == 25
    assert (tmp_path / "rep.png").is_file() and (tmp_path / "rep.md").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text", "hello"], "--text needs a voice: --tts DIR"),
        (["--text", "hello", "--tts", ".", "--stream-chunk-ms", "0"], "--stream-chunk-ms 0.0: give a chunk length above 0"),
        (["--audio", "speech.wav", "--stream-context-ms", "1000"], "--stream-context-ms sets the history of streamed features: add --stream-chunk-ms N"),
        (["--audio", "speech.wav", "--backend", "ort"], "the ort backend needs --model FILE or --engines DIR"),
        (["--audio", "speech.wav", "--renderer", "nope"], "unknown renderer 'nope'"),
        (["--audio", "speech.wav", "--renderer", "dinet", "--backend", "torch"], "the avatar was prepared for wav2lip (96x96 crops), not dinet"),
        (["--audio", "speech.wav", "--pca", "speech.wav"], "--pca is for --renderer dhlive"),
        (["--audio", "speech.wav", "--backend", "torch", "--engines", "."], "--engines is for --backend trt or ort"),
        (["--audio", "speech.wav", "--backend", "ort", "--engines", "."], "wav2lip.onnx not found"),
    ],
)
def test_run_mistakes(tmp_path, extra, message) -> None:
    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.media import write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    write_wav(tmp_path / "speech.wav", synthetic_speech(0.5), 16000)
    synthetic_avatar(num_frames=2).save(tmp_path / "a.npz")
    result = talkrt("run", "--avatar", "a.npz", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_vits_export_tts_build_and_run_with_text(tmp_path, wav2lip_onnx) -> None:
    """`talkrt export vits` -> `talkrt tts` -> `talkrt build DIR` -> `talkrt run --text`."""
    import wave

    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.media import probe

    voice = tmp_path / "voice"
    result = runner.invoke(app, ["export", "vits", "--random-init", "--preset", "tiny", "--out-dir", str(voice)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((voice / "manifest.json").read_text())
    assert manifest["files"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "full": "full.onnx"}

    result = runner.invoke(app, ["tts", "hello there, how are you today?", "--onnx", str(voice), "--out", str(tmp_path / "speech.wav")])
    assert result.exit_code == 0, result.output
    with wave.open(str(tmp_path / "speech.wav")) as handle:
        assert handle.getframerate() == manifest["sample_rate"] and handle.getnframes() > 0
        seconds = handle.getnframes() / handle.getframerate()

    result = runner.invoke(app, ["build", str(voice), "--cc", "8.6"])
    assert result.exit_code == 0, result.output
    assert json.loads((voice / "manifest.json").read_text())["engines"] == {"encoder": "encoder.engine", "decoder": "decoder.engine"}

    synthetic_avatar(num_frames=3).save(tmp_path / "a.npz")
    args = ["run", "--avatar", str(tmp_path / "a.npz"), "--text", "hello there, how are you today?", "--tts", str(voice), "--backend", "ort", "--model", str(wav2lip_onnx), "--out", str(tmp_path / "talk.mp4")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = probe(tmp_path / "talk.mp4")
    assert info["num_frames"] == int(np.ceil(seconds * 25 - 1e-9)) and abs(info["audio_duration"] - seconds) < 1e-3

    result = runner.invoke(app, args[:5] + ["--backend", "ort", "--model", str(wav2lip_onnx)])
    assert result.exit_code == 2 and "--text needs a voice" in result.output


def test_profile_text_streamed(tmp_path, tiny_voice, wav2lip_onnx) -> None:
    """`talkrt profile --text ... --tts DIR --stream-chunk-ms 40`: the text run's numbers in the table,
    the JSON (valid against the schema) and the Markdown."""
    import jsonschema

    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.media import probe
    from talkrt.runtime.profiler import JSON_SCHEMA

    synthetic_avatar(num_frames=3).save(tmp_path / "a.npz")
    result = runner.invoke(app, ["profile", "--avatar", str(tmp_path / "a.npz"), "--text", "hello there, how are you today?", "--tts", str(tiny_voice),
                                 "--backend", "ort", "--model", str(wav2lip_onnx), "--device", "cpu", "--stream-chunk-ms", "40",
                                 "--report", str(tmp_path / "rep"), "--out", str(tmp_path / "talk.mp4")])
    assert result.exit_code == 0, result.output
    assert "text to first audio (TTFA)" in " ".join(result.output.split())
    report = json.loads((tmp_path / "rep.json").read_text())
    jsonschema.validate(report, JSON_SCHEMA)
    assert report["stages"]["tts"]["calls"] > 1 and report["frames"] == probe(tmp_path / "talk.mp4")["num_frames"] > 0
    assert 0 < report["text_to_first_audio_ms"] <= report["text_to_first_frame_ms"] and report["steady_real_time_factor"] > 0
    assert "text to first frame (TTFV)" in (tmp_path / "rep.md").read_text()


@pytest.mark.parametrize(
    "command, inputs",
    [
        (["dinet-mapper"], ["emissions"]),
        (["dhlive-audio"], ["fbank", "h0", "c0"]),
        (["dhlive-render", "--graph", "reference"], ["reference"]),
    ],
)
def test_export_dinet_and_dhlive_graphs(tmp_path, command, inputs) -> None:
    out = tmp_path / "graph.onnx"
    result = runner.invoke(app, ["export", *command, "--random-init", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).output)
    assert [i["name"] for i in info["inputs"]] == inputs
    assert info["metadata"]["talkrt.family"] == command[0]


def test_dhlive_render_graph_name_is_checked(tmp_path) -> None:
    result = runner.invoke(app, ["export", "dhlive-render", "--graph", "middle", "--random-init", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "choose generator or reference" in result.output
