"""A GPT-SoVITS voice: an exported directory plus the speaker's reference, and text spoken with it
(the glue `talkrt tts`, `talkrt run --text` and `talkrt serve --tts` share).

The voice directory is what `talkrt export gpt-sovits --out-dir DIR` wrote, plus:

* ``DIR/reference.wav``: 3-10 s of the speaker (any format PyAV reads, any rate);
* ``DIR/reference.txt``: its transcript (Chinese or English);
* optionally ``DIR/chinese-roberta-wwm-ext-large/``: the transformers BERT checkpoint the
  GPT's Chinese features come from.

v2Pro / v2ProPlus exports hold the ``speaker`` graph, the speaker-verification network of the
reference's ``sv_emb`` (``speaker.py``); the torch backend runs it as a PyTorch module instead.

``load_voice`` reads the reference once (HuBERT -> prompt tokens, spectrogram -> style vector
``ge``, transcript -> phones + BERT features); ``speak`` then only does the target text:
reference phones + target phones into the GPT with the reference's tokens as the prompt, the
new tokens decoded by SoVITS with the target phones and ``ge``. The text is split into
sentences, spoken one by one and joined with 0.3 s of silence, as the original does.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from talkrt.errors import TalkrtError, TalkrtWarning
from talkrt.models.gpt_sovits.specs import SPEAKER, SPEECH_ENCODER

REFERENCE_WAV = "reference.wav"
REFERENCE_TXT = "reference.txt"
BERT_FOLDER = "chinese-roberta-wwm-ext-large"
ENCODER_RATE = 16000  # the speech encoder's input rate
# The original appends int(0.3 * 32000) zeros to the 16 kHz reference (sized with the 32 kHz rate: 0.6 s).
REFERENCE_PADDING = 9600
REFERENCE_SECONDS = (3.0, 10.0)  # the range the original accepts; outside it a warning
SENTENCE_GAP_S = 0.3  # silence between sentences, as the original joins them
# Streaming: tokens of context decoded on each side of a chunk (SoVITS attends over the whole
# utterance, so a window is close to, not equal to, the one-shot decode; see speak_stream).
STREAM_CONTEXT = 12
# Prior noise is drawn this many tokens at a time, time-major, so a prefix does not depend on the total.
NOISE_BLOCK = 64
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_ENDS = ",.;?!、，。？！;：…"


@dataclass
class Reference:
    """What the reference gives every utterance: its phones, BERT features, prompt tokens and style."""

    phones: list[int]
    bert: torch.Tensor  # (1024, len(phones)) on the device
    prompt: torch.Tensor  # (1, P) int64 on the device
    ge: torch.Tensor  # (1, gin, 1) on the device
    seconds: float


@dataclass
class GptSovitsVoice:
    """The synthesizer with the reference and the BERT feature model loaded once (``load_voice``)."""

    synth: object  # GptSovitsSynthesizer
    reference: Reference | None = None  # set by load_voice
    bert: object | None = None  # BertPhoneFeatures, or None (Chinese text then gets zeros)
    bert_vocab: dict[str, int] | None = None
    sampling: dict = field(default_factory=dict)
    max_new_tokens: int | None = None  # a cap on each sentence's tokens (benchmarks of random weights, which rarely end)

    @property
    def device(self) -> torch.device:
        return self.synth.device


# ----------------------------------------------------------------------------- loading


def load_voice(directory: Path, backend: str, device: str, note: Callable[[str], None] = lambda text: None,
               reference: tuple[Path, str] | None = None) -> tuple[GptSovitsVoice, dict]:
    """(voice, manifest) of the GPT-SoVITS voice in ``directory``, run with ``backend`` (ort, trt
    or torch) on ``device`` (auto: chosen for the backend, the reason given to ``note``). The
    speaker is ``reference`` (speech file, transcript), else the directory's reference.wav and .txt."""
    from talkrt.engines.devices import resolve_device
    from talkrt.models.gpt_sovits.synth import GptSovitsSynthesizer, read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if reference is not None:
        wav, transcript = Path(reference[0]), reference[1].strip()
        if not transcript:
            raise TalkrtError(f"the transcript of {wav} is empty: give what is said in it (--ref-text)")
    else:
        wav, txt = directory / REFERENCE_WAV, directory / REFERENCE_TXT
        missing = [path.name for path in (wav, txt) if not path.is_file()]
        if missing:
            raise TalkrtError(
                f"{directory} has no {' or '.join(missing)}: a GPT-SoVITS voice needs {wav} (3-10 s of the speaker) "
                f"and {txt} (what is said in it), or --ref-audio and --ref-text"
            )
        transcript = txt.read_text(encoding="utf-8").strip()
        if not transcript:
            raise TalkrtError(f"{txt} is empty: write what is said in {wav} there")
    choice = resolve_device(device, backend)
    note(f"device: {choice.device} ({choice.reason})")
    synth = GptSovitsSynthesizer.from_manifest(directory, backend=backend, device=choice.device)
    if SPEECH_ENCODER not in synth.runners:
        synth.runners[SPEECH_ENCODER] = _onnx_runner(directory, manifest, SPEECH_ENCODER, "the reference's prompt tokens")
    bert, vocab = _bert(directory)
    if bert is not None:
        bert = bert.to(choice.device)
    voice = GptSovitsVoice(synth, bert=bert, bert_vocab=vocab, sampling=dict(manifest.get("sampling") or {}))
    speaker = None
    if "sv_emb" in synth.runners["reference"].input_names:  # v2Pro / v2ProPlus
        speaker = _speaker(synth, directory, manifest, backend)
    voice.reference = _reference(voice, wav, transcript, speaker)
    note(f"reference: {voice.reference.seconds:.1f} s, {voice.reference.prompt.shape[1]} prompt tokens, {len(voice.reference.phones)} phones")
    return voice, manifest


