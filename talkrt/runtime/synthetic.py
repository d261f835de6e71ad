"""Synthetic inputs for the demo, the benchmarks and the tests: a drawn face that OpenCV's Haar
cascade detects, with its exact boxes, and speech-like audio. No files, no models, no randomness
beyond a seed.

The avatar built from the drawn face is ``runtime.avatar.synthetic_avatar``: it returns an
:class:`~talkrt.runtime.avatar.Avatar`, and ``runtime/avatar.py`` imports this module, so it
lives there to keep the imports one-way.
"""

from __future__ import annotations

import math

import numpy as np

from talkrt.runtime.avatar_base import opencv

__all__ = ["SAMPLE_RATE", "synthetic_frames", "synthetic_speech"]

SAMPLE_RATE = 16000  # Hz, the pipeline's audio rate


# --------------------------------------------------------------------------- face


def _draw_face(height: int, width: int, cx: float, cy: float, scale: float, mouth_open: float) -> np.ndarray:
    """A frontal cartoon face (BGR) that OpenCV's Haar cascade recognises as a face."""
    cv2 = opencv()
    aa = cv2.LINE_AA
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = (90, 110, 120)  # grey-brown wall
    # Sub-pixel drawing (shift=4) so small head motion moves the face smoothly.
    shift, one = 4, 16

    def pt(x, y):
        return (int(round(x * one)), int(round(y * one)))

    def ax(a, b):
        return (int(round(a * scale * one)), int(round(b * scale * one)))

    def ellipse(dx, dy, a, b, colour, start=0, end=360):
        cv2.ellipse(img, pt(cx + dx * scale, cy + dy * scale), ax(a, b), 0, start, end, colour, -1, aa, shift)

    ellipse(0, 0, 60, 80, (120, 160, 210))  # skin
    ellipse(0, -50, 64, 40, (30, 40, 50), 180, 360)  # hair
    for side in (-1, 1):
        ellipse(side * 24, -26, 14, 4, (40, 50, 60))  # brow
        ellipse(side * 24, -12, 11, 6, (235, 235, 235))  # eye white
        ellipse(side * 24, -12, 5, 5, (30, 30, 30))  # iris
    ellipse(0, 20, 10, 5, (80, 110, 160), 0, 180)  # nose tip shadow
    ellipse(0, 42, 20, 5 + 6 * mouth_open, (60, 60, 150))  # lips
    if mouth_open > 0.15:
        ellipse(0, 42, 14, 6 * mouth_open, (40, 30, 70))  # open mouth
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def synthetic_frames(
    num_frames: int = 8, size: tuple[int, int] = (256, 256), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Drawn face frames (N,H,W,3) uint8 BGR and their exact raw face boxes (N,4) int32.

    ``size`` is (height, width). The head drifts a few pixels and the mouth opens and
    closes; the box is the skin ellipse's bounding box, rounded to whole pixels.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    height, width = int(size[0]), int(size[1])
    scale = min(height, width) / 256.0
    rng = np.random.default_rng(seed)
    phase_x, phase_y, phase_mouth = rng.uniform(0.0, 2.0 * math.pi, size=3)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    boxes = np.empty((num_frames, 4), dtype=np.int32)
    for k in range(num_frames):
        angle = 2.0 * math.pi * k / max(num_frames, 2)
        cx = width / 2 + 4.0 * scale * math.sin(angle + phase_x)
        cy = height / 2 + 2.0 * scale * math.sin(angle + phase_y)
        mouth = 0.5 + 0.5 * math.sin(3.0 * angle + phase_mouth)
        frames[k] = _draw_face(height, width, cx, cy, scale, mouth)
        boxes[k] = np.rint([cx - 60 * scale, cy - 80 * scale, cx + 60 * scale, cy + 80 * scale])
    return frames, boxes


# --------------------------------------------------------------------------- speech


def synthetic_speech(seconds: float = 4.0, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Speech-like audio: voiced syllables (a gliding pitch, harmonics shaped by moving formants)
    at about 4 per second, with short pauses and a little breath noise. float32 mono in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 25 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    formant1 = 500 + 300 * np.sin(2 * np.pi * 2.1 * t + 1.0)
    formant2 = 1500 + 600 * np.sin(2 * np.pi * 1.3 * t)
    voiced = np.zeros_like(t)
    for harmonic in range(1, 30):
        frequency = harmonic * pitch
        gain = np.exp(-(((frequency - formant1) / 160) ** 2)) + 0.6 * np.exp(-(((frequency - formant2) / 220) ** 2)) + 0.02
        voiced += gain * np.sin(harmonic * phase)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.6
    phrases = (np.sin(2 * np.pi * 0.35 * t + 0.3) > -0.6).astype(float)  # a pause now and then
    audio = voiced * syllables * phrases + 0.01 * rng.standard_normal(len(t))
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)
