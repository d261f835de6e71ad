"""Profiler: per-stage totals and per-frame division, end-to-end latency, deadlines, reports.

CPU runs use a fake host clock that each test advances by hand, so every time is
exact and nothing sleeps. It starts far from zero, so a time not taken relative to
the run start shows up.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from rich.console import Console

import talkrt.runtime.profiler as profiler_package
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.align import frame_start_sample
from talkrt.runtime.profiler import (
    JSON_SCHEMA,
    SCHEMA,
    STAGES,
    Percentiles,
    ProfileReport,
    Profiler,
    RecordedRun,
    StageCall,
    summarize,
)


class FakeClock:
    """Host seconds that move only when the test says so."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000.0


def _profiler(*args, **kwargs) -> tuple[Profiler, FakeClock]:
    clock = FakeClock()
    return Profiler(*args, clock=clock, **kwargs), clock


def _simulated_run(batches: int = 4, batch: int = 5) -> tuple[Profiler, ProfileReport]:
    """Offline run: features 3 ms once over all frames, then per batch windows 1 ms, render 4 ms, compose 2 ms.

    Audio is there at 0 ms; batch b is ready at 10 + 7 b ms.
    """
    profiler, clock = _profiler("cpu")
    profiler.start()
    profiler.audio_available()
    frames = batches * batch
    with profiler.stage("features", range(0, frames)):
        clock.advance(3)
    for b in range(batches):
        span = range(b * batch, (b + 1) * batch)
        with profiler.stage("windows", span):
            clock.advance(1)
        with profiler.stage("render", span):
            clock.advance(4)
        with profiler.stage("compose", span):
            clock.advance(2)
        profiler.frames_ready(span)
    profiler.count_copy(1000, "h2d")
    profiler.count_copy(torch.zeros(4, dtype=torch.float32), "h2d")
    profiler.count_copy(37, "d2h")
    return profiler, profiler.report(audio_seconds=frames / 25, fps=25)


@pytest.fixture(scope="module")
def run() -> ProfileReport:
    return _simulated_run()[1]


# --------------------------------------------------------------------------- stages


def test_stage_totals_and_calls(run):
    assert list(run.stages) == ["features", "windows", "render", "compose"]  # pipeline order, only what ran
    expected = {"features": (1, 3.0), "windows": (4, 4.0), "render": (4, 16.0), "compose": (4, 8.0)}
    for name, (calls, total) in expected.items():
        stats = run.stages[name]
        assert stats.calls == calls
        assert stats.total_ms == total, name
        assert stats.frames == 20


def test_batch_time_is_divided_over_its_frames(run):
    # features ran once over 20 frames: every frame carries a twentieth of that call.
    assert run.frame_stage_ms["features"] == [3.0 / 20] * 20
    # Each batch of 5 frames: windows 1 ms, render 4 ms, compose 2 ms, shared equally.
    assert run.frame_stage_ms["windows"] == [0.2] * 20
    assert run.frame_stage_ms["render"] == [0.8] * 20
    assert run.frame_stage_ms["compose"] == [0.4] * 20
    # Per-frame costs add back up to each stage's total.
    for name, stats in run.stages.items():
        assert sum(run.frame_stage_ms[name]) == pytest.approx(stats.total_ms)


