"""Media in and out with real files through PyAV: MP4 writing and reading, audio decoding, raw frames, A/V chunks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile
import torch

from talkrt.errors import TalkrtError
from talkrt.runtime.align import frame_start_sample, num_video_frames
from talkrt.runtime.audio import resample, resampled_length
from talkrt.runtime.media import (
    FrameChunk,
    VideoWriter,
    iter_av_chunks,
    probe,
    read_audio,
    read_image,
    read_video_frames,
)

SR = 16000
SECONDS = 1.3
NUM_SAMPLES = int(SR * SECONDS)  # 20800
NTSC = Fraction(30000, 1001)


def tone(num_samples: int = NUM_SAMPLES, rate: int = SR, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(num_samples) / rate)).astype(np.float32)


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients drifting a little every frame (easy for H.264, still moving)."""
    k = np.arange(count, dtype=np.float64)[:, None, None]
    y = np.arange(height, dtype=np.float64)[None, :, None]
    x = np.arange(width, dtype=np.float64)[None, None, :]
    blue = 40 + 160 * x / width + 2 * k
    green = 30 + 180 * y / height
    red = 128 + 60 * np.sin(2 * np.pi * (x + y + 3 * k) / (width + height))
    frames = np.stack(np.broadcast_arrays(blue, green, red), axis=-1)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[np.argmax(spectrum)])


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------- MP4 round trip


@pytest.mark.parametrize("fps", [25, 29.97], ids=["25fps", "29.97fps"])
@pytest.mark.parametrize("size", [(48, 64), (49, 65)], ids=["64x48", "65x49"])
def test_mp4_round_trip(tmp_path, fps, size):
    height, width = size
    audio = tone()
    count = num_video_frames(len(audio), fps, SR)
    assert count == (33 if fps == 25 else 39)  # ceil(1.3 s * fps)
    frames = gradient_frames(count, height, width)
    path = tmp_path / "out.mp4"

    with VideoWriter(path, fps, audio, SR) as writer:
        writer.write_frames(frames[:7])
        writer.write_frames(torch.from_numpy(frames[7:20]))  # torch batches are accepted too
        for frame in frames[20:]:
            writer.write_frames(frame)  # and single (H, W, 3) frames
    assert writer.frames_written == count
    assert leftovers(tmp_path) == ["out.mp4"]

    info = probe(path)
    exact_fps = NTSC if fps == 29.97 else Fraction(25)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["fps"] == exact_fps
    assert info["num_frames"] == count
    # Odd sizes are padded by one pixel to the next even size.
    assert (info["width"], info["height"]) == (width + width % 2, height + height % 2)
    assert info["audio_codec"] == "aac"
    assert info["audio_rate"] == SR and info["audio_channels"] == 1
    assert info["audio_duration"] == pytest.approx(SECONDS, abs=1e-3)
    frame_seconds = 1 / float(exact_fps)
    assert SECONDS - 1e-3 <= info["duration"] <= SECONDS + frame_seconds + 1e-3
    assert SECONDS - 1e-3 <= info["video_duration"] <= SECONDS + frame_seconds + 1e-3

    decoded, decoded_fps = read_video_frames(path)
    assert decoded_fps == exact_fps
    assert decoded.shape == (count, height + height % 2, width + width % 2, 3)
    error = np.abs(decoded[:, :height, :width].astype(np.int16) - frames.astype(np.int16))
    assert error.mean() < 8, error.mean()
    # Frame order survives: each decoded frame is nearest to its own source frame.
    assert np.abs(decoded[-1, :height, :width].astype(np.int16) - frames[0]).mean() > error[-1].mean()
    if width % 2:  # the padding column repeats the last column
        assert np.abs(decoded[:, :height, width].astype(np.int16) - frames[:, :, -1]).mean() < 8

    samples, rate = read_audio(path)
    assert rate == SR
    assert len(samples) == len(audio)  # AAC priming and end padding removed
    assert samples.dtype == np.float32
    assert abs(dominant_frequency(samples, rate) - 440.0) < 2.0
    # No shift: AAC is lossy, but it lines up with the input sample for sample.
    core = slice(2048, len(audio) - 2048)
    assert np.sqrt(np.mean((samples[core] - audio[core]) ** 2)) < 0.02


