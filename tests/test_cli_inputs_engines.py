"""Bad engine and text inputs through the command line: one line, exit 2, the command that fixes it.

Engines are real TensorRT-RTX builds (ahead of time, no GPU needed) of the
weightless Wav2Lip mel graph, which `talkrt export mel` writes in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.errors import TalkrtError

runner = CliRunner()


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit 2, one `error:` line holding every fragment, no internal error and no traceback."""
    output = result.output.strip()
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "internal error" not in output and "Traceback" not in output, output
    # A long line may be wrapped by the terminal width; the message itself is one line.
    message = " ".join(output[output.index("error:"):].split())
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.fixture(scope="module")
def mel_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mel") / "mel.onnx"
    result = runner.invoke(app, ["export", "mel", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def mel_engine(mel_onnx) -> Path:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, build_engine
    from talkrt.engines.profiles import parse_profile_override

    overrides = tuple(parse_profile_override(p) for p in ("batch:1,1,2", "samples:3200,16000,32000"))
    options = BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",), profile_overrides=overrides)
    return build_engine(mel_onnx, mel_onnx.with_suffix(".engine"), options).engine


def _copy(engine: Path, directory: Path, name: str, data: bytes | None = None) -> Path:
    """A copy of ``engine`` and its sidecar as ``name``; ``data`` replaces the engine's bytes."""
    copy = directory / name
    if data is None:
        shutil.copyfile(engine, copy)
    else:
        copy.write_bytes(data)
    shutil.copyfile(f"{engine}.json", f"{copy}.json")
    return copy


# --------------------------------------------------------------------------- export mel


def test_export_mel_writes_a_graph_onnxruntime_runs(mel_onnx) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(mel_onnx), providers=["CPUExecutionProvider"])
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 16000)).astype(np.float32)
    (mel,) = session.run(None, {"waveform": waveform})
    assert mel.shape == (2, 80, 16000 // 200 + 1) and np.abs(mel).max() <= 4.0
    assert "--checkpoint" not in runner.invoke(app, ["export", "mel", "--help"]).output


# --------------------------------------------------------------------------- damaged or replaced engines


def test_inspect_refuses_an_engine_that_does_not_match_its_sidecar(mel_engine, tmp_path) -> None:
    assert runner.invoke(app, ["inspect", str(mel_engine)]).exit_code == 0
    size = mel_engine.stat().st_size
    random = np.random.default_rng(0).bytes
    cases = {
        "other-size.engine": (random(200_000), f"it has 200,000 bytes, the sidecar says {size:,}"),
        "same-size.engine": (random(size), "its sha256 differs from the sidecar's"),
        "truncated.engine": (mel_engine.read_bytes()[:-1], f"it has {size - 1:,} bytes"),
    }
    for name, (data, why) in cases.items():
        damaged = _copy(mel_engine, tmp_path, name, data)
        for args in (["inspect", str(damaged)], ["inspect", str(damaged), "--json"]):
            assert_one_line_error(runner.invoke(app, args), f"{damaged} does not match its sidecar", why, "damaged or replaced", f"talkrt build {mel_engine.with_suffix('.onnx')} --out {damaged}")


def test_trt_runner_checks_the_engine_before_deserialising(mel_engine, tmp_path) -> None:
    from talkrt.engines.runners import make_runner

    damaged = _copy(mel_engine, tmp_path, "flipped.engine", (np.frombuffer(mel_engine.read_bytes(), np.uint8) ^ 0xFF).tobytes())
    # Refused before any GPU is looked for, so the same on machines with and without one.
    with pytest.raises(TalkrtError, match="does not match its sidecar .*sha256"):
        make_runner("trt", damaged, device="cuda")


def test_check_refuses_a_damaged_engine(mel_onnx, mel_engine, tmp_path) -> None:
    damaged = _copy(mel_engine, tmp_path, "garbage.engine", np.random.default_rng(1).bytes(200_000))
    assert_one_line_error(runner.invoke(app, ["check", str(mel_onnx), "--engine", str(damaged)]), "does not match its sidecar", "talkrt build")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_check_without_a_gpu_names_options_check_has(mel_onnx, mel_engine) -> None:
    message = assert_one_line_error(runner.invoke(app, ["check", str(mel_onnx), "--engine", str(mel_engine)]), "CUDA GPU", "--candidate")
    assert "--backend" not in message  # `check` has no --backend


# --------------------------------------------------------------------------- sidecars without a required key


@pytest.fixture()
def speech_and_avatar(tmp_path) -> tuple[Path, Path]:
    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.media import write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    write_wav(tmp_path / "speech.wav", synthetic_speech(0.5), 16000)
    synthetic_avatar(num_frames=2).save(tmp_path / "a.npz")
    return tmp_path / "speech.wav", tmp_path / "a.npz"


@pytest.mark.parametrize("key", ["backend", "target", "engine_sha256"])
def test_sidecar_without_a_required_key_is_named(mel_engine, tmp_path, speech_and_avatar, key) -> None:
    engine = _copy(mel_engine, tmp_path, "edited.engine")
    sidecar = json.loads(Path(f"{engine}.json").read_text())
    del sidecar[key]
    Path(f"{engine}.json").write_text(json.dumps(sidecar))
    speech, avatar = speech_and_avatar
    fragments = (f"edited.engine.json lacks '{key}'", "rebuild the engine with: talkrt build")
    run = ["run", "--avatar", str(avatar), "--audio", str(speech), "--backend", "trt", "--model", str(engine), "--out", str(tmp_path / "o.mp4")]
    assert_one_line_error(runner.invoke(app, run), *fragments)
    assert_one_line_error(runner.invoke(app, ["inspect", str(engine)]), *fragments)


def test_sidecar_backend_without_a_name(mel_engine, tmp_path) -> None:
    engine = _copy(mel_engine, tmp_path, "nameless.engine")
    sidecar = json.loads(Path(f"{engine}.json").read_text())
    del sidecar["backend"]["name"]
    Path(f"{engine}.json").write_text(json.dumps(sidecar))
    assert_one_line_error(runner.invoke(app, ["inspect", str(engine)]), "lacks 'backend.name'")


# --------------------------------------------------------------------------- text and hints


def test_text_with_unknown_symbols_is_refused_unless_skipped(tmp_path, wav2lip_onnx, speech_and_avatar) -> None:
    voice = tmp_path / "voice"
    result = runner.invoke(app, ["export", "vits", "--random-init", "--preset", "tiny", "--no-validate", "--out-dir", str(voice)])
    assert result.exit_code == 0, result.output
    text = "  héllo; there  "  # a random-weight voice speaks only DEMO_CHARACTERS
    wav = tmp_path / "s.wav"
    assert_one_line_error(runner.invoke(app, ["tts", text, "--onnx", str(voice), "--out", str(wav)]), "'é', ';'", "--skip-unknown")
    assert not wav.exists()
    result = runner.invoke(app, ["tts", text, "--onnx", str(voice), "--out", str(wav), "--skip-unknown"])
    assert result.exit_code == 0 and wav.is_file(), result.output

    _, avatar = speech_and_avatar
    run = ["run", "--avatar", str(avatar), "--text", text, "--tts", str(voice), "--backend", "ort", "--model", str(wav2lip_onnx), "--out", str(tmp_path / "t.mp4")]
    assert_one_line_error(runner.invoke(app, run), "'é', ';'", "--skip-unknown")
    assert "--skip-unknown" in runner.invoke(app, ["run", "--help"]).output


def test_missing_voice_names_the_export_command(tmp_path) -> None:
    message = assert_one_line_error(runner.invoke(app, ["tts", "hello", "--onnx", str(tmp_path / "NOPE"), "--out", str(tmp_path / "s.wav")]), "talkrt export vits|gpt-sovits --out-dir")
    assert "export_vits" not in message
