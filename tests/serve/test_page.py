"""The browser page of `talkrt serve` (talkrt/serve/static) in a real headless Chromium, driven by
Playwright against the real server: a WAV file goes in through the file input, the page paces it
out over WS /v1/stream, plays it through an AudioContext and draws the frames on its canvas when
the audio clock reaches them. The page's live numbers are read from ``window.talkrtStats``."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import pytest

from talkrt.runtime.media import write_wav
from talkrt.runtime.synthetic import synthetic_speech

SECONDS = 1.5
RATE = 16000
FPS = 25
EXPECTED_FRAMES = math.ceil(SECONDS * FPS)
# Lip sync. The page draws a frame on the first animation frame at which the audio clock has
# reached the frame's time, so a frame that arrived in time is drawn late by at most one display
# refresh (17 ms at 60 Hz) while the page's thread is free: the median of those offsets must stay
# within one video frame (40 ms, the smallest lip shift video can show). A loaded 2-core machine
# can hold back a single animation frame, so one frame may be up to three video frames late. A
# frame that arrived after its time (the server fell behind) is drawn at once: its offset is its
# lateness on arrival plus the same allowance.
MEDIAN_OFFSET_MS = 1000 / FPS
MAX_OFFSET_MS = 3 * 1000 / FPS
# The page's jitter buffer: how long after the first frame the audio starts. On the CPU a
# loaded 2-core machine renders the random-weight Wav2Lip slower than real time, so a buffer
# well above the page's default lets most frames arrive before their time (late ones are
# checked on their own below).
JITTER_MS = 3000
DEADLINE_S = 90.0  # the file lasts 1.5 s; the rest is the server's first frames on a slow CPU
LAUNCH_ARGS = [
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI installs it")
    pytest.skip(message)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("chromium is not installed (apt-get install chromium); the page test drives it")
    return path


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]'); the page test drives Chromium with it")
    return sync_playwright


@pytest.fixture
def browser_page():
    """A fresh page in headless Chromium, with the page's JS errors and console errors collected."""
    executable, sync_playwright = _chromium(), _sync_playwright()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
            page.on("console", lambda message: errors.append(f"console.{message.type}: {message.text}") if message.type == "error" else None)
            yield page, errors
        finally:
            browser.close()


def _stats(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.talkrtStats))")


def _canvas_painted(page) -> dict:
    """How many of the canvas's pixels differ from a blank canvas of the same size."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("video");
            const blank = document.createElement("canvas");
            blank.width = canvas.width;
            blank.height = canvas.height;
            const a = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            const b = blank.getContext("2d").getImageData(0, 0, blank.width, blank.height).data;
            let differ = 0;
            for (let i = 0; i < a.length; i += 4) {
                if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2] || a[i + 3] !== b[i + 3]) differ += 1;
            }
            return {differ, pixels: a.length / 4, width: canvas.width, height: canvas.height};
        }"""
    )


def drive_file(page, base_url: str, wav: Path) -> dict:
    """Opens the page, sends ``wav`` through its file input and waits until the frames are drawn."""
    page.goto(base_url.rstrip("/") + "/")
    page.wait_for_function("() => window.talkrtStats !== undefined")
    page.fill("#jitter", str(JITTER_MS))
    page.set_input_files("#file", str(wav))
    page.click("#play-file")
    # Done when (nearly) every frame came back and each received one was drawn or dropped, with
    # nothing new for half a second.
    deadline = time.monotonic() + DEADLINE_S
    stats, settled_since, last = _stats(page), None, None
    while time.monotonic() < deadline:
        stats = _stats(page)
        assert stats["state"] != "error", stats["errors"]
        counts = (stats["framesReceived"], stats["framesDrawn"], stats["framesDropped"])
        done = stats["framesReceived"] >= EXPECTED_FRAMES - 1 and counts[1] + counts[2] >= counts[0]
        if done and counts == last:
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= 0.5:
                break
        else:
            settled_since = None
        last = counts
        time.sleep(0.1)
    return stats