@pytest.mark.parametrize("size", [(48, 64), (49, 65)], ids=["64x48", "65x49"])
def test_planes_converted_on_the_device_encode_like_bgr_frames(tmp_path, size):
    """write_i420 (planes from bgr_to_i420, as the GPU pipeline writes) gives the video write_frames gives,
    in a stream tagged BT.601 limited range, so players decode the colours that were meant."""
    from talkrt.runtime.yuv import bgr_to_i420

    av = pytest.importorskip("av")
    height, width = size
    audio = tone()
    frames = gradient_frames(num_video_frames(len(audio), 25, SR), height, width)
    decoded = {}
    for name, write in [("bgr", lambda w: w.write_frames(frames)), ("i420", lambda w: w.write_i420(bgr_to_i420(torch.from_numpy(frames))))]:
        path = tmp_path / f"{name}.mp4"
        with VideoWriter(path, 25, audio, SR) as writer:
            write(writer)
        with av.open(str(path)) as container:
            context = container.streams.video[0].codec_context
            assert (context.colorspace, context.color_range, context.color_primaries) == (6, 1, 6)  # SMPTE170M, MPEG
        decoded[name] = read_video_frames(path)[0][:, :height, :width].astype(np.int16)
    error = {name: np.abs(images - frames).mean() for name, images in decoded.items()}
    assert error["bgr"] < 3.5, error
    # libswscale truncates (half a level low); the device's rounded planes come out no worse.
    assert error["i420"] <= error["bgr"], error


def test_bad_planes_are_refused(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", 25, expect_exact=False) as writer:
        for bad in [np.zeros((1, 9, 7), np.uint8), np.zeros((1, 8, 8), np.uint8), np.zeros((1, 9, 8), np.float32), np.zeros((9, 8), np.uint8)]:
            with pytest.raises(ValueError, match="yuv420p planes"):
                writer.write_i420(bad)
        writer.write_i420(np.full((2, 9, 8), 128, np.uint8))
    assert probe(tmp_path / "out.mp4")["num_frames"] == 2


def test_mp4_without_audio_and_unsupported_aac_rate(tmp_path):
    frames = gradient_frames(5, 32, 48)
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, 25) as writer:  # no audio: any frame count
        writer.write_frames(frames)
    info = probe(silent)
    assert info["num_frames"] == 5 and info["audio_codec"] is None
    with pytest.raises(TalkrtError, match="no audio stream"):
        read_audio(silent)

    # 20 kHz is not an AAC rate: the track is encoded at 48 kHz, its duration unchanged.
    rate = 20000
    audio = tone(int(rate * 0.5), rate)
    resampled = tmp_path / "20k.mp4"
    count = num_video_frames(len(audio), 25, rate)
    with VideoWriter(resampled, 25, audio, rate) as writer:
        writer.write_frames(gradient_frames(count, 32, 48))
    info = probe(resampled)
    assert info["audio_rate"] == 48000
    assert info["audio_duration"] == pytest.approx(0.5, abs=1e-3)
    samples, got_rate = read_audio(resampled, target_rate=rate)
    assert got_rate == rate and len(samples) == len(audio)
    assert abs(dominant_frequency(samples, rate) - 440.0) < 3.0


def test_audio_length_exact_at_44k(tmp_path):
    # 30001 samples is not a whole number of milliseconds, nor of AAC frames.
    rate = 44100
    audio = tone(30001, rate)
    path = tmp_path / "44k.mp4"
    count = num_video_frames(len(audio), NTSC, rate)
    with VideoWriter(path, NTSC, audio, rate) as writer:
        writer.write_frames(gradient_frames(count, 32, 48))
    info = probe(path)
    assert info["audio_rate"] == rate and info["num_frames"] == count == 21
    assert info["audio_duration"] == len(audio) / rate
    samples, got_rate = read_audio(path)
    assert got_rate == rate and len(samples) == len(audio)


def audio_packets(path) -> list[tuple[int, bytes]]:
    """The audio track's AAC packets as muxed: (pts, payload)."""
    import av

    with av.open(str(path)) as container:
        return [(packet.pts, bytes(packet)) for packet in container.demux(container.streams.audio[0]) if packet.size]