def _onnx_runner(directory: Path, manifest: dict, graph: str, purpose: str):
    """A reference graph the synthesizer has no runner for (the torch backend rebuilds only the
    GPT-SoVITS models; engines may lack it): its exported graph in ONNX Runtime on the CPU, run
    once per voice; without the file, one line saying how to get it."""
    from talkrt.engines.runners import make_runner

    name = (manifest.get("files") or {}).get(graph)
    if name is None or not (directory / name).is_file():
        hint = manifest.get(f"{graph}_missing") or f"export it again with `talkrt export gpt-sovits --out-dir {directory}`"
        raise TalkrtError(f"{directory} has no {graph} graph for {purpose}: {hint}")
    return make_runner("ort", directory / name, device="cpu")


def _speaker(synth, directory: Path, manifest: dict, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """fbank (1, T, 80) -> sv_emb (1, sv_dim) of a Pro voice: the speaker graph's runner (ONNX
    Runtime, or the engine; the ONNX graph on the CPU when no engine was built), or with the
    torch backend the PyTorch network of the manifest's weights (its preset and seed, or the
    checkpoint directory's sv/ file), as that backend rebuilds the other models."""
    if backend == "torch":
        from talkrt.models.gpt_sovits.specs import load_speaker

        model = load_speaker(manifest.get("preset"), manifest.get("checkpoint"), seed=int(manifest.get("seed") or 0)).to(synth.device)
        return lambda features: model(features.to(synth.device))
    runner = synth.runners.get(SPEAKER) or _onnx_runner(directory, manifest, SPEAKER, "the reference's speaker embedding")
    return lambda features: runner.run({"features": features.to(runner.device).contiguous()})["sv_emb"]


def _bert(directory: Path):
    """(BERT phone-feature model, vocabulary) from ``DIR/chinese-roberta-wwm-ext-large/``, or (None, None)."""
    folder = directory / BERT_FOLDER
    if not folder.is_dir():
        return None, None
    from talkrt.models.gpt_sovits.bert import feature_extractor

    return feature_extractor(folder)


def _reference(voice: GptSovitsVoice, wav: Path, transcript: str, speaker: Callable[[torch.Tensor], torch.Tensor] | None) -> Reference:
    """Prompt tokens, style vector, phones and BERT features of the reference (computed once);
    ``speaker`` gives a Pro voice's sv_emb from the reference's fbank."""
    from talkrt.runtime.audio import resample
    from talkrt.runtime.media import read_audio

    synth = voice.synth
    samples, rate = read_audio(wav)
    waveform = torch.from_numpy(samples)
    seconds = len(samples) / rate
    low, high = REFERENCE_SECONDS
    if not low <= seconds <= high:
        warnings.warn(f"{wav} is {seconds:.1f} s long; GPT-SoVITS expects a {low:g}-{high:g} s reference", TalkrtWarning, stacklevel=3)
    with torch.no_grad():
        wave16 = resample(waveform, rate, ENCODER_RATE)
        wave16 = torch.cat([wave16, torch.zeros(REFERENCE_PADDING)]).reshape(1, -1)
        encoder = synth.runners[SPEECH_ENCODER]
        wave16 = wave16.to(encoder.device).contiguous()  # the encoder may be on the CPU (torch backend)
        features = encoder.run({"input_values": wave16})["features"]
        prompt = synth.prompt_tokens(features).reshape(1, -1).clone()
        wave32 = resample(waveform, rate, synth.sample_rate)
        peak = float(wave32.abs().max()) if wave32.numel() else 0.0
        if peak > 1:  # as the original: a reference louder than full scale is scaled down (by at most 2)
            wave32 = wave32 / min(2.0, peak)
        sv_emb = None
        if speaker is not None:
            from talkrt.models.gpt_sovits.speaker import reference_fbank

            sv_emb = speaker(reference_fbank(wave32, synth.sample_rate))
        ge = synth.reference_style(synth.spectrogram(wave32), sv_emb).clone()
    if prompt.shape[1] < 1:
        raise TalkrtError(f"{wav} is too short for a prompt ({seconds:.2f} s); give 3-10 s of the speaker")
    phones, bert = _phones_and_bert(voice, _with_end(transcript), skip_unknown=False, what=f"the reference text ({REFERENCE_TXT})")
    return Reference(phones, bert, prompt, ge, seconds)


# ----------------------------------------------------------------------------- text


def _with_end(text: str) -> str:
    """The text closed by a full stop when it does not end in punctuation, as the original closes it."""
    text = text.strip()
    if text and text[-1] not in _ENDS:
        from talkrt.models.gpt_sovits.text import split_languages

        text += "。" if split_languages(text)[-1][0] == "zh" else "."
    return text


def sentences(text: str) -> list[str]:
    """``text`` split after each sentence end (. ! ? … followed by a space; 。！？), empty parts dropped."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def _phones_and_bert(voice: GptSovitsVoice, text: str, skip_unknown: bool, what: str = "the text") -> tuple[list[int], torch.Tensor]:
    """Phone ids and (1024, phones) BERT features of one sentence, a language run at a time (mixed
    Chinese and English text is read run by run, their features concatenated)."""
    from talkrt.models.gpt_sovits.text import phonemize_parts

    try:
        parts = phonemize_parts(text, oov="spell" if skip_unknown else "auto")
    except TalkrtError as error:
        raise TalkrtError(f"{what}: {error}") from None
    read = [_run_phones_and_bert(voice, part) for part in parts]
    return [i for ids, _ in read for i in ids], torch.cat([features for _, features in read], dim=1)


def _run_phones_and_bert(voice: GptSovitsVoice, result) -> tuple[list[int], torch.Tensor]:
    """One language run: English gets zeros (as the original); Chinese without the BERT model gets
    zeros and a warning (the GPT still speaks, with flatter prosody)."""
    from talkrt.models.gpt_sovits.bert import HIDDEN, character_ids, expansion_index

    ids = result.ids
    zeros = torch.zeros(HIDDEN, len(ids), device=voice.device)
    if result.language != "zh" or result.word2ph is None:
        return ids, zeros
    if voice.bert is None or voice.bert_vocab is None:
        warnings.warn(
            f"Chinese text without BERT features: put the chinese-roberta-wwm-ext-large checkpoint in {BERT_FOLDER}/ of the voice directory "
            "for the prosody the GPT was trained with", TalkrtWarning, stacklevel=5,
        )
        return ids, zeros
    model = voice.bert
    device = next(model.parameters()).device
    chars = character_ids(result.norm_text, voice.bert_vocab).to(device)
    with torch.no_grad():
        features = model(chars, torch.ones_like(chars), expansion_index(result.word2ph).to(device)).T
    return ids, features.to(voice.device, torch.float32)


def _check_voice(synthesizer, speaker: int | None) -> GptSovitsVoice:
    if not isinstance(synthesizer, GptSovitsVoice) or synthesizer.reference is None:
        raise TalkrtError("speak needs the voice load_voice returns")
    if speaker is not None:
        raise TalkrtError("a GPT-SoVITS voice has no speaker ids: its speaker is the voice directory's reference.wav")
    return synthesizer


def _prepared(text: str, voice: GptSovitsVoice, skip_unknown: bool) -> list[tuple[list[int], torch.Tensor]]:
    """(phones, BERT features) of each sentence: the whole text is checked before anything is spoken."""
    parts = sentences(text)
    if not parts:
        raise TalkrtError("the text is empty: nothing to say")
    return [_phones_and_bert(voice, _with_end(part), skip_unknown) for part in parts]


def _token_chunks(voice: GptSovitsVoice, phones: list[int], bert: torch.Tensor, seed: int, every: int | None = None) -> Iterator:
    """The GPT's semantic tokens for one sentence as ``generate_chunks`` yields them (``Decoded``, the
    last one complete): reference + target text, the reference's tokens as prompt."""
    reference, settings = voice.reference, voice.sampling
    all_phones = reference.phones + phones
    features = torch.cat([reference.bert, bert], dim=1).reshape(1, -1, len(all_phones))
    sampling = {key: settings[key] for key in ("top_k", "top_p", "temperature", "repetition_penalty") if key in settings}
    return voice.synth.generate_chunks(all_phones, features, reference.prompt, every=every, seed=seed, max_new_tokens=voice.max_new_tokens, **sampling)


