"""Profiler: per-stage totals and per-frame division, end-to-end latency, deadlines, reports.

CPU runs use short real sleeps (timings only ever checked with generous bounds:
sleeps overshoot) and explicit host timestamps where a number must be exact.
"""

from __future__ import annotations

import json
import time

import jsonschema
import numpy as np
import pytest
import torch
from rich.console import Console

from talkrt.runtime.align import WAV2LIP_MEL, frame_start_sample
from talkrt.runtime.profiler import JSON_SCHEMA, SCHEMA, STAGES, ProfileReport, Profiler

SLACK_MS = 60.0  # how far above a sleep a measured time may be on a busy machine


def _sleep_ms(ms: float) -> None:
    time.sleep(ms / 1000.0)


def _simulated_run(batches: int = 4, batch: int = 5) -> tuple[Profiler, ProfileReport]:
    """Offline run: features once over all frames, then per batch windows 1 ms, render 4 ms, compose 2 ms."""
    profiler = Profiler("cpu")
    profiler.start()
    profiler.audio_available()
    frames = batches * batch
    with profiler.stage("features", range(0, frames)):
        _sleep_ms(3)
    for b in range(batches):
        span = range(b * batch, (b + 1) * batch)
        with profiler.stage("windows", span):
            _sleep_ms(1)
        with profiler.stage("render", span):
            _sleep_ms(4)
        with profiler.stage("compose", span):
            _sleep_ms(2)
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
        assert total <= stats.total_ms < total + SLACK_MS, name
        assert stats.frames == 20


def test_batch_time_is_divided_over_its_frames(run):
    # features ran once over 20 frames: every frame carries a twentieth of that call.
    features = np.array(run.frame_stage_ms["features"])
    assert np.allclose(features, run.stages["features"].total_ms / 20, atol=1e-3)
    # Per-frame costs add back up to each stage's total.
    for name, stats in run.stages.items():
        assert sum(run.frame_stage_ms[name]) == pytest.approx(stats.total_ms, abs=1e-2)
    # Within one render batch all frames carry the same share, at least 4 ms / 5 frames.
    render = np.array(run.frame_stage_ms["render"])
    for b in range(4):
        share = render[b * 5 : (b + 1) * 5]
        assert np.ptp(share) < 1e-9 and share[0] >= 4.0 / 5


