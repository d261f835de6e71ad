"""The incremental front ends against their offline forms, at every chunking, and their bounded state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import talkrt.runtime.incremental as incremental
from talkrt.models.dhlive.alignment import FBANK
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.audio import resample, wav2lip_mel
from talkrt.runtime.fbank import DHLIVE_FBANK, fbank, num_fbank_frames
from talkrt.runtime.incremental import FramedFeatureStream, StreamingFbank, StreamingResampler, StreamingWav2LipMel

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RATES = (8000, 22050, 24000, 44100, 48000, 16000)
CHUNKINGS = ("1 sample", "10 ms", "40 ms", "333 ms", "random")
MEL_TOLERANCE = 1e-4  # absolute, on values in [-4, 4]
FBANK_TOLERANCE = 1e-5  # absolute, on log energies in [-16, 20]


@pytest.fixture(autouse=True)
def one_thread():
    """Small pushes are latency-bound: on a shared 2-core machine a second intra-op thread
    only adds wake-ups (a 22-tap float64 conv1d then takes milliseconds instead of 30 us)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def speech_like(num_samples: int, rate: int, seed: int = 0) -> torch.Tensor:
    """Noise under a slow envelope plus a tone, with a stretch of digital silence."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples, dtype=torch.float64) / rate
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t)
    wav = 0.3 * envelope * torch.randn(num_samples, generator=generator, dtype=torch.float64) + 0.2 * torch.sin(2 * torch.pi * 220 * t)
    wav[num_samples // 3 : num_samples // 3 + rate // 20] = 0.0
    return wav.float()


def chunk_sizes(num_samples: int, rate: int, chunking: str, seed: int = 0) -> list[int]:
    if chunking == "random":  # empty chunks included
        sizes = np.random.default_rng(seed).integers(0, rate // 8, size=num_samples + 1)
        return sizes[: np.searchsorted(np.cumsum(sizes), num_samples) + 1].tolist()
    step = 1 if chunking == "1 sample" else round(rate * int(chunking.split()[0]) / 1000)
    return [step] * (-(-num_samples // step))


def stream(streamer, signal: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The pieces push() returns for each chunk, then finish()'s."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(streamer.push(signal[start : start + size]))
        start += size
    return pieces + [streamer.finish()]


def lengths_for(chunking: str, long: int, short: tuple[int, ...]) -> tuple[int, ...]:
    # One-sample chunks cost a push per sample: their long clip is 0.3 s.
    return short + ((long * 3 // 13,) if chunking == "1 sample" else (long,))


# ----------------------------------------------------------------- resampler


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("rate", RATES)
def test_resampler_equals_offline(rate: int, chunking: str) -> None:
    resampler = StreamingResampler(rate)
    for num_samples in lengths_for(chunking, rate * 13 // 10, (1, 2, 7, 30, 31, 64, 441, 1000)):
        signal = speech_like(num_samples, rate)
        resampler.reset()
        pieces = stream(resampler, signal, chunk_sizes(num_samples, rate, chunking))
        expected = resample(signal, rate, 16000)
        torch.testing.assert_close(torch.cat(pieces), expected, rtol=0, atol=1e-7)
        assert (resampler.received, resampler.produced) == (num_samples, len(expected))


def test_resampler_passes_equal_rates_through() -> None:
    resampler = StreamingResampler(16000)
    chunk = torch.randn(320)
    assert resampler.push(chunk) is chunk
    assert resampler.finish().numel() == 0 and resampler.state_samples == 0


def test_resampler_push_is_final_and_refuses_after_finish() -> None:
    signal = speech_like(4410, 44100)
    resampler = StreamingResampler(44100)
    early = resampler.push(signal[:2000])
    assert torch.equal(early, resample(signal, 44100)[: len(early)])  # later input changes nothing
    resampler.finish()
    with pytest.raises(RuntimeError):
        resampler.push(signal[:10])


# ------------------------------------------------------------ feature streams

FEATURE_LENGTHS = (1, 2, 50, 199, 200, 239, 240, 241, 399, 400, 401, 559, 560, 561, 800, 880, 1000, 6400, 6401)


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_wav2lip_mel_equals_offline(chunking: str) -> None:
    mel = StreamingWav2LipMel()
    for num_samples in lengths_for(chunking, 20800, FEATURE_LENGTHS):  # 20800 = 104 hops of 200
        signal = speech_like(num_samples, 16000)
        mel.reset()
        sizes = chunk_sizes(num_samples, 16000, chunking)
        pieces = stream(mel, signal, sizes)
        # Each push gives exactly the columns the alignment counts as computable.
        received = np.cumsum(sizes).clip(max=num_samples)
        counts = np.cumsum([piece.shape[-1] for piece in pieces[:-1]])
        assert counts.tolist() == [WAV2LIP_MEL.computable_feature_frames(int(s)) for s in received]
        torch.testing.assert_close(torch.cat(pieces, dim=-1), wav2lip_mel(signal), rtol=0, atol=MEL_TOLERANCE)


def test_mel_streams_computed_together_equal_each_alone() -> None:
    """Mel streams share one compute that takes a batch axis (talkrt.runtime.batching stacks their
    segments): take, one compute of each stack of equal-length segments, then accept, give every
    stream the columns push gives it alone, within float rounding (a one-column matmul sums in
    another order than a batched one)."""
    sizes = (320, 640, 640, 333, 640)  # some streams' segments have one length at a turn, some not
    signals = [speech_like(12000, 16000, seed=seed) for seed in range(len(sizes))]
    together = [StreamingWav2LipMel() for _ in sizes]
    alone = [StreamingWav2LipMel() for _ in sizes]
    assert len({stream.compute for stream in together}) == 1 and together[0].batched
    got: list[list[torch.Tensor]] = [[] for _ in sizes]
    expected: list[list[torch.Tensor]] = [[] for _ in sizes]
    stacked = 0
    for turn in range(-(-12000 // min(sizes))):
        chunks = [signal[turn * size : (turn + 1) * size] for signal, size in zip(signals, sizes)]
        segments = [stream.take(chunk) for stream, chunk in zip(together, chunks)]
        columns: list[torch.Tensor | None] = [None] * len(sizes)
        for length in {len(segment) for segment in segments if segment is not None}:
            rows = [index for index, segment in enumerate(segments) if segment is not None and len(segment) == length]
            stacked += len(rows) > 1
            for index, own in zip(rows, together[0].compute(torch.stack([segments[row] for row in rows]))):
                columns[index] = own
        for index, (stream, own, chunk) in enumerate(zip(together, columns, chunks)):
            got[index].append(stream.accept(own))
            expected[index].append(alone[index].push(chunk))
    assert stacked
    for index, signal in enumerate(signals):
        got[index].append(together[index].finish())
        expected[index].append(alone[index].finish())
        for mine, theirs in zip(got[index], expected[index]):
            assert mine.shape == theirs.shape
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.cat(got[index], dim=-1), wav2lip_mel(signal), rtol=0, atol=MEL_TOLERANCE)


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_fbank_equals_offline(chunking: str) -> None:
    stream_fbank = StreamingFbank(DHLIVE_FBANK)
    for num_samples in lengths_for(chunking, 20800, FEATURE_LENGTHS):  # 20800 = 65 hops of 320
        signal = speech_like(num_samples, 16000)
        stream_fbank.reset()
        sizes = chunk_sizes(num_samples, 16000, chunking)
        pieces = stream(stream_fbank, signal, sizes)
        received = np.cumsum(sizes).clip(max=num_samples)
        counts = np.cumsum([piece.shape[-1] for piece in pieces[:-1]])
        assert counts.tolist() == [num_fbank_frames(int(s), flush=False) for s in received]
        assert counts.tolist() == [FBANK.computable_feature_frames(int(s)) for s in received]
        expected = fbank(signal).T
        assert expected.shape[-1] == num_fbank_frames(num_samples, flush=True)
        torch.testing.assert_close(torch.cat(pieces, dim=-1), expected, rtol=0, atol=FBANK_TOLERANCE)


def toy_features(padded: torch.Tensor, hop: int, frame_length: int) -> torch.Tensor:
    """(2, n): each frame's sum and its sum weighted by the tap index."""
    frames = padded.unfold(0, frame_length, hop)
    return torch.stack((frames.sum(-1), (frames * torch.arange(frame_length)).sum(-1)))


