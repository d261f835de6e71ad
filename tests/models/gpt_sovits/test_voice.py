"""The GPT-SoVITS voice: a tiny random-weight export plus a reference (synthetic speech and its
"transcript") spoken through `talkrt tts`, `speak`, `speak_stream` and `talkrt run --text`."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.errors import TalkrtError, TalkrtWarning
from talkrt.models.gpt_sovits import voice as gsv
from talkrt.models.gpt_sovits.specs import export_gpt_sovits
from talkrt.models.registry import voice as voice_module
from talkrt.runtime.media import read_audio, write_wav
from talkrt.runtime.synthetic import synthetic_speech

pytestmark = pytest.mark.filterwarnings("ignore:.*expects a 3-10 s reference:talkrt.errors.TalkrtWarning")

runner = CliRunner()
TEXT = "hello world"
RATE = 32000
# speak_stream's default context (12 tokens) against speak, relative to the waveform's peak:
# measured 4e-4 here (3.8e-7 at a peak of 8.9e-4; 4 tokens: 6e-4, 0 tokens: 1.0).
STREAM_RELATIVE_TOLERANCE = 1e-3


def _write_reference(directory, seconds: float = 1.0, rate: int = 22050) -> None:
    # 1 s (not 3-10) keeps the prompt inside the tiny cache; any rate: it is resampled to 16 and 32 kHz
    write_wav(directory / gsv.REFERENCE_WAV, synthetic_speech(seconds, rate, seed=1), rate)
    (directory / gsv.REFERENCE_TXT).write_text("hello there\n")


@pytest.fixture(scope="module")
def voice_dir(tmp_path_factory):
    """`talkrt export gpt-sovits --preset tiny --random-init` with 128 cache slots (room for the
    reference's 39 prompt tokens, both texts and ~70 new tokens), plus the reference."""
    directory = tmp_path_factory.mktemp("gpt-sovits-voice")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_gpt_sovits(directory, preset="tiny", seed=0, cache_len=128, validate=False)
    _write_reference(directory)
    return directory


@pytest.fixture(scope="module")
def loaded(voice_dir):
    return gsv.load_voice(voice_dir, "ort", "cpu")


def test_the_registry_finds_this_voice(voice_dir, loaded) -> None:
    assert voice_module(voice_dir) is gsv
    voice, manifest = loaded
    reference = voice.reference
    # 1 s at 16 kHz + 9600 zeros -> 79 HuBERT frames -> 39 tokens; "hello there." -> 8 phones
    assert reference.prompt.shape == (1, 39) and len(reference.phones) == 8 and reference.bert.shape == (1024, 8)
    assert reference.ge.shape == (1, manifest["gin_channels"], 1) and voice.bert is None


def test_tts_cli_writes_speaks_waveform(voice_dir, loaded, tmp_path) -> None:
    out = tmp_path / "x.wav"
    result = runner.invoke(app, ["tts", TEXT, "--onnx", str(voice_dir), "--out", str(out), "--seed", "3", "--format", "float32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written, rate = read_audio(out)
    expected, speak_rate, seconds = gsv.speak(TEXT, *loaded, seed=3)
    assert rate == speak_rate == RATE and seconds > 0
    assert written.shape == tuple(expected.shape) and len(written) % 1280 == 0 and len(written) > 0
    assert np.abs(written - expected.numpy()).max() < 1e-6


def test_a_seed_gives_one_waveform_and_seeds_differ(loaded) -> None:
    first = gsv.speak(TEXT, *loaded, seed=0)[0]
    assert torch.equal(first, gsv.speak(TEXT, *loaded, seed=0)[0])
    other = gsv.speak(TEXT, *loaded, seed=1)[0]
    assert first.shape != other.shape or not torch.allclose(first, other)


def test_sentences_are_joined_by_a_pause(loaded) -> None:
    voice, manifest = loaded
    assert gsv.sentences("Hello there. How are you?  Fine! 你好。再见") == ["Hello there.", "How are you?", "Fine!", "你好。", "再见"]
    one = gsv.speak("hello world.", voice, manifest, seed=4)[0]
    two = gsv.speak("hello world. hello world.", voice, manifest, seed=4)[0]
    gap = int(0.3 * RATE)
    assert torch.equal(two[: len(one)], one)  # sentence 0 uses the seed itself
    assert len(two) > len(one) + gap and not two[len(one) : len(one) + gap].any()


def test_an_export_of_another_format_is_refused_in_one_line(voice_dir, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(voice_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest.pop("format") == 2
    (old / "manifest.json").write_text(json.dumps(manifest))  # as written before the step wrote only new rows
    result = runner.invoke(app, ["tts", TEXT, "--onnx", str(old), "--out", str(tmp_path / "x.wav")])
    assert result.exit_code == 2 and not (tmp_path / "x.wav").exists()
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "format 1, this one reads 2" in errors[0] and "talkrt export gpt-sovits --out-dir" in errors[0], result.output
    assert "Traceback" not in result.output


def test_missing_reference_files_are_one_line_exit_2(voice_dir, tmp_path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(voice_dir / "manifest.json", bare / "manifest.json")
    result = runner.invoke(app, ["tts", TEXT, "--onnx", str(bare), "--out", str(tmp_path / "x.wav")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "reference.wav or reference.txt" in lines[0] and str(bare / "reference.wav") in lines[0], result.output
    shutil.copy(voice_dir / "reference.wav", bare / "reference.wav")
    with pytest.raises(TalkrtError, match=r"has no reference\.txt: .*\(what is said in it\)"):
        gsv.load_voice(bare, "ort", "cpu")


def test_stream_joins_to_speak_within_the_stated_tolerance(loaded) -> None:
    voice, manifest = loaded
    expected = gsv.speak(TEXT, voice, manifest, seed=2)[0]
    chunks, rate = gsv.speak_stream(TEXT, voice, manifest, seed=2, chunk_ms=40)
    chunks = list(chunks)
    joined = torch.cat(chunks)
    assert rate == RATE and len(chunks) > 2 and len(chunks[0]) == 1280  # the first: one token (40 ms)
    assert joined.shape == expected.shape
    peak = float(expected.abs().max())
    assert float((joined - expected).abs().max()) <= STREAM_RELATIVE_TOLERANCE * peak
    # context covering the whole sentence: the one-shot decode itself
    whole, _ = gsv.speak_stream(TEXT, voice, manifest, seed=2, chunk_ms=40, context_tokens=1000)
    assert torch.equal(torch.cat(list(whole)), expected)
    # two sentences: the pause is a chunk of its own, the lengths agree
    two = gsv.speak("hello world. hello world.", voice, manifest, seed=2)[0]
    streamed = torch.cat(list(gsv.speak_stream("hello world. hello world.", voice, manifest, seed=2)[0]))
    assert streamed.shape == two.shape and float((streamed - two).abs().max()) <= STREAM_RELATIVE_TOLERANCE * float(two.abs().max())


class CountingRunner:
    """A real runner whose runs are counted (to see when streaming yields relative to generation)."""

    def __init__(self, runner) -> None:
        self.runner, self.calls = runner, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        return self.runner.run(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.runner, name)


def test_generate_chunks_yields_generates_tokens_as_they_come(loaded) -> None:
    voice, _ = loaded
    phones, bert = gsv._prepared(TEXT, voice, False)[0]
    whole = gsv._tokens(voice, phones, bert, seed=2)
    for every in (1, 3, 8, 1000):
        chunks = list(gsv._token_chunks(voice, phones, bert, 2, every))
        assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert torch.equal(chunks[-1].tokens.reshape(-1), whole)
        for before, after in zip(chunks, chunks[1:]):  # each yield extends the one before it
            assert torch.equal(after.tokens[0, : before.tokens.shape[1]], before.tokens[0])
        if every < whole.numel():
            assert len(chunks) > 1 and all(c.tokens.shape[1] % every == 0 for c in chunks[:-1])


def test_stream_decodes_while_generating_and_matches_decoding_after(loaded) -> None:
    voice, manifest = loaded
    step = voice.synth.runners["step"]
    counting = CountingRunner(step)
    voice.synth.runners["step"] = counting
    try:
        chunks, _ = gsv.speak_stream(TEXT, voice, manifest, seed=2, chunk_ms=40, check_every=4)
        first = next(chunks)
        at_first = counting.calls
        streamed = [first, *chunks]
        total = counting.calls
    finally:
        voice.synth.runners["step"] = step
    # the first chunk (1 token + 12 of right context) comes at the check after 13 tokens
    assert len(first) == 1280 and 0 < at_first < total and at_first <= 16
    # reading the tokens only at the end (the former behaviour) gives the same chunks
    after = list(gsv.speak_stream(TEXT, voice, manifest, seed=2, chunk_ms=40, check_every=1000)[0])
    assert len(after) == len(streamed) and all(torch.equal(a, b) for a, b in zip(after, streamed))


def test_mistakes_are_one_line(loaded) -> None:
    voice, manifest = loaded
    with pytest.raises(TalkrtError, match="no speaker ids"):
        gsv.speak(TEXT, voice, manifest, speaker=1)
    with pytest.raises(TalkrtError, match="nothing to say"):
        gsv.speak("  ", voice, manifest)
    with pytest.raises(TalkrtError, match="chunk_ms"):
        gsv.speak_stream(TEXT, voice, manifest, chunk_ms=0)
    with pytest.raises(TalkrtError, match="Japanese"):  # checked before anything is spoken
        gsv.speak_stream("hello. こんにちは", voice, manifest)


def test_chinese_without_bert_warns_and_with_bert_uses_it(voice_dir, loaded, tmp_path) -> None:
    voice, manifest = loaded
    with pytest.warns(TalkrtWarning, match="without BERT features"):
        plain = gsv.speak("你好，世界", voice, manifest, seed=0)[0]
    # a random small BERT in the voice directory: its features reach the GPT
    from talkrt.models.gpt_sovits.bert import random_bert

    copy = tmp_path / "voice"
    shutil.copytree(voice_dir, copy)
    random_bert(seed=0).save_pretrained(copy / gsv.BERT_FOLDER)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"你好世界，。"]
    (copy / gsv.BERT_FOLDER / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    with_bert, manifest = gsv.load_voice(copy, "ort", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TalkrtWarning)
        phones, features = gsv._phones_and_bert(with_bert, "你好，世界。", False)
        spoken = gsv.speak("你好，世界", with_bert, manifest, seed=0)[0]
    assert features.shape == (1024, len(phones)) and features.abs().sum() > 0
    assert spoken.shape != plain.shape or not torch.equal(spoken, plain)
    # mixed text, run by run: the Chinese runs' features are theirs alone, the English run's are zeros
    mixed_phones, mixed = gsv._phones_and_bert(with_bert, "你好世界，hello world。世界。", False)
    zh_phones, zh = gsv._phones_and_bert(with_bert, "你好世界，", False)  # 9 phones: not padded
    en_phones, _ = gsv._phones_and_bert(with_bert, "hello world。", False)
    assert mixed_phones[: len(zh_phones)] == zh_phones and mixed_phones[len(zh_phones) : len(zh_phones) + len(en_phones)] == en_phones
    assert mixed.shape == (1024, len(mixed_phones)) and torch.allclose(mixed[:, : len(zh_phones)], zh, atol=1e-5)
    assert not mixed[:, len(zh_phones) : len(zh_phones) + len(en_phones)].any() and mixed[:, -3:].abs().sum() > 0


def test_torch_backend_speaks_as_onnx_runtime(voice_dir, loaded) -> None:
    expected = gsv.speak(TEXT, *loaded, seed=5)[0]
    voice, manifest = gsv.load_voice(voice_dir, "torch", "cpu")
    assert torch.equal(voice.reference.prompt, loaded[0].reference.prompt)
    spoken = gsv.speak(TEXT, voice, manifest, seed=5)[0]
    assert spoken.shape == expected.shape and float((spoken - expected).abs().max()) < 1e-5


def test_run_with_text_and_this_voice(voice_dir, wav2lip_onnx, tmp_path) -> None:
    """`talkrt run --text ... --tts DIR --stream-chunk-ms 40`: the MP4 carries the voice's speech."""
    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.media import probe

    synthetic_avatar(num_frames=3).save(tmp_path / "a.npz")
    args = ["run", "--avatar", str(tmp_path / "a.npz"), "--text", TEXT, "--tts", str(voice_dir), "--backend", "ort", "--device", "cpu",
            "--model", str(wav2lip_onnx), "--out", str(tmp_path / "talk.mp4"), "--stream-chunk-ms", "40"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = probe(tmp_path / "talk.mp4")
    seconds = len(gsv.speak(TEXT, *gsv.load_voice(voice_dir, "ort", "cpu"), seed=0)[0]) / RATE
    assert abs(info["audio_duration"] - seconds) < 1e-3 and info["num_frames"] == int(np.ceil(seconds * 25 - 1e-9))
