"""Stopping a `talkrt serve` process the way an operator does (shared by the benchmarks and the tests)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, deadline_s: float) -> int:
    """SIGTERM (the server drains its sessions), then the exit status; killed past ``deadline_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(deadline_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