def _tokens(voice: GptSovitsVoice, phones: list[int], bert: torch.Tensor, seed: int) -> torch.Tensor:
    """The GPT's semantic tokens (N,) for one sentence."""
    decoded = None
    for decoded in _token_chunks(voice, phones, bert, seed):
        pass
    return decoded.tokens.reshape(-1)


class _Noise:
    """A sentence's prior noise (1, C, 2 * tokens) from ``seed``, drawn in blocks of ``NOISE_BLOCK``
    tokens, time-major: its first n tokens are the same however many are drawn, so streaming can
    take them before the sentence's length is known and still match ``speak``."""

    def __init__(self, voice: GptSovitsVoice, seed: int) -> None:
        synth = voice.synth
        self.channels, self.device = synth.inter_channels, synth.device
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.drawn = torch.zeros(1, self.channels, 0, device=self.device)

    def take(self, count: int) -> torch.Tensor:
        """The noise of tokens [0, count)."""
        while self.drawn.shape[2] < 2 * count:
            block = torch.randn(2 * NOISE_BLOCK, self.channels, generator=self.generator, device=self.device)
            self.drawn = torch.cat([self.drawn, block.T.unsqueeze(0)], dim=2)
        return self.drawn[:, :, : 2 * count]


def _noise(voice: GptSovitsVoice, count: int, seed: int) -> torch.Tensor:
    """The prior noise of a whole sentence (1, C, 2 * count)."""
    return _Noise(voice, seed).take(count)


