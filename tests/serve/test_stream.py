"""WS /v1/stream against a real `talkrt serve`: frames and their times equal an in-process Session,
concurrent sessions, interruption, refusals, text with a voice, metrics, released sessions."""

from __future__ import annotations

import asyncio
import json
import re
import time

import cv2
import httpx
import numpy as np
import pytest
import websockets
from clients import Received, closed_with, metric, open_session, pcm16, receive_until_end, send_audio, start_message

from talkrt.runtime.synthetic import synthetic_speech

RATE, FPS, CHUNK = 16000, 25, 640  # 40 ms chunks
JPEG_QUALITY = 90  # the server's


@pytest.fixture(scope="module")
def reference(wav2lip_onnx, serve_avatar):
    """What an in-process Session on the same graph and avatar shows for a 1 s clip pushed in 40 ms chunks."""
    from talkrt.runtime.pipeline import PipelineOptions, pipeline_from_files
    from talkrt.runtime.session import Session

    audio = pcm16(synthetic_speech(1.0, seed=3)).astype(np.float32) / 32768.0  # what the server decodes
    pipeline = pipeline_from_files(serve_avatar, "wav2lip", "ort", wav2lip_onnx, "cpu", PipelineOptions(fps=FPS, batch_size=8, profile=False))
    session = Session(pipeline, RATE)
    frames = [f for i in range(0, len(audio), CHUNK) for f in session.push(audio[i : i + CHUNK])] + session.flush()
    pipeline.close()
    images = np.concatenate([f.images.cpu().numpy() for f in frames])
    return audio, images, np.concatenate([f.pts for f in frames])


def decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def assert_same_frames(received: Received, reference) -> None:
    """pts exactly floor(k * rate / fps); images equal the reference after the same JPEG encode
    (the server and the reference run the same graph on the same CPU, so the frames are equal and
    so are their JPEG bytes; the decoded pixels are compared to show where they differ if not)."""
    _, images, pts = reference
    assert [f["index"] for f in received.frames] == list(range(len(images)))
    assert [f["pts"] for f in received.frames] == [k * RATE // FPS for k in range(len(images))] == pts.tolist()
    assert all(f["rate"] == RATE for f in received.frames)
    for frame, image in zip(received.frames, images):
        expected = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        if frame["jpeg"] != expected:
            difference = np.abs(decode(frame["jpeg"]).astype(int) - decode(expected).astype(int))
            raise AssertionError(f"frame {frame['index']} differs: max {difference.max()}, mean {difference.mean():.3f}")


async def stream_clip(url: str, audio: np.ndarray) -> Received:
    websocket, ready = await open_session(url)
    async with websocket:
        assert (ready["fps"], ready["sample_rate"], ready["width"], ready["height"]) == ("25", RATE, 256, 256)
        await send_audio(websocket, audio, CHUNK)
        await websocket.send(json.dumps({"type": "flush"}))
        received = await receive_until_end(websocket)
        await websocket.send(json.dumps({"type": "stop"}))
    return received


def test_stream_gives_the_sessions_frames_at_exact_times(voice_server, reference) -> None:
    received = asyncio.run(stream_clip(voice_server.ws_url, reference[0]))
    assert_same_frames(received, reference)
    assert received.end["pts"] == len(reference[1]) * RATE // FPS
    assert received.audio == []  # audio messages only for spoken text


def test_two_concurrent_sessions_each_get_the_single_sessions_frames(voice_server, reference) -> None:
    async def both():
        return await asyncio.gather(stream_clip(voice_server.ws_url, reference[0]), stream_clip(voice_server.ws_url, reference[0]))

    for received in asyncio.run(both()):
        assert_same_frames(received, reference)


def interrupted(ws_url: str, audio, frames: str = "jpeg") -> tuple[Received, list[dict], int]:
    """Half a second of ``audio``, an interrupt, then all of it and a flush: what came, the second
    utterance's frames (checked to be its 25 frames on the clock) and where it starts."""

    async def run() -> Received:
        websocket, _ = await open_session(ws_url, frames=frames)
        async with websocket:
            await send_audio(websocket, audio[: RATE // 2], CHUNK)
            await websocket.send(json.dumps({"type": "interrupt"}))
            await send_audio(websocket, audio, CHUNK)
            await websocket.send(json.dumps({"type": "flush"}))
            return await receive_until_end(websocket)

    received = asyncio.run(run())
    start = received.end["pts"] - RATE  # the second utterance: 1 s, 25 frames, ending on a frame boundary
    second = [f for f in received.frames if f["pts"] >= start]
    assert [f["pts"] for f in second] == [start + k * RATE // FPS for k in range(FPS)]
    return received, second, start


def test_interrupt_drops_the_utterance_and_the_clock_goes_on(voice_server, reference) -> None:
    received, second, start = interrupted(voice_server.ws_url, reference[0])
    indices = [f["index"] for f in received.frames]
    assert indices == sorted(set(indices))  # frames of the dropped utterance may come before, never after
    assert start % (RATE // FPS) == 0 and start >= 0


@pytest.mark.parametrize(
    "messages, code, reason",
    [
        ([b"\x00\x01"], 1008, "before any audio"),
        (["not json"], 1008, "JSON object"),
        ([start_message(), json.dumps({"type": "dance"})], 1008, "unknown message type"),
        ([start_message(rate=44100 * 2)], 1008, "sample_rate"),
        ([start_message(format="float32")], 1003, "not supported"),
        ([start_message(frames="vp9")], 1003, 'frames \'vp9\' is not supported: ask for "jpeg", "raw" (RGB24) or "h264"'),
        ([start_message(), b"\x00\x01\x02"], 1003, "even count"),
        ([start_message(), b"\x00\x00" * 16000 * 3], 1008, "at most"),
        ([start_message(), json.dumps({"type": "start", "sample_rate": 16000})], 1008, "once"),
        ([start_message(), json.dumps({"type": "text", "text": ""})], 1008, "something to say"),
    ],
)
def test_a_bad_message_closes_only_that_session(voice_server, reference, messages, code, reason) -> None:
    async def run():
        async with websockets.connect(voice_server.ws_url, max_size=None) as bystander:
            await bystander.send(start_message())
            assert json.loads(await bystander.recv())["type"] == "ready"
            async with websockets.connect(voice_server.ws_url, max_size=None) as websocket:
                for message in messages:
                    await websocket.send(message)
                closed = await closed_with(websocket)
            await send_audio(bystander, reference[0][:CHUNK * 5], CHUNK)
            await bystander.send(json.dumps({"type": "flush"}))
            return closed, await receive_until_end(bystander)

    (got_code, got_reason, before), bystander = asyncio.run(run())
    assert got_code == code and reason in got_reason
    assert before[-1]["type"] == "error" and reason in before[-1]["reason"]
    assert len(bystander.frames) == 5


def test_text_session_sends_the_audio_its_frames_show(voice_server) -> None:
    async def run() -> Received:
        websocket, _ = await open_session(voice_server.ws_url)
        async with websocket:
            await websocket.send(json.dumps({"type": "text", "text": "hello there"}))
            return await receive_until_end(websocket)

    received = asyncio.run(run())
    assert received.frames and received.audio
    frame_pts = [f["pts"] for f in received.frames]
    assert frame_pts == [k * RATE // FPS for k in range(len(frame_pts))]
    assert {a["pts"] for a in received.audio} <= set(frame_pts)  # each audio message starts at a frame
    assert all(a["rate"] == RATE for a in received.audio)
    # the audio covers exactly the frames: from frame 0 to the end of the last
    assert received.audio[0]["pts"] == 0
    assert sum(len(a["pcm"]) // 2 for a in received.audio) == received.end["pts"] == len(frame_pts) * RATE // FPS
    starts = [a["pts"] for a in received.audio]
    assert all(b - a == len(m["pcm"]) // 2 for a, b, m in zip(starts, starts[1:], received.audio))


def test_max_sessions_and_token(serve_factory, reference) -> None:
    server = serve_factory("--max-sessions", "1", "--token", "s3cret")
    assert httpx.get(server.url + "/healthz").status_code == 401
    assert httpx.get(server.url + "/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(server.url + "/healthz", headers={"Authorization": "Bearer s3cret"}).json()["max_sessions"] == 1

    async def run():
        async with websockets.connect(server.ws_url) as refused:
            unauthorized = await closed_with(refused)
        first, _ = await open_session(server.ws_url + "?token=s3cret")
        async with first:
            async with websockets.connect(server.ws_url, additional_headers={"Authorization": "Bearer s3cret"}) as second:
                too_many = await closed_with(second)  # refused at the door, before its start message
            await send_audio(first, reference[0][: CHUNK * 3], CHUNK)
            await first.send(json.dumps({"type": "flush"}))
            kept = await receive_until_end(first)
        return unauthorized, too_many, kept

    unauthorized, too_many, kept = asyncio.run(run())
    assert unauthorized[0] == 1008 and "token" in unauthorized[1] and unauthorized[2][-1]["type"] == "error"
    assert too_many[0] == 1013 and too_many[2] == [{"type": "error", "reason": "1 sessions already open (--max-sessions 1); try again later"}]
    assert len(kept.frames) == 3


def test_sessions_are_released_and_metrics_add_up(voice_server, reference) -> None:
    """20 connect/stream/disconnect cycles (some leaving mid-utterance; JPEG, H.264 and raw frames
    in turn): the session count returns to 0, per-session series go, and memory stays within a
    loose bound."""
    def poll_sessions_zero() -> None:
        deadline = time.monotonic() + 60
        while httpx.get(voice_server.url + "/healthz").json()["sessions"] != 0:
            assert time.monotonic() < deadline, "sessions were not released"
            time.sleep(0.1)

    async def cycle(number: int) -> str:
        websocket, ready = await open_session(voice_server.ws_url, frames=("jpeg", "h264", "raw")[number % 3])
        await send_audio(websocket, reference[0][: CHUNK * 3], CHUNK)
        text = ""
        if number % 2:
            await websocket.send(json.dumps({"type": "flush"}))
            await receive_until_end(websocket)
            text = httpx.get(voice_server.url + "/metrics").text  # the session's own series, while it is open
            session = f'{{session="{ready["session"]}"}}'
            assert metric(text, "talkrt_session_frames_sent_total", session) == 3
            assert metric(text, "talkrt_session_time_to_first_frame_seconds", session) > 0
            assert metric(text, "talkrt_session_frame_latency_seconds", session) > 0
            assert metric(text, "talkrt_session_deadline_misses_total", session) <= 3
        await websocket.close()
        return text

    assert asyncio.run(cycle(1))
    poll_sessions_zero()
    before = metric(httpx.get(voice_server.url + "/metrics").text, "talkrt_device_memory_bytes")
    for number in range(20):
        asyncio.run(cycle(number))
    poll_sessions_zero()
    text = httpx.get(voice_server.url + "/metrics").text
    assert metric(text, "talkrt_device_memory_bytes") < before + 300e6
    assert metric(text, "talkrt_sessions_active") == 0
    assert metric(text, "talkrt_sessions_total") >= 21
    assert metric(text, "talkrt_frames_sent_total") >= 30
    assert metric(text, "talkrt_time_to_first_frame_seconds_count") >= 10
    assert metric(text, "talkrt_frame_latency_seconds_count") >= 30
    assert metric(text, "talkrt_deadline_misses_total") >= 0 and metric(text, "talkrt_frames_dropped_total") >= 0
    assert 0 < metric(text, "talkrt_batch_fill_ratio") <= 1
    for family in ("frames_sent_total", "time_to_first_frame_seconds", "frame_latency_seconds", "deadline_misses_total"):
        assert f"talkrt_session_{family}{{" not in text  # per-session series end with their session


def test_idle_frames_keep_coming_without_audio(voice_server) -> None:
    """With "idle": true the face moves at the frame rate before any audio: frames on the clock
    from 0, showing the avatar at rest (digital silence)."""
    async def run() -> list[dict]:
        async with websockets.connect(voice_server.ws_url, max_size=None) as websocket:
            await websocket.send(start_message(idle=True))
            assert json.loads(await websocket.recv())["type"] == "ready"
            frames = []
            while len(frames) < 8:
                message = json.loads(await asyncio.wait_for(websocket.recv(), 60))
                assert message["type"] == "frame", message
                frames.append(message)
                assert isinstance(await websocket.recv(), bytes)
            return frames

    frames = asyncio.run(run())
    assert [f["pts"] for f in frames] == [k * RATE // FPS for k in range(8)]


def test_audio_sent_while_text_is_spoken_follows_it(voice_server, reference) -> None:
    async def run() -> tuple[Received, Received]:
        websocket, _ = await open_session(voice_server.ws_url)
        async with websocket:
            await websocket.send(json.dumps({"type": "text", "text": "hello"}))
            await send_audio(websocket, reference[0], CHUNK)
            await websocket.send(json.dumps({"type": "flush"}))
            return await receive_until_end(websocket), await receive_until_end(websocket)

    spoken, heard = asyncio.run(run())
    assert spoken.audio and not heard.audio
    start = spoken.end["pts"]
    assert [f["pts"] for f in heard.frames] == [start + k * RATE // FPS for k in range(FPS)]
    assert heard.end["pts"] == start + RATE


def test_a_busy_device_refuses_new_sessions(serve_factory, reference) -> None:
    """Admission by load: while the device has been busy more than --max-load of the last seconds,
    a new session is refused with the reason instead of making every session late."""
    server = serve_factory("--max-load", "0.001")

    async def run():
        first, _ = await open_session(server.ws_url)
        async with first:
            await send_audio(first, reference[0][: CHUNK * 5], CHUNK)
            await first.send(json.dumps({"type": "flush"}))
            kept = await receive_until_end(first)  # the device has worked for these frames just now
            async with websockets.connect(server.ws_url) as second:
                busy = await closed_with(second)
        return kept, busy

    kept, (code, _, messages) = asyncio.run(run())
    assert len(kept.frames) == 5
    assert code == 1013 and messages[-1]["type"] == "error"
    assert re.fullmatch(r"the device is busy \d+ % of the time with 1 sessions \(--max-load 0\.001\): another would make frames late; try again later", messages[-1]["reason"])
    text = httpx.get(server.url + "/metrics").text
    assert metric(text, "talkrt_sessions_refused_total", '{reason="busy"}') == 1
    assert 0 < metric(text, "talkrt_device_load_ratio") <= 1


def test_raw_frames_are_the_sessions_frames_exactly(voice_server, reference) -> None:
    """"frames": "raw" sends each frame as RGB24 bytes: bit for bit the in-process Session's frames."""
    audio, images, pts = reference

    async def run():
        websocket, ready = await open_session(voice_server.ws_url, frames="raw")
        async with websocket:
            await send_audio(websocket, audio, CHUNK)
            await websocket.send(json.dumps({"type": "flush"}))
            received = await receive_until_end(websocket)
        return ready, received

    ready, received = asyncio.run(run())
    assert [f["pts"] for f in received.frames] == pts.tolist()
    got = np.stack([np.frombuffer(f["jpeg"], np.uint8).reshape(ready["height"], ready["width"], 3) for f in received.frames])
    np.testing.assert_array_equal(got, images[..., ::-1])  # RGB on the wire, BGR in the pipeline


H264_MIN_PSNR_DB = 35.0  # measured 39.5 to 39.7 dB (yuv420p alone, without x264, gives 40.0 on these frames)


def decode_h264(packets: list[bytes]) -> list[np.ndarray]:
    """RGB frames of the concatenated Annex-B packets, through a fresh PyAV decoder."""
    import av

    decoder = av.CodecContext.create("h264", "r")
    parsed = decoder.parse(b"".join(packets)) + decoder.parse(None)
    return [frame.to_ndarray(format="rgb24") for packet in parsed for frame in decoder.decode(packet)] + \
        [frame.to_ndarray(format="rgb24") for frame in decoder.decode(None)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_h264_frames_decode_to_the_raw_sessions_frames(voice_server, reference) -> None:
    """"frames": "h264": one packet a frame, at the times a raw session gets on the same audio; a
    keyframe where each utterance starts; decoded, the frames are close to the raw ones, and a
    decoder that starts at the second utterance's keyframe decodes all of it."""
    audio = reference[0]

    async def two_utterances(frames: str):
        websocket, ready = await open_session(voice_server.ws_url, frames=frames)
        async with websocket:
            utterances = []
            for clip in (audio, audio[: RATE * 2 // 5]):  # 25 frames, then 10
                await send_audio(websocket, clip, CHUNK)
                await websocket.send(json.dumps({"type": "flush"}))
                utterances.append(await receive_until_end(websocket))
        return ready, utterances

    async def both():
        return await asyncio.gather(two_utterances("h264"), two_utterances("raw"))

    (ready, h264), (_, raw) = asyncio.run(both())
    assert [len(u.frames) for u in h264] == [len(u.frames) for u in raw] == [FPS, 10]
    sent, shown = [f for u in h264 for f in u.frames], [f for u in raw for f in u.frames]
    assert [(f["index"], f["pts"], f["rate"]) for f in sent] == [(f["index"], f["pts"], f["rate"]) for f in shown]
    assert [f["key"] for f in sent] == [True] + [False] * (FPS - 1) + [True] + [False] * 9
    assert all("key" not in f for f in shown)
    first = sent[0]["jpeg"]
    assert first.startswith(b"\x00\x00\x00\x01")  # Annex-B, the SPS and PPS in band
    from talkrt.serve.h264 import sps_of

    assert ready["codec"] == "avc1." + sps_of(first)[1:4].hex().upper()
    expected = [np.frombuffer(f["jpeg"], np.uint8).reshape(ready["height"], ready["width"], 3) for f in shown]
    decoded = decode_h264([f["jpeg"] for f in sent])
    assert len(decoded) == len(sent)
    quality = [psnr(a, b) for a, b in zip(decoded, expected)]
    assert min(quality) > H264_MIN_PSNR_DB, quality
    rejoined = decode_h264([f["jpeg"] for f in h264[1].frames])  # a decoder joining at the second utterance
    assert len(rejoined) == 10
    assert min(psnr(a, b) for a, b in zip(rejoined, expected[FPS:])) > H264_MIN_PSNR_DB


def test_h264_after_an_interruption_still_decodes(voice_server, reference) -> None:
    """Frames of an interrupted utterance not yet sent are dropped, so the next utterance starts
    on a keyframe: every frame the client gets decodes, from the start or from that keyframe."""
    received, second, _ = interrupted(voice_server.ws_url, reference[0], frames="h264")
    assert second[0]["key"] and not any(f["key"] for f in second[1:])
    assert received.frames[0]["key"]
    assert len(decode_h264([f["jpeg"] for f in received.frames])) == len(received.frames)
    assert len(decode_h264([f["jpeg"] for f in second])) == FPS
