"""The device worker alone, with a stand-in stepper: turns are fair across sessions, a failing
step ends only its sessions, jobs run between turns; and `import talkrt` loads no web package."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import weakref
from fractions import Fraction
from types import SimpleNamespace

import numpy as np

from talkrt.errors import TalkrtError
from talkrt.runtime.session import Frames
from talkrt.serve.worker import DeviceWorker

DEADLINE_S = 30.0


class RecordingStepper:
    """Records which sessions each turn stepped; the first turn waits for ``release``."""

    fill = 1.0

    def __init__(self, refuse=()) -> None:
        self.turns: list[list[int]] = []
        self.release, self.entered = threading.Event(), threading.Event()
        self.refuse = refuse  # chunk lengths refused with a TalkrtError

    def step(self, work):
        if not self.turns:
            self.entered.set()
            self.release.wait(DEADLINE_S)
        self.turns.append([session.sample_rate for session, _ in work])
        return [TalkrtError("refused") if chunk is not None and len(chunk) in self.refuse else [] for _, chunk in work]


def make_worker(stepper) -> DeviceWorker:
    pipeline = SimpleNamespace(fps=Fraction(25), device="cpu")
    return DeviceWorker(pipeline, stepper, encode=lambda images, kind: [])


def test_turns_take_one_step_per_session_in_order() -> None:
    stepper = RecordingStepper()
    worker = make_worker(stepper)
    outputs: dict[int, list] = {8000: [], 16000: []}
    a = worker.add(8000, outputs[8000].append)
    b = worker.add(16000, outputs[16000].append)
    try:
        worker.queue(a, ("audio", np.zeros(10, np.float32), 0.0))  # the worker takes it and waits
        assert stepper.entered.wait(DEADLINE_S)
        done = threading.Event()
        for _ in range(3):
            worker.queue(a, ("audio", np.zeros(10, np.float32), 0.0))
        worker.queue(b, ("audio", np.zeros(10, np.float32), 0.0))
        worker.queue(b, ("flush", 0.0))
        job = worker.call(lambda: done.set() or list(stepper.turns))
        stepper.release.set()
        turns_before_job = job.result(DEADLINE_S)
        assert turns_before_job == [[8000], [8000, 16000]]  # the job runs after the turn that follows
        assert done.is_set()
        deadline = time.monotonic() + DEADLINE_S
        while len(stepper.turns) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stepper.turns == [[8000], [8000, 16000], [8000, 16000], [8000]]
        assert outputs[16000][-1].ends and not outputs[8000][-1].ends
    finally:
        worker.stop()


def test_a_refused_chunk_ends_only_its_session() -> None:
    stepper = RecordingStepper(refuse=(7,))
    stepper.release.set()
    worker = make_worker(stepper)
    outputs: dict[int, list] = {8000: [], 16000: []}
    a = worker.add(8000, outputs[8000].append)
    b = worker.add(16000, outputs[16000].append)
    try:
        worker.queue(a, ("audio", np.zeros(7, np.float32), 0.0))
        worker.queue(b, ("audio", np.zeros(5, np.float32), 0.0))
        worker.call(lambda: None).result(DEADLINE_S)
        assert [o.error for o in outputs[8000]] == ["refused"]
        assert [o.error for o in outputs[16000]] == [None]
        worker.remove(a)
        assert worker.sessions == 1
    finally:
        worker.stop()


def test_a_removed_session_is_freed_at_once() -> None:
    """A session that leaves is freed when it is removed, by reference counting alone: neither the
    worker's last turn nor its owner (which refers to its slot, as a live session does) keeps it,
    so on a GPU its state's memory returns at the disconnect, not at some later garbage collection."""

    class Owner:
        def __init__(self, worker: DeviceWorker) -> None:
            self.delivered = threading.Event()
            self.slot = worker.add(16000, self.deliver)

        def deliver(self, output) -> None:
            self.delivered.set()

    stepper = RecordingStepper()
    stepper.release.set()
    worker = make_worker(stepper)
    gc.disable()
    try:
        owner = Owner(worker)
        worker.queue(owner.slot, ("audio", np.zeros(10, np.float32), 0.0))
        assert owner.delivered.wait(DEADLINE_S)
        session = weakref.ref(owner.slot.session)
        worker.remove(owner.slot)
        del owner
        deadline = time.monotonic() + DEADLINE_S
        while session() is not None and time.monotonic() < deadline:  # the turn that delivered may still be ending
            time.sleep(0.01)
        assert session() is None
    finally:
        gc.enable()
        worker.stop()