def _gap(voice: GptSovitsVoice) -> torch.Tensor:
    return torch.zeros(round(SENTENCE_GAP_S * voice.synth.sample_rate), device=voice.device)


def _noise_scale(voice: GptSovitsVoice) -> float:
    return float(voice.sampling.get("noise_scale", 0.5))


# ----------------------------------------------------------------------------- speaking


def speak(text: str, synthesizer, manifest: dict, speaker: int | None = None, seed: int = 0, skip_unknown: bool = False) -> tuple[torch.Tensor, int, float]:
    """Text -> (float32 waveform on the voice's device, sample rate, seconds the synthesis took).

    Sentence i uses seed ``seed + i`` for the GPT's sampling and the prior noise; the same seed
    gives the same waveform. ``skip_unknown`` spells English words the dictionary and espeak-ng
    cannot read instead of refusing them."""
    voice = _check_voice(synthesizer, speaker)
    start = time.perf_counter()
    pieces: list[torch.Tensor] = []
    for index, (phones, bert) in enumerate(_prepared(text, voice, skip_unknown)):
        if index:
            pieces.append(_gap(voice))
        tokens = _tokens(voice, phones, bert, seed + index)
        if tokens.numel():
            noise = _noise(voice, tokens.numel(), seed + index)
            pieces.append(voice.synth.decode(tokens, phones, voice.reference.ge, noise=noise, noise_scale=_noise_scale(voice)).float())
    waveform = torch.cat(pieces) if pieces else torch.zeros(0, device=voice.device)
    if waveform.is_cuda:  # the time reported is the synthesis, not its launch
        torch.cuda.synchronize(waveform.device)
    return waveform, int(manifest["sample_rate"]), time.perf_counter() - start


