"""Names and numbers every part of the profiler shares: stage names, schema id, rounding, lateness."""

from __future__ import annotations

STAGES: tuple[str, ...] = ("tts", "resample", "features", "windows", "render", "compose", "encode")
SCHEMA = "talkrt.profile/1"
DECIMALS = 4  # ms rounded to 0.1 us in reports: far below any clock's resolution here
LATE_TOLERANCE_MS = 1e-3  # a frame ready exactly on time is not late, whatever the float noise
