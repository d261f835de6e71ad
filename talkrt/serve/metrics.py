"""The server's Prometheus metrics, in a registry of its own (talkrt_* names; docs/serve.md)."""

from __future__ import annotations

from collections.abc import Callable


class Metrics:
    """Counters, gauges and histograms of one server; per-session series carry a ``session`` label
    that `end_session` removes, so the label set does not grow with every session."""

    def __init__(self, batch_fill: Callable[[], float], device, load: Callable[[], float] = lambda: 0.0) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        latency = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)
        self.sessions_active = Gauge("talkrt_sessions_active", "Live WebSocket sessions now open.", registry=registry)
        self.sessions_total = Counter("talkrt_sessions_total", "WebSocket sessions started.", registry=registry)
        self.sessions_refused = Counter("talkrt_sessions_refused_total", "WebSocket sessions refused at the door, by reason.", ["reason"], registry=registry)
        self.sessions_closed = Counter("talkrt_sessions_closed_total", "Sessions the server closed on an error, by reason.", ["reason"], registry=registry)
        self.first_frame = Histogram("talkrt_time_to_first_frame_seconds", "From a session's first input (audio or text) to its first frame sent.", buckets=latency, registry=registry)
        self.frame_latency = Histogram("talkrt_frame_latency_seconds", "From the arrival of the input whose push completed a frame to the frame being sent.", buckets=latency, registry=registry)
        self.deadline_misses = Counter("talkrt_deadline_misses_total", "Frames sent more than one frame period after the push that completed them.", registry=registry)
        self.frames_sent = Counter("talkrt_frames_sent_total", "Frames sent to WebSocket clients.", registry=registry)
        self.frames_dropped = Counter("talkrt_frames_dropped_total", "Frames dropped because a client took them slower than real time.", registry=registry)
        self.renders = Counter("talkrt_renders_total", "POST /v1/render requests, by outcome.", ["outcome"], registry=registry)
        self.session_frames = Counter("talkrt_session_frames_sent_total", "Frames sent, per live session.", ["session"], registry=registry)
        self.session_queue = Gauge("talkrt_session_queued_frames", "Frames waiting to be sent, per live session.", ["session"], registry=registry)
        self.session_latency = Gauge("talkrt_session_frame_latency_seconds", "The latency of the last frame sent, per live session.", ["session"], registry=registry)
        self.session_misses = Counter("talkrt_session_deadline_misses_total", "Deadline misses, per live session.", ["session"], registry=registry)
        self.session_first_frame = Gauge("talkrt_session_time_to_first_frame_seconds", "Time to first frame, per live session.", ["session"], registry=registry)
        Gauge("talkrt_batch_fill_ratio", "Share of the pipeline's batch rows that held a frame, since the start.", registry=registry).set_function(batch_fill)
        Gauge("talkrt_device_load_ratio", "Share of the last 5 s the device thread spent working (new sessions are refused past --max-load).", registry=registry).set_function(load)
        Gauge("talkrt_device_memory_bytes", "torch.cuda.memory_allocated on a GPU, else the process's resident memory.", registry=registry).set_function(lambda: device_memory(device))
        if getattr(device, "type", None) == "cuda":  # a CPU server has no GPU memory to report: the series are absent
            import torch

            Gauge("talkrt_gpu_memory_allocated_bytes", "torch.cuda.memory_allocated of the server's GPU: memory its tensors hold now.",
                  registry=registry).set_function(lambda: float(torch.cuda.memory_allocated(device)))
            Gauge("talkrt_gpu_memory_reserved_bytes", "torch.cuda.memory_reserved of the server's GPU: memory its caching allocator holds (allocated and cached).",
                  registry=registry).set_function(lambda: float(torch.cuda.memory_reserved(device)))

    def end_session(self, session: str) -> None:
        for family in (self.session_frames, self.session_queue, self.session_latency, self.session_misses, self.session_first_frame):
            try:
                family.remove(session)
            except KeyError:
                pass

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def device_memory(device) -> float:
    if getattr(device, "type", None) == "cuda":
        import torch

        return float(torch.cuda.memory_allocated(device))
    import psutil

    return float(psutil.Process().memory_info().rss)