def test_page_plays_a_wav_file_in_sync(serve_factory, browser_page, tmp_path) -> None:
    page, errors = browser_page
    wav = write_wav(tmp_path / "speech.wav", synthetic_speech(SECONDS, RATE, seed=3), RATE)
    base_url = serve_factory().url
    stats = drive_file(page, base_url, wav)

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("TALKRT_SCREENSHOT_DIR"):
        out = Path(os.environ["TALKRT_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "talkrt-page.png")

    summary = {k: v for k, v in stats.items() if k not in ("avOffsets", "drawLog")}
    # Every frame of the utterance came back, each was drawn or dropped (counted), and most were
    # drawn: only frames that come too late, several at once (a render batch, the flush), are
    # dropped for the newest of them; a CPU that renders slower than real time makes a few.
    assert stats["framesReceived"] >= EXPECTED_FRAMES - 1, summary
    assert stats["framesDrawn"] + stats["framesDropped"] == stats["framesReceived"], summary
    assert stats["framesDrawn"] >= 0.6 * EXPECTED_FRAMES, summary
    assert stats["timeToFirstFrameMs"] is not None and stats["timeToFirstFrameMs"] > 0, summary
    assert stats["frameLatencyMeanMs"] is not None and stats["frameLatencyMeanMs"] >= 0, summary
    # The canvas shows the server's frames at the session's size, not a blank canvas.
    painted = _canvas_painted(page)
    assert (painted["width"], painted["height"]) == (stats["width"], stats["height"]), painted
    assert painted["differ"] > 0.5 * painted["pixels"], painted
    # The audio played: the context runs, its clock went past the utterance, and the page
    # scheduled the whole file on it.
    assert stats["audioContextState"] == "running", summary
    assert stats["audioContextTime"] >= SECONDS, summary
    assert stats["audioSecondsScheduled"] >= SECONDS - 0.05, summary
    # Lip sync: where each frame was drawn against the audio clock (see MEDIAN_OFFSET_MS).
    log = stats["drawLog"]
    assert len(log) == stats["framesDrawn"] and stats["avOffsets"] == [d["offsetMs"] for d in log], summary
    on_time = sorted(d["offsetMs"] for d in log if d["arrivalMs"] < 0)
    # The buffer holds the first frames at least, however far a slow server falls behind later.
    assert len(on_time) >= 5, (log, summary)
    assert all(offset >= 0 for offset in on_time), log  # never drawn before the audio reaches it
    assert on_time[len(on_time) // 2] <= MEDIAN_OFFSET_MS, (on_time, summary)
    assert on_time[-1] <= MAX_OFFSET_MS, (on_time, summary)
    late = [d for d in log if d["arrivalMs"] >= 0]
    assert all(d["offsetMs"] - d["arrivalMs"] <= MAX_OFFSET_MS for d in late), late
    # The page's own numbers are on screen.
    assert page.text_content("#s-drawn").strip() != "0"
    assert errors == [], errors


def test_page_streams_the_microphone_with_a_token(serve_factory, browser_page) -> None:
    """Chromium's fake capture device (a beeping tone) through the page's AudioWorklet: PCM16
    chunks at the session's rate go out as the microphone makes them, and frames come back. The
    server has a token: the page, its files, /healthz and the WebSocket all get it from the
    page's ?token=."""
    page, errors = browser_page
    base_url = serve_factory("--token", "s3cret t0ken").url
    page.goto(base_url.rstrip("/") + "/?token=s3cret%20t0ken")
    page.wait_for_function("() => window.talkrtStats !== undefined")
    page.wait_for_function("() => document.getElementById('server').textContent.startsWith('Server ready')")
    page.click("#mic")
    page.wait_for_function("() => window.talkrtStats.samplesSent >= 24000", timeout=DEADLINE_S * 1000)
    page.click("#mic")  # stops the microphone and flushes the utterance
    stats = _stats(page)
    sent = stats["samplesSent"]
    expected = math.floor(sent / RATE * FPS)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and stats["framesReceived"] < expected:
        time.sleep(0.1)
        stats = _stats(page)
    summary = {k: v for k, v in stats.items() if k not in ("avOffsets", "drawLog")}
    assert stats["framesReceived"] >= expected, summary
    assert stats["framesDrawn"] > 0 and stats["frameLatencyMeanMs"] is not None, summary
    assert page.get_attribute("#mic", "aria-pressed") == "false"
    assert errors == [], errors


def test_page_speaks_text_with_the_servers_voice(voice_server, browser_page) -> None:
    """With a voice loaded the text box is enabled; the page plays the audio messages the server
    sends with the frames, on the same clock."""
    page, errors = browser_page
    page.goto(voice_server.url + "/")
    page.wait_for_function("() => window.talkrtStats !== undefined && window.talkrtStats.voice === true")
    assert page.is_enabled("#speak")
    page.fill("#jitter", str(JITTER_MS))
    page.fill("#text", "Hello there.")
    page.click("#speak")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('done')", timeout=DEADLINE_S * 1000)
    deadline = time.monotonic() + DEADLINE_S
    stats = _stats(page)
    while time.monotonic() < deadline and stats["framesDrawn"] + stats["framesDropped"] < stats["framesReceived"]:
        time.sleep(0.1)
        stats = _stats(page)
    summary = {k: v for k, v in stats.items() if k not in ("avOffsets", "drawLog")}
    assert stats["framesReceived"] > 0 and stats["framesDrawn"] > 0, summary
    # The audio messages cover the frames: one frame period of audio per frame.
    assert abs(stats["audioSecondsReceived"] - stats["framesReceived"] / FPS) <= 1.5 / FPS, summary
    assert stats["audioSecondsScheduled"] > 0, summary  # late audio is cut or skipped, so not all
    assert stats["timeToFirstFrameMs"] is not None, summary
    assert errors == [], errors
