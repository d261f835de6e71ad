"""`talkrt tts` with a reference given on the command line (--ref-audio, --ref-text) and --stream,
on the tiny GPT-SoVITS voice of test_voice; a VITS voice refuses a reference in one line."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.models.gpt_sovits import voice as gsv
from talkrt.runtime.media import read_audio, write_wav
from talkrt.runtime.synthetic import synthetic_speech
from test_voice import TEXT, voice_dir  # noqa: F401  (the module's export, shared)

pytestmark = pytest.mark.filterwarnings("ignore:.*expects a 3-10 s reference:talkrt.errors.TalkrtWarning")

runner = CliRunner()


def tts(*args: str):
    return runner.invoke(app, ["tts", TEXT, "--device", "cpu", "--format", "float32", *args])


def test_a_reference_on_the_command_line_replaces_the_voice_directory_s(voice_dir, tmp_path) -> None:  # noqa: F811
    other = tmp_path / "other.wav"
    write_wav(other, synthetic_speech(1.0, 16000, seed=7), 16000)
    own, given, same = tmp_path / "own.wav", tmp_path / "given.wav", tmp_path / "same.wav"
    assert tts("--onnx", str(voice_dir), "--out", str(own)).exit_code == 0
    result = tts("--onnx", str(voice_dir), "--out", str(given), "--ref-audio", str(other), "--ref-text", "good morning")
    assert result.exit_code == 0, result.output
    # the directory's own reference given on the command line speaks exactly as without it
    own_reference = ["--ref-audio", str(voice_dir / gsv.REFERENCE_WAV), "--ref-text", (voice_dir / gsv.REFERENCE_TXT).read_text()]
    assert tts("--onnx", str(voice_dir), "--out", str(same), *own_reference).exit_code == 0
    (a, _), (b, _), (c, _) = read_audio(own), read_audio(given), read_audio(same)
    assert len(a) == len(c) and abs(a - c).max() == 0
    assert len(a) != len(b) or abs(a - b).max() > 0


def test_stream_writes_the_same_speech_and_tells_the_first_chunk(voice_dir, tmp_path) -> None:  # noqa: F811
    whole, streamed = tmp_path / "whole.wav", tmp_path / "streamed.wav"
    assert tts("--onnx", str(voice_dir), "--out", str(whole)).exit_code == 0
    result = tts("--onnx", str(voice_dir), "--out", str(streamed), "--stream")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps long lines (a long tmp path moves the break)
    chunks = re.search(r"streamed in (\d+) chunks, the first after (\d+) ms", said)
    assert chunks and int(chunks.group(1)) > 1
    (a, _), (b, _) = read_audio(whole), read_audio(streamed)
    assert len(a) == len(b) and abs(a - b).max() <= 1e-3 * abs(a).max()  # voice.speak_stream's stated tolerance


@pytest.mark.parametrize("args, line", [
    (["--ref-audio", "REF"], "give --ref-audio FILE and --ref-text TEXT together"),
    (["--ref-text", "hi"], "give --ref-audio FILE and --ref-text TEXT together"),
    (["--ref-audio", "missing.wav", "--ref-text", "hi"], "missing.wav"),
])
def test_reference_mistakes_are_one_line(voice_dir, tmp_path, args, line) -> None:  # noqa: F811
    reference = tmp_path / "ref.wav"
    write_wav(reference, synthetic_speech(1.0, 16000, seed=2), 16000)
    args = [str(reference) if a == "REF" else (str(tmp_path / a) if a == "missing.wav" else a) for a in args]
    out = tmp_path / "x.wav"
    result = tts("--onnx", str(voice_dir), "--out", str(out), *args)
    assert result.exit_code == 2 and line in result.output and not out.exists()


def test_a_vits_voice_refuses_a_reference(tiny_voice, tmp_path) -> None:
    reference = tmp_path / "ref.wav"
    write_wav(reference, synthetic_speech(1.0, 16000, seed=2), 16000)
    result = tts("--onnx", str(tiny_voice), "--out", str(tmp_path / "x.wav"), "--ref-audio", str(reference), "--ref-text", "hi")
    assert result.exit_code == 2 and "VITS voice" in result.output
