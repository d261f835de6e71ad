"""The server's GPU memory series: present on a CUDA device (torch.cuda's numbers of that device),
absent on the CPU. The allocator is stood in, so this runs without a GPU."""

from __future__ import annotations

import torch

from talkrt.serve.metrics import Metrics


def test_gpu_memory_series_are_absent_on_the_cpu() -> None:
    text = Metrics(lambda: 1.0, device=torch.device("cpu")).render()[0].decode()
    assert "talkrt_gpu_memory" not in text
    assert "talkrt_device_memory_bytes" in text


def test_gpu_memory_series_read_the_servers_device(monkeypatch) -> None:
    asked = []
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: asked.append(device) or 3e6)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: asked.append(device) or 8e6)
    device = torch.device("cuda", 1)
    metrics = Metrics(lambda: 1.0, device=device)
    assert metrics.registry.get_sample_value("talkrt_gpu_memory_allocated_bytes") == 3e6
    assert metrics.registry.get_sample_value("talkrt_gpu_memory_reserved_bytes") == 8e6
    assert asked and set(asked) == {device}