@pytest.mark.parametrize("rate", [SR, 22050, 20000], ids=["16k", "22.05k", "20k-resampled"])
def test_appended_audio_makes_the_one_shot_track(tmp_path, rate):
    """A streamed track (append_audio, in uneven chunks, numpy and torch, some ahead of the frames that
    show them, some behind) is the track a one-shot writer makes of the same samples: the same AAC
    packets and the same decoded samples. 20 kHz is not an AAC rate: resampled at close."""
    audio = tone(int(rate * SECONDS), rate, freq=300.0) + tone(int(rate * SECONDS), rate, freq=1234.0) * 0.3
    count = num_video_frames(len(audio), 25, rate)
    frames = gradient_frames(count, 32, 48)
    whole = tmp_path / "whole.mp4"
    with VideoWriter(whole, 25, audio, rate) as writer:
        for start in range(0, count, 4):
            writer.write_frames(frames[start : start + 4])

    streamed = tmp_path / "streamed.mp4"
    with VideoWriter(streamed, 25, sample_rate=rate, audio_follows=True) as writer:
        assert writer.expected_frames is None and not writer.audio_complete
        writer.write_frames(frames[:10])  # 0.4 s of video before any audio
        written = 10
        for i, start in enumerate(range(0, len(audio), 777)):  # 777: no whole number of AAC frames
            chunk = audio[start : start + 777]
            writer.append_audio(torch.from_numpy(chunk) if i % 2 else chunk)
            if i % 3 == 2 and written < count:  # 2 frames per 2331 samples: the audio catches up, then leads
                writer.write_frames(frames[written : written + 2])
                written += 2
        writer.write_frames(frames[written:])
    assert writer.audio_samples == len(audio) and writer.expected_frames == count and writer.frames_written == count
    assert probe(streamed)["num_frames"] == count
    assert audio_packets(streamed) == audio_packets(whole)
    decoded, decoded_rate = read_audio(streamed)
    expected, expected_rate = read_audio(whole)
    assert decoded_rate == expected_rate and np.array_equal(decoded, expected)
    assert np.sqrt(np.mean((read_audio(streamed, target_rate=rate)[0][2048:-2048] - audio[2048:-2048]) ** 2)) < 0.05


def test_a_streamed_track_is_counted_when_it_ends(tmp_path):
    with VideoWriter(tmp_path / "whole.mp4", 25, tone(), SR) as writer:
        with pytest.raises(ValueError, match="audio_follows=True"):
            writer.append_audio(tone(100))  # a track given whole takes nothing more
        writer.write_frames(gradient_frames(33, 32, 48))
    with pytest.raises(TalkrtError, match="34 video frames written, but 20800 audio samples"):
        with VideoWriter(tmp_path / "streamed.mp4", 25, sample_rate=SR, audio_follows=True) as writer:
            writer.append_audio(tone()[:10000])
            writer.write_frames(gradient_frames(34, 32, 48))  # more than the audio so far: known only at the end
            writer.append_audio(tone()[10000:])
    with pytest.raises(ValueError, match="1-D float"):
        VideoWriter(tmp_path / "bad.mp4", 25, sample_rate=SR, audio_follows=True).append_audio(np.zeros((2, 5), np.float32))
    assert leftovers(tmp_path) == ["whole.mp4"]