def test_overlapping_calls_add_up_and_frameless_calls_count_only_in_totals():
    profiler = Profiler()
    with profiler.stage("tts"):
        _sleep_ms(2)
    with profiler.stage("windows", range(0, 2)):
        _sleep_ms(2)
    with profiler.stage("windows", 1):  # an int is one frame
        _sleep_ms(2)
    profiler.frames_ready(range(0, 2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    windows = report.frame_stage_ms["windows"]
    assert windows[1] > windows[0] + 1.5  # frame 1 got half of the first call plus all of the second
    assert report.stages["tts"].calls == 1 and report.stages["tts"].per_frame_ms is None
    assert report.stages["tts"].frames == 0 and report.stages["tts"].total_ms >= 2.0
    assert report.stages["windows"].frames == 2


def test_percentiles_are_ordered(run):
    for stats in run.stages.values():
        pf = stats.per_frame_ms
        assert pf.p50 <= pf.p90 <= pf.p99 <= pf.max
    e2e = run.end_to_end_ms
    assert 0 < e2e.p50 <= e2e.p90 <= e2e.p99 <= e2e.max
    assert e2e.max == pytest.approx(max(run.frame_latency_ms))


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
    profiler = Profiler()
    profiler.start()
    _sleep_ms(5)
    profiler.audio_available()  # audio arrives 5 ms into the run
    with profiler.stage("render", range(0, 3)):
        _sleep_ms(4)
    profiler.frames_ready(range(0, 3))
    with profiler.stage("render", range(3, 6)):
        _sleep_ms(2)
    profiler.frames_ready(range(3, 6))
    report = profiler.report(audio_seconds=0.24, fps=25)
    first_audio = report.frame_audio_ms[0]
    assert first_audio >= 5.0
    assert report.time_to_first_frame_ms == pytest.approx(report.frame_ready_ms[0] - first_audio, abs=1e-3)
    assert report.avatar_first_frame_ms == report.time_to_first_frame_ms
    assert 4.0 <= report.time_to_first_frame_ms < 4.0 + SLACK_MS
    # Latency is measured from the audio, not from the run start.
    assert report.frame_latency_ms[0] == pytest.approx(report.time_to_first_frame_ms, abs=1e-3)


def test_real_time_factor_and_render_fps(run):
    assert run.frames == 20
    assert run.wall_ms >= 3 + 4 * (1 + 4 + 2)
    assert run.wall_ms == pytest.approx(run.frame_ready_ms[-1], abs=1e-3)  # the last frame ends the run
    assert run.real_time_factor == pytest.approx(run.wall_ms / 1000 / run.audio_seconds, rel=1e-4)
    assert run.real_time_factor < 1  # ~40 ms of work for 0.8 s of audio
    assert run.render_fps == pytest.approx(run.frames / (run.wall_ms / 1000), rel=1e-4)


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
    profiler = Profiler()
    profiler.start()
    t0 = time.perf_counter()
    profiler.audio_available(t=t0)
    profiler.frames_ready(range(0, 5), t=t0 + 0.010)
    profiler.frames_ready(range(5, 10), t=t0 + 0.100)
    profiler.frames_ready(range(10, 15), t=t0 + 0.500)  # the slow batch: 10..14 due at 410..570 ms
    report = profiler.report(audio_seconds=0.6, fps=25)
    assert report.deadline_misses == 3
    slack = np.array(report.frame_slack_ms)
    assert list(np.nonzero(slack < 0)[0]) == [10, 11, 12]
    assert slack[10] == pytest.approx(-90.0, abs=1e-2) and slack[14] == pytest.approx(70.0, abs=1e-2)
    assert report.time_to_first_frame_ms == pytest.approx(10.0, abs=1e-2)
    # Per-batch time: 10, then 90, then 400 ms; steady chunk = median after the first batch.
    assert report.batch_ms == pytest.approx([10.0, 90.0, 400.0], abs=1e-2)
    assert report.steady_chunk_ms == pytest.approx(245.0, abs=1e-2)
    assert report.batch_frames == [(0, 5), (5, 10), (10, 15)]


def test_deadline_misses_on_a_deliberately_slow_batch():
    profiler = Profiler()
    profiler.start()
    profiler.audio_available()
    for k in range(12):
        with profiler.stage("render", k):
            _sleep_ms(100 if k == 1 else 2)  # frame 1 is due 40 ms after frame 0 but takes 100 ms
        profiler.frames_ready(k)
    report = profiler.report(audio_seconds=12 / 25, fps=25)
    late = [k for k, s in zip(report.frame_index, report.frame_slack_ms) if s < -1e-3]
    assert 1 in late
    assert all(k < 5 for k in late)  # by frame 5 (due at +200 ms) the run has caught up
    assert report.deadline_misses == len(late)
    assert report.stages["render"].per_frame_ms.max >= 100.0


def test_streaming_audio_sets_each_frames_audio_time():
    """25 fps at 16 kHz: 640 samples a frame; chunks of 5 frames arrive 200 ms apart."""
    profiler = Profiler()
    profiler.start()
    t0 = time.perf_counter()
    profiler.audio_available(samples=3200, t=t0)  # frames 0..4 complete
    profiler.audio_chunk_arrived(6400, t=t0 + 0.2)  # frames 5..9
    profiler.audio_chunk_arrived(8000, t=t0 + 0.4)  # end of 0.5 s: frames 10..12 (12 is partial)
    for start in (0, 5, 10):
        stop = min(start + 5, 13)
        profiler.frames_ready(range(start, stop), t=t0 + 0.2 * (start // 5) + 0.03)
    report = profiler.report(audio_seconds=0.5, fps=25)
    audio = np.array(report.frame_audio_ms) - report.frame_audio_ms[0]
    assert report.frames == 13
    assert audio == pytest.approx([0] * 5 + [200] * 5 + [400] * 3, abs=1e-2)
    assert report.frame_latency_ms == pytest.approx([30.0] * 13, abs=1e-2)
    assert report.time_to_first_frame_ms == pytest.approx(30.0, abs=1e-2)
    assert report.deadline_misses == 0  # frames 5 and 10 are ready exactly on time: not late
    assert report.batch_ms == pytest.approx([30.0] * 3, abs=1e-2)  # each batch waited for its audio
    assert all(type(v) is float for v in report.batch_ms)

    # With Wav2Lip's mel window a frame needs audio beyond its own span: later audio times.
    aligned = profiler.report(audio_seconds=0.5, fps=25, alignment=WAV2LIP_MEL)
    assert all(a >= b for a, b in zip(aligned.frame_audio_ms, report.frame_audio_ms))
    ready_after = [WAV2LIP_MEL.frames_ready(n, 25, total_samples=8000) for n in (3200, 6400, 8000)]
    assert ready_after == [0, 5, 13]  # the 16-column window needs 200 ms before frame 0
    later = np.array(aligned.frame_audio_ms) - report.frame_audio_ms[0]
    assert later == pytest.approx([200] * 5 + [400] * 8, abs=1e-2)
    assert aligned.time_to_first_frame_ms == report.time_to_first_frame_ms  # t0 is still the first audio
    assert frame_start_sample(5, 25) == 3200  # the arithmetic the default mapping relies on


def test_tts_first_pcm_only_when_tts_ran(run):
    assert run.tts_first_pcm_ms is None
    profiler = Profiler()
    with profiler.stage("tts"):
        _sleep_ms(3)
    profiler.audio_available()
    with profiler.stage("render", range(2)):
        _sleep_ms(1)
    profiler.frames_ready(range(2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    assert 3.0 <= report.tts_first_pcm_ms < 3.0 + SLACK_MS
    assert report.steady_chunk_ms is None  # one batch: no steady state


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
        pass
    profiler.frames_ready(range(2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    assert list(report.stages) == ["encode"] and report.frames == 2 and report.h2d_bytes == 0


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
    profiler = Profiler()
    profiler.start()
    t0 = time.perf_counter()
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
    profiler = Profiler("cuda", nvtx=False)
    with profiler.stage("encode", range(2), host=True):
        _sleep_ms(3)
    profiler.frames_ready(range(2))
    report = profiler.report(audio_seconds=0.08, fps=25)
    assert pushed == []
    assert 3.0 <= report.stages["encode"].total_ms < 3.0 + SLACK_MS
