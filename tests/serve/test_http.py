"""The HTTP side of a real `talkrt serve`: /healthz, /v1/render (the frames `talkrt run` writes),
refusals that leave the server serving, the page's 404s, bad options and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import numpy as np
from clients import closed_with, open_session

from talkrt.runtime.media import read_audio, read_video_frames, write_wav
from talkrt.runtime.synthetic import synthetic_speech


def talkrt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talkrt", *args], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_healthz(voice_server) -> None:
    health = httpx.get(voice_server.url + "/healthz").json()
    assert health == {"status": "ok", "renderer": "wav2lip", "backend": "ort", "device": "cpu", "sessions": 0, "max_sessions": 3, "voice": True}


def test_render_writes_what_talkrt_run_writes(voice_server, wav2lip_onnx, serve_avatar, tmp_path) -> None:
    speech = tmp_path / "speech.wav"
    write_wav(speech, synthetic_speech(0.8, seed=4), 16000)
    response = httpx.post(voice_server.url + "/v1/render", content=speech.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=300)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    served = tmp_path / "served.mp4"
    served.write_bytes(response.content)
    offline = tmp_path / "offline.mp4"
    result = talkrt("run", "--audio", str(speech), "--avatar", str(serve_avatar), "--backend", "ort", "--model", str(wav2lip_onnx), "--device", "cpu", "--out", str(offline))
    assert result.returncode == 0, result.stderr
    # the same frames through the same encoder: the decoded videos are identical
    served_frames, served_fps = read_video_frames(served)
    offline_frames, offline_fps = read_video_frames(offline)
    assert served_fps == offline_fps == 25 and served_frames.shape == offline_frames.shape == (20, 256, 256, 3)
    assert np.array_equal(served_frames, offline_frames)
    assert np.array_equal(read_audio(served)[0], read_audio(offline)[0])


def test_render_text_writes_what_talkrt_run_text_writes(voice_server, wav2lip_onnx, serve_avatar, tiny_voice, tmp_path) -> None:
    response = httpx.post(voice_server.url + "/v1/render", json={"text": "hello there"}, timeout=300)
    assert response.status_code == 200 and response.content[4:8] == b"ftyp"
    served = tmp_path / "served.mp4"
    served.write_bytes(response.content)
    offline = tmp_path / "offline.mp4"
    result = talkrt("run", "--text", "hello there", "--tts", str(tiny_voice), "--avatar", str(serve_avatar), "--backend", "ort",
                    "--model", str(wav2lip_onnx), "--device", "cpu", "--out", str(offline))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(read_video_frames(served)[0], read_video_frames(offline)[0])
    assert np.array_equal(read_audio(served)[0], read_audio(offline)[0])


def test_bad_renders_are_refused_and_the_server_goes_on(serve_factory, tmp_path) -> None:
    server = serve_factory("--max-body-mb", "0.05")
    garbage = httpx.post(server.url + "/v1/render", content=b"this is not audio", headers={"Content-Type": "audio/wav"})
    assert garbage.status_code == 400 and "cannot decode audio from the body" in garbage.json()["error"]
    assert "\n" not in garbage.json()["error"] and str(tmp_path) not in garbage.text
    too_large = httpx.post(server.url + "/v1/render", content=b"\0" * 60_000, headers={"Content-Type": "application/octet-stream"})
    assert too_large.status_code == 413 and "--max-body-mb" in too_large.json()["error"]
    no_voice = httpx.post(server.url + "/v1/render", json={"text": "hello"})
    assert no_voice.status_code == 400 and "--tts" in no_voice.json()["error"]
    assert httpx.get(server.url + "/static/../config.py").status_code == 404
    assert httpx.get(server.url + "/static/no-such-file.js").status_code == 404
    speech = tmp_path / "short.wav"
    write_wav(speech, synthetic_speech(0.2, seed=1), 16000)
    assert httpx.post(server.url + "/v1/render", content=speech.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=300).status_code == 200

    async def text_without_voice():
        websocket, _ = await open_session(server.ws_url)
        async with websocket:
            await websocket.send(json.dumps({"type": "text", "text": "hello"}))
            return await closed_with(websocket)

    code, reason, _ = asyncio.run(text_without_voice())
    assert code == 1008 and "--tts" in reason


def test_sigterm_closes_sessions_with_a_reason_and_exits_0(serve_factory) -> None:
    server = serve_factory()

    async def session_during_shutdown():
        websocket, _ = await open_session(server.ws_url)
        async with websocket:
            server.process.send_signal(15)
            return await closed_with(websocket)

    code, reason, messages = asyncio.run(session_during_shutdown())
    assert code == 1001 and "shutting down" in reason and messages[-1]["type"] == "error"
    assert server.stop() == 0
    assert "listening on http://127.0.0.1:" in server.output()


def test_bad_options_are_one_line_before_anything_loads(tmp_path) -> None:
    avatar = str(tmp_path / "missing.npz")
    cases = [
        (["--fps", "0"], "--fps"),
        (["--max-sessions", "0"], "--max-sessions 0"),
        (["--max-load", "1.5"], "--max-load 1.5"),
        (["--port", "70000"], "--port 70000"),
        (["--backend", "onnx"], "unknown backend"),
        (["--host", "not a host"], "--host"),
        (["--token", " "], "--token"),
    ]
    for extra, expected in cases:
        result = talkrt("serve", "--avatar", avatar, *extra)
        assert result.returncode == 2, (extra, result.stdout, result.stderr)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
