"""Features that see their whole input, streamed on a sliding context: the windows each step is
computed on, independence from the chunking, bounded state, and the deviation measurement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from talkrt.models.dinet.alignment import CTC_25HZ
from talkrt.models.hubert.alignment import HUBERT
from talkrt.runtime.align import FeatureAlignment, SlidingContext, frame_start_sample
from talkrt.runtime.context_deviation import frame_cosines, measure_contexts, smallest_passing, streamed_features
from talkrt.runtime.feature_stream import SlidingContextFeatures

SR = 16000
HOP, FIELD = CTC_25HZ.hop, CTC_25HZ.receptive_field


def whole_input_features(wav: torch.Tensor) -> torch.Tensor:
    """(2, T) columns that depend on the whole input, as attention does: each frame's mean and
    energy, normalised by the input's own mean and spread (an utterance normalisation)."""
    count = max(0, (len(wav) - FIELD) // HOP + 1)
    frames = torch.stack([wav[j * HOP : j * HOP + FIELD] for j in range(count)]) if count else wav.new_zeros(0, FIELD)
    centred = (frames - wav.mean()) / (wav.std() + 1e-3)
    return torch.stack((centred.mean(dim=1), centred.pow(2).mean(dim=1)))


def direct(wav: torch.Tensor, context: SlidingContext) -> torch.Tensor:
    """The streamed features computed the obvious way: every step on its own slice of the whole signal."""
    total = len(wav)
    frames = CTC_25HZ.num_feature_frames(total)
    columns = []
    for first in range(0, frames, context.step):
        start = max(0, first * HOP - context.left)
        stop = min(total, (first + context.step - 1) * HOP + FIELD + context.lookahead)
        step = whole_input_features(wav[start:stop])
        skip = first - start // HOP
        columns.append(step[:, skip : skip + min(context.step, frames - first)])
    return torch.cat(columns, dim=1)


def speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    samples = round(seconds * SR)
    envelope = (torch.sin(torch.arange(samples) * (2 * torch.pi * 3 / SR)).clamp(min=0) + 0.05)
    return torch.randn(samples, generator=generator) * envelope * 0.3


CONTEXT = SlidingContext(left=8 * HOP, step=3, lookahead=500)
ALIGNMENT = dataclasses.replace(CTC_25HZ, context=CONTEXT)


def pieces(wav: torch.Tensor, sizes) -> list[torch.Tensor]:
    out, start = [], 0
    for size in sizes:
        if start >= len(wav):
            break
        out.append(wav[start : start + size])
        start += size
    if start < len(wav):
        out.append(wav[start:])
    return out


def stream(wav: torch.Tensor, chunks: list[torch.Tensor], alignment: FeatureAlignment = ALIGNMENT) -> tuple[torch.Tensor, list[int]]:
    """The joined columns, and after each push the count the alignment calls final."""
    features = SlidingContextFeatures(whole_input_features, alignment)
    out, received, emitted = [], 0, 0
    for chunk in chunks:
        columns = features.push(chunk)
        received += len(chunk)
        emitted += columns.shape[-1] if columns.numel() else 0
        assert emitted == alignment.computable_feature_frames(received)  # the stream and the contract agree
        out.append(columns)
    out.append(features.finish())
    return torch.cat([c for c in out if c.numel()], dim=-1), emitted


@pytest.mark.parametrize("chunking", ["1 sample", "10 ms", "40 ms", "333 ms", "random", "whole"])
def test_streamed_columns_are_the_step_windows_whatever_the_chunking(chunking) -> None:
    seconds = 0.6 if chunking == "1 sample" else 3.3
    wav = speechlike(seconds, seed=1)
    sizes = {"1 sample": [1] * len(wav), "10 ms": [160] * 400, "40 ms": [640] * 100, "333 ms": [5328] * 20, "whole": [len(wav)]}.get(chunking)
    if sizes is None:
        sizes = np.random.default_rng(5).integers(1, 4000, size=len(wav)).tolist()
    columns, _ = stream(wav, pieces(wav, sizes))
    assert torch.equal(columns, direct(wav, CONTEXT))
    # ... and they are not the whole-utterance features: the context is what this measures.
    assert not torch.allclose(columns, whole_input_features(wav), atol=1e-3)


def test_a_context_that_covers_the_utterance_is_exact() -> None:
    wav = speechlike(2.0, seed=2)
    everything = dataclasses.replace(CTC_25HZ, context=SlidingContext(left=len(wav) // HOP * HOP + HOP, step=4, lookahead=len(wav)))
    columns, _ = stream(wav, pieces(wav, [700] * 100), everything)
    assert torch.equal(columns, whole_input_features(wav))


def test_state_stays_bounded_over_a_long_stream() -> None:
    wav = speechlike(40.0, seed=3)
    features = SlidingContextFeatures(whole_input_features, ALIGNMENT)
    chunk, largest, emitted = 640, 0, 0
    for start in range(0, len(wav), chunk):
        emitted += features.push(wav[start : start + chunk]).shape[-1]
        largest = max(largest, features.state_samples)
    # The next step's window and what arrived since: history + a step + its field and lookahead + a chunk.
    assert largest <= CONTEXT.left + CONTEXT.step * HOP + FIELD + CONTEXT.lookahead + chunk
    assert emitted >= CTC_25HZ.num_feature_frames(len(wav)) - CONTEXT.step - 3


def test_frames_wait_for_their_step_and_its_lookahead() -> None:
    """A frame whose window's last feature opens a step waits for the whole step and its lookahead."""
    lookahead = round(ALIGNMENT.lookahead_ms(25) * SR / 1000)

    def first_ready(frame: int) -> int:  # the fewest samples after which the frame is ready
        low, high = 0, frame_start_sample(frame, 25) + 10 * SR
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if ALIGNMENT.frames_ready(middle, 25) > frame else (middle + 1, high)
        return low

    waits = [first_ready(frame) - frame_start_sample(frame, 25) for frame in range(60)]
    assert max(waits) == lookahead  # the declared lookahead is the worst frame's, exactly
    assert min(waits) == lookahead - (CONTEXT.step - 1) * HOP  # a frame whose last feature ends a step waits least
    # Without a context the features wait for the end of the utterance.
    no_context = dataclasses.replace(CTC_25HZ, context=None)
    assert no_context.frames_ready(10 * SR, 25) == 0 and CTC_25HZ.frames_ready(10 * SR, 25) > 200


def test_contexts_are_declared_and_checked() -> None:
    assert CTC_25HZ.context == SlidingContext(left=32000, step=5, lookahead=1280)
    assert HUBERT.context.describe(HUBERT) == "sliding context: 2000 ms left, 200 ms steps, 80 ms lookahead"
    # Left context rounds to whole hops, the step to whole frames (at least one).
    assert SlidingContext.of_ms(1010, 10, 80, hop=640) == SlidingContext(left=16000, step=1, lookahead=1280)
    with pytest.raises(ValueError, match="whole hops"):
        dataclasses.replace(CTC_25HZ, context=SlidingContext(left=100, step=1, lookahead=0))
    with pytest.raises(ValueError, match="need no sliding context"):
        dataclasses.replace(CTC_25HZ, streamable=True)
    with pytest.raises(ValueError, match="unpadded"):
        dataclasses.replace(CTC_25HZ, signal_padding="zeros")


def test_deviation_shrinks_to_zero_as_the_context_grows() -> None:
    """The measurement on the real HuBERT-ASR graph (tiny preset, random weights) through the mapper's input."""
    from talkrt.models.registry import get_spec

    torch.manual_seed(0)
    asr = get_spec("hubert-asr", preset="tiny-hubert-asr").build_module(None, seed=0).eval()

    def emissions(samples: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return asr(samples.reshape(1, -1))[0, ::2].T.contiguous()

    wav = speechlike(4.0, seed=4)
    covering = len(wav) // HOP * HOP + HOP
    contexts = [SlidingContext(HOP, 2, 0), SlidingContext(16 * HOP, 2, 640), SlidingContext(covering, 2, len(wav))]
    whole, deviations = measure_contexts(emissions, CTC_25HZ, wav, contexts)
    assert whole.shape == (29, CTC_25HZ.num_feature_frames(len(wav)))
    small, larger, exact = deviations
    assert exact.min_cosine == pytest.approx(1.0, abs=1e-6)
    assert small.mean_cosine < larger.mean_cosine < 1.0
    assert len(small.worst_frames(5)) == 5 and small.cosines[small.worst_frames(1)[0]] == small.min_cosine
    assert torch.equal(streamed_features(emissions, dataclasses.replace(CTC_25HZ, context=contexts[1]), wav, 999), larger.streamed)
    assert smallest_passing([(contexts[2], True), (contexts[1], True), (contexts[0], False)]) == contexts[1]
    assert smallest_passing([(contexts[0], False)]) is None


def test_frame_cosines() -> None:
    reference = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    actual = torch.tensor([[2.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    np.testing.assert_allclose(frame_cosines(reference, actual), [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="streamed features are"):
        frame_cosines(reference, actual[:, :2])


def test_a_renderer_streams_on_the_context_it_is_given() -> None:
    from talkrt.errors import TalkrtError
    from talkrt.runtime.renderers import build_renderer

    cpu = torch.device("cpu")
    renderer = build_renderer("dinet", "torch", {}, cpu)
    renderer.use_context(1000)
    assert renderer.alignment.context == SlidingContext(left=16000, step=5, lookahead=1280)  # the declared step and lookahead
    assert renderer.feature_stream().context == renderer.alignment.context
    renderer.use_context(500, lookahead_ms=0)
    assert renderer.alignment.context.describe(renderer.alignment) == "sliding context: 480 ms left, 200 ms steps, 0 ms lookahead"
    with pytest.raises(TalkrtError, match="give 0 to 60000 ms"):
        renderer.use_context(-1)
    wav2lip = build_renderer("wav2lip", "torch", {}, cpu)
    with pytest.raises(TalkrtError, match="the wav2lip features \\(wav2lip_mel\\) stream exactly; there is no context to choose"):
        wav2lip.use_context(1000)