# ------------------------------------------------------------------- atomicity and counts


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, 25, tone(), SR) as writer:
            writer.write_frames(gradient_frames(10, 48, 64))
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_exception_keeps_an_existing_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 25, tone(), SR) as writer:
            writer.write_frames(gradient_frames(3, 48, 64))
            raise RuntimeError("boom")
    assert path.read_bytes() == b"previous"
    assert leftovers(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_frame_count_is_refused(tmp_path, delta):
    path = tmp_path / "out.mp4"
    count = num_video_frames(NUM_SAMPLES, 25, SR) + delta
    with pytest.raises(TalkrtError) as raised:
        with VideoWriter(path, 25, tone(), SR) as writer:
            writer.write_frames(gradient_frames(count, 48, 64))
    message = str(raised.value)
    assert "\n" not in message and "33" in message
    assert leftovers(tmp_path) == []


def test_no_frames_is_refused(tmp_path):
    with pytest.raises(TalkrtError, match="no frames"):
        with VideoWriter(tmp_path / "out.mp4", 25, tone(), SR):
            pass
    assert leftovers(tmp_path) == []


def test_inexact_count_allowed_when_not_expected(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 25, tone(), SR, expect_exact=False) as writer:
        writer.write_frames(gradient_frames(20, 48, 64))
    info = probe(path)
    assert info["num_frames"] == 20
    assert info["audio_duration"] == pytest.approx(SECONDS, abs=1e-3)


# ------------------------------------------------------------------- audio in


def test_read_audio_wav_stereo_44k_to_16k(tmp_path):
    rate = 44100
    t = np.arange(int(rate * 0.7)) / rate
    stereo = np.stack([0.6 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, rate, subtype="PCM_16")

    native, native_rate = read_audio(path)
    reference = soundfile.read(path, dtype="float32")[0].mean(axis=1, dtype=np.float32)
    assert native_rate == rate and native.dtype == np.float32
    np.testing.assert_allclose(native, reference, atol=1e-7)

    samples, got_rate = read_audio(path, target_rate=SR)
    assert got_rate == SR and samples.dtype == np.float32
    assert len(samples) == resampled_length(len(stereo), rate, SR)
    expected = resample(torch.from_numpy(native), rate, SR).numpy()
    np.testing.assert_array_equal(samples, expected)  # the same resampler as the rest of talkrt
    assert abs(dominant_frequency(samples, SR) - 440.0) < 3.0


def test_read_audio_flac_is_exact(tmp_path):
    audio = np.round(tone() * 32767) / 32768
    path = tmp_path / "tone.flac"
    soundfile.write(path, audio, SR, subtype="PCM_16")
    samples, rate = read_audio(path)
    assert rate == SR
    np.testing.assert_array_equal(samples, audio.astype(np.float32))


def test_read_audio_errors_are_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\nat all\n")
    for bad in (text, tmp_path / "missing.wav"):
        with pytest.raises(TalkrtError) as raised:
            read_audio(bad)
        message = str(raised.value)
        assert message and "\n" not in message and bad.name in message


# ------------------------------------------------------------------- images


def _encode_image(path, image_bgr: np.ndarray, codec: str, pix_fmt: str) -> None:
    import av

    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream(codec, rate=1)
        stream.height, stream.width = image_bgr.shape[:2]
        stream.pix_fmt = pix_fmt
        frame = av.VideoFrame.from_ndarray(image_bgr, format="bgr24").reformat(format=pix_fmt)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_read_image_png_and_jpeg(tmp_path):
    image = gradient_frames(1, 37, 51)[0]
    png = tmp_path / "face.png"
    _encode_image(png, image, "png", "rgb24")
    decoded = read_image(png)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)  # lossless, and BGR order kept

    jpeg = tmp_path / "face.jpg"
    _encode_image(jpeg, image, "mjpeg", "yuvj444p")
    decoded = read_image(jpeg)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(np.int16) - image).mean() < 4

    with pytest.raises(TalkrtError, match="not found"):
        read_image(tmp_path / "missing.png")


# ------------------------------------------------------------------- A/V chunks


@pytest.mark.parametrize("fps", [25, 29.97, "30000/1001", 24])
def test_iter_av_chunks_partition_the_audio(fps):
    audio = tone()
    count = num_video_frames(len(audio), fps, SR)
    frames = gradient_frames(count, 8, 8)
    batches = [frames[:5], frames[5:6], frames[6:]]  # batches and frames mix freely
    chunks = list(iter_av_chunks(batches, audio, SR, fps))
    assert [chunk.index for chunk in chunks] == list(range(count))
    assert all(isinstance(chunk, FrameChunk) for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate([chunk.audio for chunk in chunks]), audio)
    for index, frame, piece in chunks:  # unpacks like a tuple
        np.testing.assert_array_equal(frame, frames[index])
        start = frame_start_sample(index, fps, SR)
        np.testing.assert_array_equal(piece, audio[start : start + len(piece)])
    lengths = [len(chunk.audio) for chunk in chunks]
    assert max(lengths[:-1]) - min(lengths[:-1]) <= 1
    assert 0 < lengths[-1] <= max(lengths[:-1])


def test_iter_av_chunks_checks_the_frame_count():
    audio = torch.from_numpy(tone())  # torch audio slices as well
    count = num_video_frames(len(audio), NTSC, SR)
    frames = torch.zeros(count + 1, 4, 4, 3, dtype=torch.uint8)
    with pytest.raises(TalkrtError, match="more video frames"):
        list(iter_av_chunks([frames], audio, SR, NTSC))
    with pytest.raises(TalkrtError, match="expected 39"):
        list(iter_av_chunks([frames[: count - 1]], audio, SR, NTSC))
    chunks = list(iter_av_chunks([frames[:count]], audio, SR, NTSC))
    assert torch.equal(torch.cat([chunk.audio for chunk in chunks]), audio)
