"""What every benchmark records beside its numbers: the machine and the commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]


COMMIT_FILE_VARIABLE = "TALKRT_PERF_COMMIT_FILE"


def git_commit() -> dict:
    """The checkout's commit and whether it had uncommitted changes. A copy of the checkout (a lent
    GPU machine, whose copy may carry a stale .git) reads them from the JSON file named by
    $TALKRT_PERF_COMMIT_FILE, stamped where the real repository was."""
    stamp = os.environ.get(COMMIT_FILE_VARIABLE)
    if stamp and Path(stamp).is_file():
        return {**json.loads(Path(stamp).read_text()), "commit_from": stamp}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}
    return {"commit": commit, "uncommitted_changes": dirty}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_counters() -> tuple[int, int] | None:
    """(busy jiffies of the whole machine, jiffies of this process), from /proc; None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def other_cpu_share(before, after) -> float | None:
    """Share of all busy CPU time during a timed block that went to other processes:
    near 0 on an idle machine, large when something else competed for the cores."""
    if before is None or after is None:
        return None
    total, own = after[0] - before[0], after[1] - before[1]
    return round(max(total - own, 0) / total, 3) if total > 0 else 0.0


def machine_info(device: str, providers: list[str], **extra: str) -> dict:
    """Platform, CPU, torch and ONNX Runtime versions, and the device a benchmark ran on."""
    import onnxruntime
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": providers,
        **extra,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else cpu_model(),
    }


PRECISIONS = ("fp32", "fp16")


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a ``--precision`` choice (fp16 runs the PyTorch modules in half precision)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16}[precision]


def cuda_problem(device: str, ort: bool = True) -> str | None:
    """Why ``--device cuda`` cannot run torch (and ONNX Runtime, when ``ort``) here, or None (also for other devices)."""
    if device != "cuda":
        return None
    import onnxruntime as ort_module
    import torch

    if not torch.cuda.is_available():
        return "--device cuda: no CUDA GPU visible to torch"
    if ort and "CUDAExecutionProvider" not in ort_module.get_available_providers():
        return '--device cuda: this onnxruntime has no CUDAExecutionProvider; pip install "talkrt[gpu]", or time PyTorch alone with --no-ort'
    return None
