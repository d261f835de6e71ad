"""Text to video as it is spoken: a voice's chunks go into one streaming utterance and into the MP4's
audio track as they are made, with the real tiny VITS voice, Wav2Lip graph and writer."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest
import torch

from talkrt.runtime.align import num_video_frames
from talkrt.runtime.avatar import synthetic_avatar
from talkrt.runtime.media import probe, read_audio
from talkrt.runtime.pipeline import PipelineOptions, pipeline_from_files
from talkrt.runtime.profiler import JSON_SCHEMA
from talkrt.runtime.runs import RunRequest, render_to_file

TEXT = "hello there, how are you today? i am fine, thank you, and you?"


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("avatar") / "a.npz"
    synthetic_avatar(num_frames=3).save(path)
    return path


def test_streamed_text_run_writes_the_one_shot_video(tmp_path, avatar_file, tiny_voice, wav2lip_onnx) -> None:
    """The same MP4 as the one-shot text run (frame count, decoded audio for the same seed), and a
    profile with the tts stage and the text run's numbers."""
    common = dict(avatar=avatar_file, text=TEXT, tts=tiny_voice, model=wav2lip_onnx, device="cpu", batch_size=4)
    one_shot = render_to_file(RunRequest(out=tmp_path / "one_shot.mp4", **common))
    notes: list[str] = []
    streamed = render_to_file(RunRequest(out=tmp_path / "streamed.mp4", stream_chunk_ms=40, **common), notes.append)

    frames = probe(tmp_path / "one_shot.mp4")["num_frames"]
    assert frames > 10 and probe(tmp_path / "streamed.mp4")["num_frames"] == frames == streamed.frames
    expected, rate = read_audio(tmp_path / "one_shot.mp4")
    decoded, streamed_rate = read_audio(tmp_path / "streamed.mp4")
    assert streamed_rate == rate and len(decoded) == len(expected) == round(streamed.audio_seconds * rate)
    assert np.abs(decoded - expected).max() < 1e-3  # the voice's chunks stitch within 1e-4 of the one-shot speech

    assert streamed.stages["tts"].calls > 2 and streamed.stages["tts"].frames == 0  # a call per chunk, and one that finds the end
    assert 0 < streamed.text_to_first_audio_ms <= streamed.text_to_first_frame_ms <= streamed.wall_ms
    assert streamed.steady_real_time_factor > 0
    jsonschema.validate(streamed.to_json(), JSON_SCHEMA)
    assert any(line.startswith("tts: ") and "streamed" in line for line in notes)
    assert "tts" not in one_shot.stages and one_shot.text_to_first_audio_ms is None  # one shot: speech before the run


def test_frames_come_before_the_speech_is_finished(avatar_file, tiny_voice, wav2lip_onnx) -> None:
    """The order of the real generators: the first frames are out before the voice has made its last
    chunk, the chunks reach the pipeline as tensors, and the frames are those of the whole speech."""
    from talkrt.models.registry import voice

    speech = voice(tiny_voice)
    synthesizer, manifest = speech.load_voice(tiny_voice, "ort", "cpu")
    pipeline = pipeline_from_files(avatar_file, "wav2lip", "ort", wav2lip_onnx, "cpu", PipelineOptions(batch_size=2))
    chunks, rate = speech.speak_stream(TEXT, synthesizer, manifest, chunk_ms=40)
    events: list[tuple[str, int]] = []
    spoken: list[torch.Tensor] = []

    def made():
        for index, chunk in enumerate(chunks):
            events.append(("chunk", index))
            spoken.append(chunk)
            yield chunk

    frames = []
    for batch in pipeline.speech_frames(made(), rate, on_audio=lambda chunk: events.append(("audio", len(spoken) - 1))):
        events.append(("frames", batch.start))
        frames.append(batch.frames.clone())
    last_chunk = events.index(("chunk", len(spoken) - 1))
    first_frames = next(i for i, event in enumerate(events) if event[0] == "frames")
    assert len(spoken) > 3 and first_frames < last_chunk, events
    assert all(isinstance(chunk, torch.Tensor) for chunk in spoken)
    assert [event for event in events if event[0] == "audio"] == [("audio", i) for i in range(len(spoken))]  # each chunk to the track once, in order

    whole = torch.cat(spoken)
    streamed = torch.cat(frames)
    assert len(streamed) == num_video_frames(len(whole), pipeline.fps, rate)
    assert (streamed.int() - pipeline.frames(whole.numpy(), rate).int()).abs().max() <= 1  # streaming equals offline