def test_overlapping_calls_add_up_and_frameless_calls_count_only_in_totals():
    profiler, clock = _profiler()
    with profiler.stage("tts"):
        clock.advance(2)
    with profiler.stage("windows", range(0, 2)):
        clock.advance(2)
    with profiler.stage("windows", 1):  # an int is one frame
        clock.advance(2)
    profiler.frames_ready(range(0, 2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    # frame 0 got half of the first call, frame 1 that half plus all of the second
    assert report.frame_stage_ms["windows"] == [1.0, 3.0]
    assert report.stages["tts"].calls == 1 and report.stages["tts"].per_frame_ms is None
    assert report.stages["tts"].frames == 0 and report.stages["tts"].total_ms == 2.0
    assert report.stages["windows"].frames == 2 and report.stages["windows"].total_ms == 4.0


def test_percentiles_are_ordered(run):
    for stats in run.stages.values():
        pf = stats.per_frame_ms
        assert pf.p50 <= pf.p90 <= pf.p99 <= pf.max
    assert run.stages["render"].per_frame_ms == Percentiles(0.8, 0.8, 0.8, 0.8)
    # Latencies are 10, 17, 24 and 31 ms for 5 frames each; numpy interpolates linearly.
    assert run.frame_latency_ms == [10.0] * 5 + [17.0] * 5 + [24.0] * 5 + [31.0] * 5
    assert run.end_to_end_ms == Percentiles(p50=20.5, p90=31.0, p99=31.0, max=31.0)
    assert run.end_to_end_ms.max == max(run.frame_latency_ms)


def test_unknown_stage_and_bad_frames_are_refused():
    profiler = Profiler()
    with pytest.raises(ValueError, match="unknown profiler stage 'vocoder'"):
        with profiler.stage("vocoder", range(1)):
            pass
    with pytest.raises(ValueError, match="contiguous"):
        with profiler.stage("render", range(0, 10, 2)):
            pass
    with pytest.raises(TypeError):
        profiler.frames_ready([0, 1])
    assert STAGES == ("tts", "resample", "features", "windows", "render", "compose", "encode")


def test_exception_inside_a_stage_still_records_it():
    profiler = Profiler()
    with pytest.raises(RuntimeError):
        with profiler.stage("render", range(2)):
            raise RuntimeError("boom")
    assert profiler.report(audio_seconds=1, fps=25).stages["render"].calls == 1


# --------------------------------------------------------------------------- run-level numbers


def test_time_to_first_frame_is_first_ready_minus_first_audio():
    profiler, clock = _profiler()
    profiler.start()
    clock.advance(5)
    profiler.audio_available()  # audio arrives 5 ms into the run
    with profiler.stage("render", range(0, 3)):
        clock.advance(4)
    profiler.frames_ready(range(0, 3))
    with profiler.stage("render", range(3, 6)):
        clock.advance(2)
    profiler.frames_ready(range(3, 6))
    report = profiler.report(audio_seconds=0.24, fps=25)
    assert report.frame_audio_ms == [5.0] * 6
    assert report.frame_ready_ms == [9.0] * 3 + [11.0] * 3
    assert report.time_to_first_frame_ms == 4.0
    assert report.avatar_first_frame_ms == report.time_to_first_frame_ms
    # Latency is measured from the audio, not from the run start.
    assert report.frame_latency_ms == [4.0] * 3 + [6.0] * 3


def test_real_time_factor_and_render_fps(run):
    assert run.frames == 20
    assert run.wall_ms == 3 + 4 * (1 + 4 + 2) == run.frame_ready_ms[-1]  # the last frame ends the run
    assert run.real_time_factor == 0.03875  # 31 ms of work for 0.8 s of audio
    assert run.render_fps == 645.1613  # 20 frames in 31 ms


def test_bytes_accounting(run):
    assert run.h2d_bytes == 1000 + 16
    assert run.d2h_bytes == 37
    assert run.peak_device_memory_bytes is None  # no device memory on the CPU
    profiler = Profiler()
    with pytest.raises(ValueError, match="direction"):
        profiler.count_copy(10, "h2h")
    with pytest.raises(ValueError):
        profiler.count_copy(-1, "d2h")


def test_deadline_misses_exact_with_explicit_times():
    """Frames 10, 11, 12 are ready after their presentation time first_ready + k * 40 ms."""
    profiler, clock = _profiler()
    profiler.start()
    t0 = clock.now
    profiler.audio_available(t=t0)
    profiler.frames_ready(range(0, 5), t=t0 + 0.010)
    profiler.frames_ready(range(5, 10), t=t0 + 0.100)
    profiler.frames_ready(range(10, 15), t=t0 + 0.500)  # the slow batch: 10..14 due at 410..570 ms
    report = profiler.report(audio_seconds=0.6, fps=25)
    assert report.deadline_misses == 3
    slack = np.array(report.frame_slack_ms)
    assert list(np.nonzero(slack < 0)[0]) == [10, 11, 12]
    assert slack[10] == -90.0 and slack[14] == 70.0
    assert report.time_to_first_frame_ms == 10.0
    # Per-batch time: 10, then 90, then 400 ms; steady chunk = median after the first batch.
    assert report.batch_ms == [10.0, 90.0, 400.0]
    assert report.steady_chunk_ms == 245.0
    assert report.batch_frames == [(0, 5), (5, 10), (10, 15)]


def test_deadline_misses_on_a_deliberately_slow_batch():
    profiler, clock = _profiler()
    profiler.start()
    profiler.audio_available()
    for k in range(12):
        with profiler.stage("render", k):
            clock.advance(100 if k == 1 else 2)  # frame 1 is due 40 ms after frame 0 but takes 100 ms
        profiler.frames_ready(k)
    report = profiler.report(audio_seconds=12 / 25, fps=25)
    # Frame k >= 1 is ready at 100 + 2 k ms and due at 2 + 40 k ms: frames 1 and 2 stall, then the run catches up.
    assert report.frame_slack_ms[:4] == [0.0, -60.0, -22.0, 16.0]
    late = [k for k, s in zip(report.frame_index, report.frame_slack_ms) if s < -1e-3]
    assert late == [1, 2]
    assert report.deadline_misses == len(late)
    assert report.stages["render"].per_frame_ms.max == 100.0


def test_streaming_audio_sets_each_frames_audio_time():
    """25 fps at 16 kHz: 640 samples a frame; chunks of 5 frames arrive 200 ms apart."""
    profiler, clock = _profiler()
    profiler.start()
    t0 = clock.now
    profiler.audio_available(samples=3200, t=t0)  # frames 0..4 complete
    profiler.audio_chunk_arrived(6400, t=t0 + 0.2)  # frames 5..9
    profiler.audio_chunk_arrived(8000, t=t0 + 0.4)  # end of 0.5 s: frames 10..12 (12 is partial)
    for start in (0, 5, 10):
        stop = min(start + 5, 13)
        profiler.frames_ready(range(start, stop), t=t0 + 0.2 * (start // 5) + 0.03)
    report = profiler.report(audio_seconds=0.5, fps=25)
    assert report.frames == 13
    assert report.frame_audio_ms == [0.0] * 5 + [200.0] * 5 + [400.0] * 3
    assert report.frame_latency_ms == [30.0] * 13
    assert report.time_to_first_frame_ms == 30.0
    assert report.deadline_misses == 0  # frames 5 and 10 are ready exactly on time: not late
    assert report.batch_ms == [30.0] * 3  # each batch waited for its audio
    assert all(type(v) is float for v in report.batch_ms)

    # With Wav2Lip's mel window a frame needs audio beyond its own span: later audio times.
    aligned = profiler.report(audio_seconds=0.5, fps=25, alignment=WAV2LIP_MEL)
    assert all(a >= b for a, b in zip(aligned.frame_audio_ms, report.frame_audio_ms))
    ready_after = [WAV2LIP_MEL.frames_ready(n, 25, total_samples=8000) for n in (3200, 6400, 8000)]
    assert ready_after == [0, 5, 13]  # the 16-column window needs 200 ms before frame 0
    assert aligned.frame_audio_ms == [200.0] * 5 + [400.0] * 8
    assert aligned.time_to_first_frame_ms == report.time_to_first_frame_ms  # t0 is still the first audio
    assert frame_start_sample(5, 25) == 3200  # the arithmetic the default mapping relies on


def test_tts_first_pcm_only_when_tts_ran(run):
    assert run.tts_first_pcm_ms is None
    profiler, clock = _profiler()
    with profiler.stage("tts"):
        clock.advance(3)
    profiler.audio_available()
    with profiler.stage("render", range(2)):
        clock.advance(1)
    profiler.frames_ready(range(2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    assert report.tts_first_pcm_ms == 3.0
    assert report.time_to_first_frame_ms == 1.0
    assert report.steady_chunk_ms is None  # one batch: no steady state


TEXT_RUN_KEYS = ("text_to_first_audio_ms", "text_to_first_frame_ms", "steady_real_time_factor")


def _text_run() -> ProfileReport:
    """Text spoken as it is rendered: the tts call of chunk 1 takes 10 ms and gives 100 ms of speech,
    frames 0-1 are ready at 16 ms; chunk 2 (200 ms of speech) at 20 ms, frames 2-6 at 30 ms;
    the last tts call finds the end at 31 ms."""
    profiler, clock = _profiler()
    profiler.start()
    with profiler.stage("tts"):
        clock.advance(10)
    profiler.speech_ready(0.1)
    profiler.audio_chunk_arrived(1600)
    with profiler.stage("render", range(2)):
        clock.advance(6)
    profiler.frames_ready(range(2))
    with profiler.stage("tts"):
        clock.advance(4)
    profiler.speech_ready(0.2)
    profiler.audio_chunk_arrived(4800)
    with profiler.stage("render", range(2, 7)):
        clock.advance(10)
    profiler.frames_ready(range(2, 7))
    with profiler.stage("tts"):
        clock.advance(1)
    return profiler.report(audio_seconds=0.3, fps=25)


def test_text_run_numbers_from_the_speech_marks(run):
    report = _text_run()
    assert report.text_to_first_audio_ms == 10.0  # the first chunk of speech, from the run start
    assert report.text_to_first_frame_ms == 16.0
    assert report.steady_real_time_factor == pytest.approx((31.0 - 10.0) / 200.0)  # after the first chunk
    assert report.stages["tts"].calls == 3 and report.stages["tts"].total_ms == 15.0 and report.stages["tts"].frames == 0
    assert report.text_to_first_audio_ms <= report.text_to_first_frame_ms
    data = report.to_json()
    jsonschema.validate(data, JSON_SCHEMA)
    assert [data[key] for key in TEXT_RUN_KEYS] == [10.0, 16.0, report.steady_real_time_factor]
    assert ProfileReport.from_json(json.loads(json.dumps(data))) == report
    markdown = report.to_markdown()
    assert "**text to first audio (TTFA)**: 10.00 ms" in markdown and "**text to first frame (TTFV)**: 16.00 ms" in markdown
    assert "**steady real-time factor (after the first speech)**: 0.105" in markdown
    console = Console(record=True, width=400)
    console.print(report.rich_table())
    assert "text to first audio (TTFA): 10.00 ms" in console.export_text()
    # A run from audio has none of them, nor a line for them.
    assert [getattr(run, key) for key in TEXT_RUN_KEYS] == [None, None, None]
    assert "TTFA" not in run.to_markdown() and all(run.to_json()[key] is None for key in TEXT_RUN_KEYS)
    single = summarize(RecordedRun(speech=[(0.3, 5.0)], ready=[(range(2), 9.0)]), audio_seconds=0.3, fps=25)
    assert (single.text_to_first_audio_ms, single.text_to_first_frame_ms, single.steady_real_time_factor) == (5.0, 9.0, None)


def test_disabled_profiler_records_nothing():
    profiler = Profiler(enabled=False)
    with profiler.stage("render", range(4)):
        pass
    profiler.frames_ready(range(4))
    profiler.count_copy(100, "h2d")
    with pytest.raises(ValueError):  # names are still checked: a typo must not hide
        with profiler.stage("rendr"):
            pass
    report = profiler.report(audio_seconds=1.0, fps=25)
    assert report.frames == 0 and report.stages == {} and report.h2d_bytes == 0
    assert report.end_to_end_ms is None and report.time_to_first_frame_ms is None
    jsonschema.validate(report.to_json(), JSON_SCHEMA)


def test_start_resets_a_previous_run():
    profiler, _ = _simulated_run(batches=1)
    profiler.start()
    with profiler.stage("encode", range(2), host=True):
        profiler.clock.advance(2)
    profiler.frames_ready(range(2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    assert list(report.stages) == ["encode"] and report.frames == 2 and report.h2d_bytes == 0
    assert report.wall_ms == 2.0  # timed from the new start


def test_summarize_is_a_pure_function_of_the_recorded_marks():
    run = RecordedRun(
        stage_calls=[StageCall("render", range(0, 2), 1.0, 5.0), StageCall("tts", None, 0.0, 1.0)],
        ready=[(range(0, 2), 5.0)],
        audio_first_ms=[1.0],
    )
    report = summarize(run, audio_seconds=0.08, fps=25)
    assert report.frame_stage_ms == {"tts": [0.0, 0.0], "render": [2.0, 2.0]}
    assert report.time_to_first_frame_ms == 4.0 and report.tts_first_pcm_ms == 1.0 and report.wall_ms == 5.0
    assert summarize(run, audio_seconds=0.08, fps=25) == report  # same marks, same numbers
    profiler, _ = _simulated_run()
    assert summarize(profiler.recorded(), audio_seconds=0.8, fps=25) == profiler.report(audio_seconds=0.8, fps=25)
    with pytest.raises(ValueError, match="fps"):
        summarize(run, audio_seconds=0.08, fps=0)


# --------------------------------------------------------------------------- outputs


def test_json_validates_and_round_trips(run, tmp_path):
    data = run.to_json()
    jsonschema.Draft202012Validator.check_schema(JSON_SCHEMA)
    jsonschema.validate(data, JSON_SCHEMA)
    assert data["schema"] == SCHEMA == "talkrt.profile/1"
    assert data["avatar_first_frame_ms"] == data["time_to_first_frame_ms"]
    assert data["deadline_ms"] == 40.0
    text = json.dumps(data, allow_nan=False)  # never NaN: unmeasured values are null
    assert json.loads(text) == data
    assert ProfileReport.from_json(json.loads(text)).to_json() == data
    path = tmp_path / "reports" / "profile.json"
    run.save_json(path)
    assert json.loads(path.read_text()) == data
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]  # no temporary left behind


def test_json_schema_rejects_a_malformed_report(run):
    data = run.to_json()
    for broken in (
        {**data, "schema": "talkrt.profile/0"},
        {**data, "stages": {**data["stages"], "vocoder": data["stages"]["render"]}},
        {**data, "frames": -1},
        {key: value for key, value in data.items() if key != "render_fps"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, JSON_SCHEMA)


def test_json_schema_is_generated_from_the_report_fields(run):
    data = run.to_json()
    assert JSON_SCHEMA["$id"].endswith("/talkrt.profile/1")
    assert list(JSON_SCHEMA["properties"]) == list(data)  # every key, in document order
    assert JSON_SCHEMA["required"] == [key for key in data if key not in ("cuda_graph", "feature_context", *TEXT_RUN_KEYS)]
    for group in ("per_frame", "batches"):
        assert list(JSON_SCHEMA["properties"][group]["properties"]) == list(data[group])
    properties = JSON_SCHEMA["properties"]
    assert properties["frames"] == {"type": "integer", "minimum": 0}
    assert properties["real_time_factor"] == {"type": ["number", "null"], "minimum": 0}
    assert properties["end_to_end_ms"]["anyOf"][1] == {"type": "null"}
    assert properties["stages"]["propertyNames"] == {"enum": list(STAGES)}
    assert properties["per_frame"]["properties"]["ready_ms"]["items"] == {"type": ["number", "null"]}


def test_json_from_before_the_optional_fields_still_loads(run):
    data = {key: value for key, value in run.to_json().items() if key not in ("talkrt_version", "cuda_graph", "feature_context", *TEXT_RUN_KEYS)}
    report = ProfileReport.from_json(data)
    assert report.talkrt_version == "" and report.cuda_graph is None and report.feature_context is None
    assert report.text_to_first_audio_ms is None and report.steady_real_time_factor is None
    with pytest.raises(ValueError, match="not a talkrt.profile/1 report"):
        ProfileReport.from_json({**data, "schema": "talkrt.profile/0"})


def test_markdown_has_a_row_per_stage(run, tmp_path):
    markdown = run.to_markdown()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| stage | calls | total ms")
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == [*run.stages, "end to end"]
    assert "avatar_first_frame_ms" in markdown and "render_fps" in markdown
    run.save_markdown(tmp_path / "profile.md")
    assert (tmp_path / "profile.md").read_text() == markdown


def test_rich_table_lists_stages(run):
    console = Console(record=True, width=160)
    console.print(run.rich_table())
    text = console.export_text()
    for name in [*run.stages, "end to end", "p99 ms", "deadline misses"]:
        assert name in text


def test_plot_writes_a_png(run, tmp_path):
    path = tmp_path / "profile.png"
    run.plot(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # two panels with text and series, not an empty canvas
    assert [p.name for p in tmp_path.iterdir()] == ["profile.png"]


def test_plot_of_a_run_with_late_frames_and_no_frames(tmp_path):
    profiler, clock = _profiler()
    profiler.start()
    t0 = clock.now
    profiler.audio_available(t=t0)
    profiler.frames_ready(range(0, 5), t=t0 + 0.01)
    profiler.frames_ready(range(5, 10), t=t0 + 0.4)
    profiler.report(audio_seconds=0.4, fps=25).plot(tmp_path / "late.png")
    assert (tmp_path / "late.png").read_bytes()[:4] == b"\x89PNG"
    Profiler().report(audio_seconds=0.0, fps=25).plot(tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_events_time_device_work_without_synchronising(monkeypatch):
    device = torch.device("cuda")
    pushed = []
    real_push = torch.cuda.nvtx.range_push
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: (pushed.append(name), real_push(name))[1])
    profiler = Profiler(device)
    profiler.start()

    def no_sync(*args, **kwargs):
        raise AssertionError("the profiler synchronised in the hot path")

    with monkeypatch.context() as hot:
        for target, name in ((torch.cuda, "synchronize"), (torch.cuda.Event, "synchronize"),
                             (torch.cuda.Event, "elapsed_time"), (torch.cuda.Event, "query")):
            hot.setattr(target, name, no_sync)
        profiler.audio_available()
        host_in_block = 0.0
        for b in range(3):
            span = range(b * 4, (b + 1) * 4)
            begin = time.perf_counter()
            with profiler.stage("render", span):
                torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time, returns at once on the host
                buffer = torch.empty(64 << 20, dtype=torch.uint8, device=device)
            host_in_block += time.perf_counter() - begin
            with profiler.stage("compose", span):
                buffer.add_(1)
            profiler.count_copy(buffer, "d2h")
            profiler.frames_ready(span)
    report = profiler.report(audio_seconds=12 / 25, fps=25)
    render = report.stages["render"]
    assert render.calls == 3 and render.total_ms > 3 * host_in_block * 1000  # GPU time, not launch time
    assert render.per_frame_ms.p50 <= render.per_frame_ms.max
    assert report.peak_device_memory_bytes >= 64 << 20
    assert report.d2h_bytes == 3 * (64 << 20)
    assert report.device.startswith("cuda") and report.device_name == torch.cuda.get_device_name(device)
    first_render_call = report.frame_stage_ms["render"][0] * 4  # a batch's time over its 4 frames
    assert report.time_to_first_frame_ms >= first_render_call > 0
    assert report.frame_latency_ms[-1] >= render.total_ms
    assert pushed == ["talkrt/render", "talkrt/compose"] * 3
    jsonschema.validate(report.to_json(), JSON_SCHEMA)


@pytest.mark.gpu
def test_cuda_nvtx_off_and_host_stages(monkeypatch):
    pushed = []
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: pushed.append(name))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: None)
    profiler, clock = _profiler("cuda", nvtx=False)
    with profiler.stage("encode", range(2), host=True):
        clock.advance(3)
    profiler.frames_ready(range(2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    assert pushed == []
    assert report.stages["encode"].total_ms == 3.0  # on the host clock, not an event


# --------------------------------------------------------------------------- layering


def test_the_profiler_imports_nothing_from_the_engines_layer():
    package = Path(profiler_package.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 1
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name.startswith("talkrt.engines") for name in names), path.name


def test_the_report_names_what_the_features_were_computed_from():
    from talkrt.models.dinet.alignment import CTC_25HZ
    from talkrt.models.wav2lip.alignment import WAV2LIP_MEL

    offline, _ = _simulated_run()
    assert offline.report(0.8, 25).feature_context is None  # no alignment: not a pipeline run
    assert offline.report(0.8, 25, alignment=CTC_25HZ).feature_context == "whole utterance"
    profiler, clock = _profiler("cpu")
    profiler.start()
    for end in range(640, 12800, 640):
        profiler.audio_chunk_arrived(end)
        clock.advance(40)
    profiler.frames_ready(range(0, 5))
    assert profiler.report(0.8, 25, alignment=WAV2LIP_MEL).feature_context == "exact: incremental columns"
    streamed = profiler.report(0.8, 25, alignment=CTC_25HZ)
    assert streamed.feature_context == "sliding context: 2000 ms left, 200 ms steps, 80 ms lookahead"
    assert "- **audio features**: sliding context: 2000 ms left" in streamed.to_markdown()
    assert ProfileReport.from_json(streamed.to_json()).feature_context == streamed.feature_context