def test_import_talkrt_loads_no_web_package() -> None:
    code = "import sys, talkrt, talkrt.cli; assert not {'fastapi', 'uvicorn', 'prometheus_client', 'starlette'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_load_is_the_busy_share_of_the_last_window() -> None:
    from talkrt.serve.worker import LoadMeter

    now = [100.0]
    meter = LoadMeter(window=5.0, clock=lambda: now[0])
    assert meter.ratio() == 0.0
    meter.add(96.0, 97.0)  # 1 s busy inside the window
    meter.add(98.0, 99.5)  # 1.5 s more
    assert meter.ratio() == 0.5
    now[0] = 102.5  # the window is now [97.5, 102.5]: only 1.5 s of the second span
    assert meter.ratio() == 0.3
    now[0] = 110.0
    assert meter.ratio() == 0.0
    meter.add(104.0, 110.0)  # longer than the window: the device was busy all the time
    assert meter.ratio() == 1.0 and len(meter._spans) == 1  # spans that ended before the window are forgotten


class PictureStepper:
    """Each audio step shows two frames of a moving pattern, a flush one (a session's pictures, not
    a model's: what the worker does with them is under test)."""

    fill = 1.0

    def __init__(self, height: int = 64, width: int = 96) -> None:
        self.shape, self.count = (height, width), 0

    def step(self, work):
        results = []
        for _, chunk in work:
            n = 1 if chunk is None else 2
            rows, columns = np.mgrid[: self.shape[0], : self.shape[1]]
            images = np.stack([np.stack([(rows * 3 + columns + 5 * (self.count + i)) % 256] * 3, -1).astype(np.uint8) for i in range(n)])
            results.append([Frames(self.count, images, np.arange(self.count, self.count + n) * 640, np.zeros(n * 640, np.float32))])
            self.count += n
        return results


def test_an_h264_session_gets_one_packet_a_frame_and_its_encoder_goes_with_it() -> None:
    import av

    worker = make_worker(PictureStepper(height=63, width=95))  # odd: padded to 64x96, as `talkrt run` pads
    outputs: list = []
    slot = worker.add(16000, outputs.append, frames="h264")
    try:
        for op in (("audio", np.zeros(640, np.float32), 0.0), ("audio", np.zeros(640, np.float32), 0.0), ("flush", 0.0),
                   ("audio", np.zeros(640, np.float32), 0.0)):
            worker.queue(slot, op)
        deadline = time.monotonic() + DEADLINE_S
        while len(outputs) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [len(o.pictures) for o in outputs] == [2, 2, 1, 2]
        # a keyframe at the start and where the next utterance starts (after the flush), none between
        assert [o.keyframes for o in outputs] == [[True, False], [False, False], [False], [True, False]]
        packets = [picture for o in outputs for picture in o.pictures]
        assert packets[0].startswith(b"\x00\x00\x00\x01")  # Annex-B, the SPS first
        decoder = av.CodecContext.create("h264", "r")
        decoded = [frame for packet in packets for frame in decoder.decode(av.Packet(packet))] + decoder.decode(None)
        assert len(decoded) == 7 and (decoded[0].width, decoded[0].height) == (96, 64)
        stream = slot.video
        worker.remove(slot)
        assert stream.closed and stream._context is None  # its only reference gone: PyAV freed the encoder
        assert stream.encode(np.zeros((1, 64, 96, 3), np.uint8)) == []
    finally:
        worker.stop()


def test_closed_h264_encoders_free_their_memory() -> None:
    """30 sessions' worth of 720p encoders opened, used and closed: the process grows by a few of
    them at most (one holds about 18 MB: 30 kept would be over 500 MB)."""
    import psutil

    from talkrt.serve.h264 import H264Stream

    images = np.random.default_rng(0).integers(0, 256, (2, 720, 1280, 3), dtype=np.uint8)

    def cycle() -> None:
        stream = H264Stream(Fraction(25))
        assert len(stream.encode(images)) == 2
        stream.close()

    for _ in range(3):
        cycle()
    before = psutil.Process().memory_info().rss
    for _ in range(30):
        cycle()
    assert psutil.Process().memory_info().rss - before < 100e6