@pytest.mark.parametrize("hop, frame_length, left_pad, right_pad", [(3, 7, 5, 2), (4, 4, 0, 0), (2, 9, 9, 6), (5, 3, 1, 4)])
@pytest.mark.parametrize("padding", ["reflect", "symmetric", "zeros", "none"])
def test_framed_stream_equals_numpy_padding(hop: int, frame_length: int, left_pad: int, right_pad: int, padding: str) -> None:
    if padding == "none":
        left_pad = right_pad = 0
    mode = {"reflect": "reflect", "symmetric": "symmetric", "zeros": "constant", "none": "constant"}[padding]

    def offline(signal: torch.Tensor) -> torch.Tensor:
        padded = torch.from_numpy(np.pad(signal.numpy(), (left_pad, right_pad), mode=mode))
        if len(padded) < frame_length:
            return torch.empty(2, 0)
        return toy_features(padded, hop, frame_length)

    framed = FramedFeatureStream(
        lambda padded: toy_features(padded, hop, frame_length),
        offline,
        hop=hop,
        frame_length=frame_length,
        left_pad=left_pad,
        right_pad=right_pad,
        padding=padding,
        channels=2,
    )
    for num_samples in range(41):
        signal = speech_like(num_samples, 16000, seed=num_samples)
        for chunking in ("1 sample", "random"):
            framed.reset()
            pieces = stream(framed, signal, chunk_sizes(num_samples, 40, chunking, seed=num_samples))
            expected = offline(signal) if num_samples else torch.empty(2, 0)
            assert framed.total_columns(num_samples) == expected.shape[-1]
            torch.testing.assert_close(torch.cat(pieces, dim=-1), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------- bounded state

LONG_SECONDS, CHUNK_MS = 60, 20


@pytest.mark.parametrize("name", ["mel", "fbank"])
def test_feature_stream_state_and_work_stay_bounded(name: str) -> None:
    """60 s in 20 ms chunks: the kept samples and the samples each push computes on stay
    below a frame's (plus the chunk), and the result still equals the offline features."""
    streamer = StreamingWav2LipMel() if name == "mel" else StreamingFbank(DHLIVE_FBANK)
    segments: list[int] = []
    compute = streamer.compute

    def recording(padded: torch.Tensor) -> torch.Tensor:
        segments.append(len(padded))
        return compute(padded)

    streamer.compute = recording
    signal = speech_like(LONG_SECONDS * 16000, 16000)
    step = 16000 * CHUNK_MS // 1000
    pieces, states = [], []
    for start in range(0, len(signal), step):
        pieces.append(streamer.push(signal[start : start + step]))
        states.append(streamer.state_samples)
    pieces.append(streamer.finish())
    assert max(states) <= streamer.frame_length
    assert max(segments) <= step + streamer.frame_length
    expected = wav2lip_mel(signal) if name == "mel" else fbank(signal).T
    tolerance = MEL_TOLERANCE if name == "mel" else FBANK_TOLERANCE
    torch.testing.assert_close(torch.cat(pieces, dim=-1), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampler_state_and_work_stay_bounded(rate: int, monkeypatch: pytest.MonkeyPatch) -> None:
    segments: list[int] = []
    blocks = incremental._polyphase_blocks

    def recording(signal: torch.Tensor, *rest) -> torch.Tensor:
        segments.append(signal.shape[-1])
        return blocks(signal, *rest)

    monkeypatch.setattr(incremental, "_polyphase_blocks", recording)
    signal = speech_like(LONG_SECONDS * rate, rate)
    step = rate * CHUNK_MS // 1000
    resampler = StreamingResampler(rate)
    pieces, states = [], []
    for start in range(0, len(signal), step):
        pieces.append(resampler.push(signal[start : start + step]))
        states.append(resampler.state_samples)
    pieces.append(resampler.finish())
    taps = 512  # the filter's taps per phase are fewer: 496 at 44.1 kHz, 64 at 48 kHz, 22 at 8 kHz
    assert max(states) < taps and max(segments) < step + taps
    torch.testing.assert_close(torch.cat(pieces), resample(signal, rate), rtol=0, atol=1e-7)


# ------------------------------------------------------------------- devices


@needs_cuda
def test_streams_on_cuda_equal_offline() -> None:
    signal = speech_like(48000, 48000).cuda()
    resampler = StreamingResampler(48000, device="cuda")
    wav16k = torch.cat(stream(resampler, signal, chunk_sizes(48000, 48000, "random")))
    torch.testing.assert_close(wav16k, resample(signal, 48000), rtol=0, atol=1e-7)
    for streamer, offline, tolerance in (
        (StreamingWav2LipMel("cuda"), wav2lip_mel(wav16k), MEL_TOLERANCE),
        (StreamingFbank(DHLIVE_FBANK, "cuda"), fbank(wav16k).T, FBANK_TOLERANCE),
    ):
        pieces = stream(streamer, wav16k, chunk_sizes(len(wav16k), 16000, "random"))
        assert all(piece.device.type == "cuda" for piece in pieces)
        torch.testing.assert_close(torch.cat(pieces, dim=-1), offline, rtol=0, atol=tolerance)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16000])
def test_resampler_reach_bounds_an_impulse(rate) -> None:
    """An input impulse moves only the outputs whose time lies within ``reach`` input samples of it."""
    stream = StreamingResampler(rate, 16000)
    impulse = torch.zeros(rate // 10)
    impulse[rate // 20] = 1.0
    out = torch.cat([stream.push(impulse), stream.finish()])
    times = torch.arange(len(out)) * rate / 16000  # each output's time in input samples
    moved = times[out != 0]
    assert len(moved) and (moved - rate // 20).abs().max() <= stream.reach
    assert stream.reach < rate // 20  # and it is a few milliseconds, not the whole clip