def speak_stream(text: str, synthesizer, manifest: dict, speaker: int | None = None, seed: int = 0, skip_unknown: bool = False,
                 chunk_ms: float = 40.0, context_tokens: int = STREAM_CONTEXT, check_every: int | None = None) -> tuple[Iterator[torch.Tensor], int]:
    """Text -> (float32 waveform chunks on the voice's device; sample rate), sentence by sentence.

    Each sentence's semantic tokens are decoded in windows while the GPT generates them: chunk
    [a, b) of the tokens is decoded with ``context_tokens`` tokens of context on each side (and the
    one-shot prior noise of those tokens) and only its own samples are kept. The tokens are read
    every ``check_every`` tokens (default: the synthesizer's); a chunk is decoded as soon as its
    right context exists (at the sentence's end, with what there is), so the first audio comes
    after about ``first + context_tokens`` tokens, not the whole sentence. The chunks do not depend
    on ``check_every``: they are those of decoding the finished tokens in the same windows. The first chunk holds about
    ``chunk_ms`` of speech (one token = 40 ms), the later ones at least ``2 * context_tokens``
    tokens, so the context at most doubles the decoder's work. The SoVITS encoder attends over
    the whole utterance, so a window is not exactly the one-shot decode: joined, the chunks are
    ``speak``'s waveform (same length, same seed) within a few 1e-2 at most (measured in
    tests/models/gpt_sovits/test_voice.py); ``context_tokens`` larger than the sentence gives it
    exactly. The text is checked now; the synthesis runs as the chunks are drawn.
    """
    if not chunk_ms > 0:
        raise TalkrtError(f"chunk_ms must be positive, got {chunk_ms}")
    if context_tokens < 0:
        raise TalkrtError(f"context_tokens must be at least 0, got {context_tokens}")
    if check_every is not None and check_every < 1:
        raise TalkrtError(f"check_every must be at least 1, got {check_every}")
    voice = _check_voice(synthesizer, speaker)
    prepared = _prepared(text, voice, skip_unknown)
    per_token = voice.synth.samples_per_token
    rate = int(manifest["sample_rate"])
    first = max(1, round(chunk_ms * rate / 1000 / per_token))
    steady = max(first, 2 * context_tokens)

    def chunks() -> Iterator[torch.Tensor]:
        for index, (phones, bert) in enumerate(prepared):
            if index:
                yield _gap(voice)
            noise = _Noise(voice, seed + index)
            begin, size = 0, first
            for decoded in _token_chunks(voice, phones, bert, seed + index, check_every):
                tokens = decoded.tokens.reshape(-1)
                known = tokens.numel()
                while begin < known:
                    # before the end a chunk waits for its full size and right context, so it is
                    # the window the finished tokens would give
                    if not decoded.done and begin + size + context_tokens > known:
                        break
                    end = min(known, begin + size)
                    low, high = max(0, begin - context_tokens), min(known, end + context_tokens)
                    window = voice.synth.decode(tokens[low:high], phones, voice.reference.ge, noise=noise.take(high)[:, :, 2 * low :], noise_scale=_noise_scale(voice))
                    yield window[(begin - low) * per_token : (end - low) * per_token].float()
                    begin, size = end, steady

    return chunks(), rate
