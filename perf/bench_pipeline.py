"""talkrt's pipeline against a naive host-copy baseline written the way peers write it, in one run.

    python perf/bench_pipeline.py [--seconds 4] [--device cpu|cuda] [--backend ort|torch|trt] [--precision fp32|fp16]
                                  [--batch-size 8] [--repeats 3] [--paste blend|hard] [--json out.json]

Both sides use the same Wav2Lip weights (random, seed 0: speed does not depend on
the values; exported once to a temporary ONNX file for ort, built into an engine
for trt, the module built from the same seed for torch, in ``--precision``: fp16
runs the PyTorch module in half precision, inputs and outputs float32), the same
synthetic avatar
(``synthetic_avatar(num_frames=8)``), the same synthetic speech, the same device
and the same batch size.

(a) talkrt's ``Pipeline``: offline ``run`` with every frame consumed where it lies
    (on the device, no encoding), and ``stream_chunks`` with 40 ms chunks.
    Around it, the measure of what everything but the renderer costs:
    "render only" calls ``Pipeline.render`` on the same batches (the renderer as the
    pipeline runs it, replaying its CUDA graph on a GPU; windows and avatar indices
    computed beforehand; no features, paste-back, host copy or encoding), and "pipeline to MP4" is ``write_video`` (features, render,
    paste-back, host copy, H.264 encoding; needs PyAV, skipped without it).
    End-to-end fps / render-only fps is reported for both pipeline variants
    (the goal with the overlapped sink is >= 0.95). "encode only" writes the
    offline run's frames, already on the host, with the same encoder, fed as
    ``write_video`` feeds it (yuv420p planes on a GPU, BGR frames on the CPU): where it is
    slower than the renderer (a fast GPU), the MP4 row cannot beat it, and MP4 fps /
    min(render-only, encode-only) fps says how well the sink overlaps the two.
(b) The baseline, shaped like Wav2Lip's ``inference.py`` (and LiveTalking's loop):
    the mel is computed, then moved to the host as numpy; per batch, windows are
    sliced frame by frame in a Python loop (``mel_idx_multiplier = 80 / fps``, the
    last window shifted back), a new numpy face batch is allocated (masked +
    reference crops, BGR / 255), the model runs on numpy arrays (``session.run``
    for ort; ``torch.from_numpy(...).to(device)`` and ``.cpu().numpy()`` for torch and
    trt), and every output is pasted back on the host with ``cv2.resize`` into a copy
    of its frame. ``--paste blend`` (default) blends with the avatar's own mask, the
    same work the pipeline does, so frames can be compared pixel for pixel;
    ``--paste hard`` is Wav2Lip's box paste (``p.astype(uint8)``, resize, assign).
    On CUDA every stage boundary goes through the host.

Avatar frames follow the avatar's ping-pong order and crops come from the prepared
avatar on both sides (Wav2Lip's loop uses ``i % len(frames)`` and re-resizes the crop
per frame; the cheaper choice is given to the baseline), and both emit the same
frame count, so the outputs are the same frames.

Times are ``time.perf_counter`` (after ``torch.cuda.synchronize`` on CUDA); every
variant runs once to warm up (that run's frames are the ones compared), then the
median of ``--repeats`` runs is reported. Time to first frame (TTFF) is measured
twice: "burst", with all audio present at the start (streaming is then fed its 40 ms
chunks back to back), which isolates compute; and "paced", with audio arriving in
real time from the start (the streaming pipeline waits for its lookahead, the
offline baseline for the whole clip), stopped at the first frame.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from _machine import PRECISIONS, REPO, machine_info, torch_dtype  # noqa: E402  (perf/ is on sys.path when run as a script)
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402
from talkrt.models.registry import get_spec  # noqa: E402
from talkrt.optional import available  # noqa: E402
from talkrt.runtime.align import gather_windows, num_video_frames  # noqa: E402
from talkrt.runtime.audio import wav2lip_mel  # noqa: E402
from talkrt.runtime.avatar import Avatar, synthetic_avatar  # noqa: E402
from talkrt.runtime.pipeline import Pipeline, PipelineOptions, pipeline_from_files  # noqa: E402
from _report import emit, result_header, results_table  # noqa: E402  (imports talkrt)

SAMPLE_RATE = 16000
CHUNK_MS = 40
OFFLINE = "pipeline offline"
RENDER_ONLY = "render only (Pipeline.render on the same batches)"
TO_MP4 = "pipeline to MP4 (write_video)"
ENCODE_ONLY = "encode only (the same frames, from the host, to MP4)"
MEL_STEP = 16  # Wav2Lip's mel_step_size: 16 columns at 80 Hz per frame
log = Console(stderr=True)


# --------------------------------------------------------------------------- helpers


def ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def _cv2():
    import cv2

    return cv2


# --------------------------------------------------------------------------- the model, once


class Model:
    """One set of Wav2Lip weights in the form the backend needs: an ONNX file, an engine or a module."""

    def __init__(self, backend: str, device: torch.device, workdir: Path, dtype: torch.dtype) -> None:
        self.backend = backend
        self.dtype = dtype
        self.spec = get_spec("wav2lip")
        self.onnx: Path | None = None
        self.engine: Path | None = None
        self.module = None
        self.prepare_seconds = 0.0
        start = time.perf_counter()
        if backend == "torch":
            self.module = self.spec.build_module(None, seed=0).eval().to(device, dtype)
        else:
            from talkrt.export.onnx import export_onnx

            self.onnx = workdir / "wav2lip.onnx"
            log.print("exporting Wav2Lip (random weights, seed 0) to ONNX, with validation ...")
            export_onnx(self.spec, self.spec.build_module(None, seed=0), self.onnx)
            if backend == "trt":
                from talkrt.engines.build import BuildOptions, build_engine

                log.print("building the TensorRT engine (fp32) ...")
                self.engine = build_engine(self.onnx, workdir / "wav2lip.engine", BuildOptions()).engine
        self.prepare_seconds = time.perf_counter() - start


# --------------------------------------------------------------------------- (a) the pipeline


def make_pipeline(model: Model, avatar: Avatar, device: torch.device, batch_size: int) -> Pipeline:
    """The pipeline on the model's ONNX file or engine; torch builds its module from the same seed (None)."""
    path = {"ort": model.onnx, "trt": model.engine, "torch": None}[model.backend]
    options = PipelineOptions(fps=avatar.fps, batch_size=batch_size)
    return pipeline_from_files(avatar, "wav2lip", model.backend, path, str(device), options, torch_dtype=model.dtype)


def render_inputs(pipeline: Pipeline, audio: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(avatar indices, windows) of every batch of the pipeline's offline run on 16 kHz ``audio``,
    computed once on its device the way the pipeline computes them, for the render-only timing."""
    renderer, device, batch = pipeline.renderer, pipeline.device, pipeline.options.batch_size
    count = num_video_frames(len(audio), pipeline.fps, SAMPLE_RATE)
    features = renderer.features(torch.from_numpy(audio).to(device))
    windows = gather_windows(features, renderer.alignment.window_indices(features.shape[-1], count, pipeline.fps, device))
    avatar_index = torch.from_numpy(pipeline.avatar.frame_indices(0, count)).to(device)
    return [(avatar_index[start : start + batch], windows[start : start + batch]) for start in range(0, count, batch)]


def render_only(pipeline: Pipeline, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """The renderer alone, batch by batch, as the pipeline runs it (its captured graph on a GPU);
    yields each batch's avatar indices."""
    pipeline.renderer.reset()
    context = torch.cuda.stream(pipeline.stream) if pipeline.stream is not None else contextlib.nullcontext()
    with context:
        for avatar_index, windows in inputs:
            pipeline.render(avatar_index, windows)
            yield avatar_index


# --------------------------------------------------------------------------- (b) the naive baseline


class NaiveBaseline:
    """Wav2Lip's inference.py loop over numpy arrays; host<->device bytes counted on CUDA."""

    def __init__(self, model: Model, avatar: Avatar, device: torch.device, batch_size: int, paste: str) -> None:
        self.avatar = avatar
        self.device = device
        self.cuda = device.type == "cuda"
        self.batch_size = batch_size
        self.paste = paste
        self.fps = float(avatar.fps)
        self.face_size = avatar.face_size
        self.boxes = [tuple(int(v) for v in box) for box in avatar.boxes]
        self.backend = model.backend
        self.dtype = model.dtype
        self.cv2 = _cv2()
        if model.backend == "ort":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self.cuda:
                providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
            else:
                providers = ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(str(model.onnx), options, providers=providers)
        elif model.backend == "torch":
            self.module = model.module
        else:
            from talkrt.engines.runners import make_runner

            self.runner = make_runner("trt", model.engine, device=device)
        self.h2d_bytes = 0
        self.d2h_bytes = 0

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.cuda:
            self.h2d_bytes += tensor.nbytes
        return tensor.to(self.device)

    def _to_host(self, tensor: torch.Tensor) -> np.ndarray:
        if self.cuda:
            self.d2h_bytes += tensor.nbytes
        return tensor.cpu().numpy()

    def _infer(self, mel_batch: np.ndarray, img_batch: np.ndarray) -> np.ndarray:
        if self.backend == "ort":
            if self.cuda:  # ORT copies numpy feeds to the device and the outputs back
                self.h2d_bytes += mel_batch.nbytes + img_batch.nbytes
            pred = self.session.run(None, {"audio_sequences": mel_batch, "face_sequences": img_batch})[0]
            if self.cuda:
                self.d2h_bytes += pred.nbytes
            return pred
        mel_t, img_t = self._to_device(mel_batch), self._to_device(img_batch)
        if self.backend == "torch":
            with torch.inference_mode():
                pred = self.module(mel_t.to(self.dtype), img_t.to(self.dtype)).float()
        else:  # trt: fresh outputs every call, as a naive loop does
            pred = self.runner.run({"audio_sequences": mel_t, "face_sequences": img_t})["generated_faces"]
        return self._to_host(pred)

    def run(self, audio: np.ndarray) -> Iterator[list[np.ndarray]]:
        """Batches of finished frames (lists of (H, W, 3) uint8 BGR arrays on the host)."""
        cv2 = self.cv2
        # The mel on the model's device, then to the host, where the windows are cut.
        with torch.inference_mode():
            mel = self._to_host(wav2lip_mel(self._to_device(audio)))
        columns = mel.shape[1]
        count = num_video_frames(len(audio), self.avatar.fps, SAMPLE_RATE)
        frame_ids = self.avatar.frame_indices(0, count).tolist()
        mel_idx_multiplier = 80.0 / self.fps
        half = self.face_size // 2
        mask = self.avatar.blend_mask
        for start in range(0, count, self.batch_size):
            mel_list, img_list, ids = [], [], []
            for k in range(start, min(start + self.batch_size, count)):
                mel_start = min(int(k * mel_idx_multiplier), columns - MEL_STEP)  # a window past the end is shifted back
                mel_list.append(mel[:, mel_start : mel_start + MEL_STEP])
                idx = frame_ids[k]
                img_list.append(self.avatar.crops[idx])
                ids.append(idx)
            img_batch, mel_batch = np.asarray(img_list), np.asarray(mel_list)
            img_masked = img_batch.copy()
            img_masked[:, half:] = 0
            img_batch = np.concatenate((img_masked, img_batch), axis=3) / 255.0
            img_batch = np.ascontiguousarray(np.transpose(img_batch, (0, 3, 1, 2)), dtype=np.float32)
            mel_batch = np.ascontiguousarray(mel_batch[:, None], dtype=np.float32)  # (n, 1, 80, 16)
            pred = self._infer(mel_batch, img_batch).transpose(0, 2, 3, 1) * 255.0
            frames = []
            for p, idx in zip(pred, ids):
                frame = self.avatar.frames[idx].copy()
                x1, y1, x2, y2 = self.boxes[idx]
                size = (x2 - x1, y2 - y1)
                if self.paste == "hard":
                    frame[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), size)
                else:
                    face = cv2.resize(np.ascontiguousarray(p), size)
                    alpha = cv2.resize(mask, size)[..., None]
                    region = frame[y1:y2, x1:x2].astype(np.float32)
                    frame[y1:y2, x1:x2] = np.clip(np.rint(region + (face - region) * alpha), 0, 255).astype(np.uint8)
                frames.append(frame)
            yield frames


# --------------------------------------------------------------------------- timing


def encode_only(batches: list[torch.Tensor], audio: np.ndarray, fps, out: Path, device: torch.device) -> dict:
    """The encoder alone, fed as write_video feeds it: host frames (BGR uint8 batches) on the CPU;
    on a GPU, yuv420p planes converted there beforehand (untimed: the pipeline does it on the device)."""
    from talkrt.runtime.media import VideoWriter
    from talkrt.runtime.yuv import bgr_to_i420

    planes = device.type == "cuda"
    inputs = [bgr_to_i420(batch.to(device)).cpu() for batch in batches] if planes else batches
    t0 = time.perf_counter()
    frames, first_ms = 0, None
    with VideoWriter(out, fps, audio, SAMPLE_RATE) as writer:
        for batch in inputs:
            writer.write_i420(batch) if planes else writer.write_frames(batch)
            frames += len(batch)
            first_ms = first_ms or (time.perf_counter() - t0) * 1000.0
    return {"ttff_ms": first_ms, "total_ms": (time.perf_counter() - t0) * 1000.0, "frames": frames}


def chunked(audio: np.ndarray, chunk_ms: float) -> list[np.ndarray]:
    step = round(SAMPLE_RATE * chunk_ms / 1000)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def paced(chunks: list[np.ndarray], t0: float, chunk_ms: float) -> Iterator[np.ndarray]:
    """Chunk i is handed over when it has fully arrived: t0 + (i + 1) * chunk duration."""
    for i, chunk in enumerate(chunks):
        wait = t0 + (i + 1) * chunk_ms / 1000.0 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        yield chunk


def timed(batches: Callable[[float], Iterable], sync: Callable[[], None], count_frames: Callable[[object], int], keep: Callable[[object], None] | None = None, first_only: bool = False) -> dict:
    """One run: ms to the first batch of frames ready and to the last; frames produced."""
    t0 = time.perf_counter()
    first_ms = None
    frames = 0
    iterator = iter(batches(t0))
    for batch in iterator:
        if first_ms is None:
            sync()
            first_ms = (time.perf_counter() - t0) * 1000.0
        frames += count_frames(batch)
        if keep is not None:
            keep(batch)
        if first_only:
            break
    if hasattr(iterator, "close"):
        iterator.close()
    sync()
    total_ms = (time.perf_counter() - t0) * 1000.0
    return {"ttff_ms": first_ms, "total_ms": None if first_only else total_ms, "frames": frames}


def measure(name: str, run: Callable[[Callable | None], dict], repeats: int, warmup: bool = True, after: Callable[[], dict] | None = None) -> dict:
    """Warm-up (whose kept frames are returned by the caller's ``keep``) then ``repeats`` timed runs."""
    log.print(f"timing {name}: {'1 warm-up + ' if warmup else ''}{repeats} runs ...")
    load_before = os.getloadavg()[0]
    if warmup:
        run(True)
    runs = [run(False) for _ in range(repeats)]
    extra = after() if after else {}
    ttff = [r["ttff_ms"] for r in runs]
    totals = [r["total_ms"] for r in runs if r["total_ms"] is not None]
    frames = runs[-1]["frames"]
    total_median = statistics.median(totals) if totals else None
    return {
        "variant": name,
        "repeats": repeats,
        "frames": frames,
        "total_ms_median": _round(total_median),
        "total_ms_runs": [_round(t) for t in totals],
        "fps": _round(frames / total_median * 1000.0) if total_median else None,
        "ttff_ms_median": _round(statistics.median(ttff)),
        "ttff_ms_runs": [_round(t) for t in ttff],
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **extra,
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


# --------------------------------------------------------------------------- frame check


def frame_check(reference: np.ndarray, other: np.ndarray, avatar: Avatar) -> dict:
    """Max |difference| in pixel values: whole frame, inside the face boxes, and where the blend mask is 1."""
    cv2 = _cv2()
    diff = np.abs(reference.astype(np.int16) - other.astype(np.int16)).max(axis=-1)  # (N, H, W)
    ids = avatar.frame_indices(0, len(reference))
    inside = np.zeros(diff.shape, dtype=bool)
    core = np.zeros(diff.shape, dtype=bool)
    for k, idx in enumerate(ids):
        x1, y1, x2, y2 = (int(v) for v in avatar.boxes[idx])
        inside[k, y1:y2, x1:x2] = True
        core[k, y1:y2, x1:x2] = cv2.resize(avatar.blend_mask, (x2 - x1, y2 - y1)) >= 1.0 - 1e-6
    return {
        "frames": int(len(reference)),
        "max_abs_diff": int(diff.max()),
        "max_abs_diff_outside_boxes": int(diff[~inside].max()) if (~inside).any() else 0,
        "max_abs_diff_mask_core": int(diff[core].max()) if core.any() else None,
        "pixels_differing_by_more_than_1": int((diff > 1).sum()),
        "pixels_differing": int((diff > 0).sum()),
        "pixels": int(diff.size),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="speech duration (default 4)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backend", choices=("ort", "torch", "trt"), default="ort")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="torch backend: run the module in fp32 or fp16 (default fp32)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paste", choices=("blend", "hard"), default="blend", help="baseline paste-back: blend with the avatar's mask (same work as the pipeline) or Wav2Lip's hard box paste")
    parser.add_argument("--no-paced", action="store_true", help="skip the TTFF runs with audio arriving in real time (the baseline's waits for the whole clip)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            log.print("[red]--device cuda: no CUDA GPU visible to torch[/red]")
            return 2
        device = torch.device("cuda", torch.cuda.current_device())
        if args.backend == "ort":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                log.print('[red]--device cuda --backend ort: this onnxruntime has no CUDAExecutionProvider; pip install "talkrt[gpu]"[/red]')
                return 2
    elif args.backend == "trt":
        log.print("[red]--backend trt needs --device cuda[/red]")
        return 2
    if args.precision != "fp32" and args.backend != "torch":
        log.print(f"[red]--precision {args.precision} is for the torch backend; ONNX graphs and engines carry their precision themselves[/red]")
        return 2
    if args.batch_size < 1 or args.repeats < 1:
        log.print("[red]--batch-size and --repeats must be at least 1[/red]")
        return 2

    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    avatar = synthetic_avatar(num_frames=8)
    audio = synthetic_speech(args.seconds)
    audio_seconds = len(audio) / SAMPLE_RATE
    chunks = chunked(audio, CHUNK_MS)
    rows: list[dict] = []
    kept: dict[str, list] = {"offline": [], "streaming": [], "baseline": []}

    with tempfile.TemporaryDirectory(prefix="talkrt-bench-pipeline-") as tmp:
        model = Model(args.backend, device, Path(tmp), torch_dtype(args.precision))

        # ---- (a) the pipeline
        pipeline = make_pipeline(model, avatar, device, args.batch_size)
        lookahead_ms = pipeline.renderer.alignment.lookahead_ms(pipeline.fps)

        def host_copy(store: list) -> Callable:
            return lambda batch: store.append(batch.frames.to("cpu", copy=True))

        def pipe_frames(batch) -> int:
            return len(batch.frames)

        def pipe_bytes() -> dict:
            report = pipeline.profiler.report(audio_seconds, float(pipeline.fps), alignment=pipeline.renderer.alignment)
            return {
                "h2d_bytes": report.h2d_bytes if cuda else 0,
                "d2h_bytes": report.d2h_bytes if cuda else 0,
                "profiler_ttff_ms": report.time_to_first_frame_ms,
                "cuda_graph_used": pipeline.cuda_graph_used,
            }

        rows.append(measure(
            OFFLINE,
            lambda warm: timed(lambda t0: pipeline.run(audio, SAMPLE_RATE), sync, pipe_frames, host_copy(kept["offline"]) if warm else None),
            args.repeats, after=pipe_bytes,
        ))
        rows.append(measure(
            f"pipeline streaming, {CHUNK_MS} ms chunks, burst",
            lambda warm: timed(lambda t0: pipeline.stream_chunks(iter(chunks), SAMPLE_RATE), sync, pipe_frames, host_copy(kept["streaming"]) if warm else None),
            args.repeats, after=pipe_bytes,
        ))
        if not args.no_paced:
            rows.append(measure(
                f"pipeline streaming, {CHUNK_MS} ms chunks, paced",
                lambda warm: timed(lambda t0: pipeline.stream_chunks(paced(chunks, t0, CHUNK_MS), SAMPLE_RATE), sync, pipe_frames, first_only=True),
                args.repeats,
            ))
        inputs = render_inputs(pipeline, audio)
        sync()
        rows.append(measure(RENDER_ONLY, lambda warm: timed(lambda t0: render_only(pipeline, inputs), sync, len), args.repeats))
        del inputs
        if available("av"):
            video = Path(tmp) / "pipeline.mp4"
            reports: list = []

            def video_run(warm: bool) -> dict:
                t0 = time.perf_counter()
                reports.append(pipeline.write_video(audio, SAMPLE_RATE, video))
                total_ms = (time.perf_counter() - t0) * 1000.0  # write_video returns once the file is closed
                return {"ttff_ms": reports[-1].time_to_first_frame_ms, "total_ms": total_ms, "frames": reports[-1].frames}

            def video_stages() -> dict:
                return {"profile_stage_total_ms": {name: stage.total_ms for name, stage in reports[-1].stages.items()}, "mp4_bytes": video.stat().st_size}

            rows.append(measure(TO_MP4, video_run, args.repeats, after=video_stages))
            rows.append(measure(ENCODE_ONLY, lambda warm: encode_only(kept["offline"], audio, pipeline.fps, Path(tmp) / "encode.mp4", device), args.repeats))
        else:
            log.print(f"{TO_MP4}: skipped: no PyAV")
        # Release the pipeline's runtime (an idle ONNX Runtime pool must not share the cores with the baseline).
        del pipeline
        gc.collect()

        # ---- (b) the baseline
        baseline = NaiveBaseline(model, avatar, device, args.batch_size, args.paste)

        def base_run(warm: bool, first_only: bool = False, wait_for_audio: bool = False) -> dict:
            def batches(t0: float):
                if wait_for_audio:  # offline: nothing starts before the whole clip has arrived
                    time.sleep(max(0.0, t0 + audio_seconds - time.perf_counter()))
                return baseline.run(audio)

            baseline.h2d_bytes = baseline.d2h_bytes = 0
            keep = (lambda batch: kept["baseline"].extend(batch)) if warm else None
            return timed(batches, sync, len, keep, first_only=first_only)

        rows.append(measure(
            f"naive baseline ({args.paste} paste)",
            lambda warm: base_run(warm),
            args.repeats, after=lambda: {"h2d_bytes": baseline.h2d_bytes, "d2h_bytes": baseline.d2h_bytes},
        ))
        if not args.no_paced:
            rows.append(measure(
                f"naive baseline ({args.paste} paste), paced",
                lambda warm: base_run(warm, first_only=True, wait_for_audio=True),
                args.repeats, warmup=False,  # same code as the row above, which warmed it up
            ))
        del baseline
        gc.collect()

    offline_frames = torch.cat(kept["offline"]).numpy()
    streaming_frames = torch.cat(kept["streaming"]).numpy()
    baseline_frames = np.stack(kept["baseline"])
    checks = {
        "baseline_vs_pipeline_offline": frame_check(offline_frames, baseline_frames, avatar),
        "pipeline_streaming_vs_offline": frame_check(offline_frames, streaming_frames, avatar),
    }

    by_name = {r["variant"]: r for r in rows}
    pipe_off = by_name[OFFLINE]
    pipe_stream = rows[1]
    base = by_name[f"naive baseline ({args.paste} paste)"]
    render_fps = by_name[RENDER_ONLY]["fps"]
    for row in rows:
        row["fps_over_render_only"] = None if row["fps"] is None else _round(row["fps"] / render_fps, 3)
    ratios = {
        "end_to_end_over_render_only": by_name[TO_MP4]["fps_over_render_only"] if TO_MP4 in by_name else None,
        "end_to_end_over_slowest_stage": _round(by_name[TO_MP4]["fps"] / min(render_fps, by_name[ENCODE_ONLY]["fps"]), 3) if TO_MP4 in by_name else None,
        "pipeline_offline_over_render_only": pipe_off["fps_over_render_only"],
        "throughput_pipeline_offline_over_baseline": _round(pipe_off["fps"] / base["fps"], 3),
        "ttff_baseline_over_pipeline_streaming_burst": _round(base["ttff_ms_median"] / pipe_stream["ttff_ms_median"], 2),
        "ttff_baseline_over_pipeline_offline": _round(base["ttff_ms_median"] / pipe_off["ttff_ms_median"], 2),
    }
    if not args.no_paced:
        ratios["ttff_paced_baseline_over_pipeline_streaming"] = _round(
            by_name[f"naive baseline ({args.paste} paste), paced"]["ttff_ms_median"] / by_name[f"pipeline streaming, {CHUNK_MS} ms chunks, paced"]["ttff_ms_median"], 2
        )

    result = {
        **result_header("pipeline vs naive host-copy baseline", machine_info(device, ort_providers(), opencv=_cv2().__version__)),
        "settings": {
            "backend": args.backend,
            "precision": args.precision,
            "device": str(device),
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "baseline_paste": args.paste,
            "chunk_ms": CHUNK_MS,
            "audio_seconds": audio_seconds,
            "fps": str(avatar.fps),
            "frames": pipe_off["frames"],
            "avatar": avatar.source,
            "frame_size": list(avatar.frame_size),
            "model": "Wav2Lip 96x96, random weights (seed 0)",
            "model_prepare_seconds": _round(model.prepare_seconds),
            "pipeline_lookahead_ms": _round(lookahead_ms),
        },
        "notes": [
            "total_ms: start of the run to the last frame ready (CUDA synchronised); fps = frames / total; medians over the timed runs after one warm-up",
            "ttff burst: all audio present at t0 (streaming fed its 40 ms chunks back to back): compute only",
            "ttff paced: audio arrives in real time from t0; the streaming pipeline waits for its lookahead, the offline baseline for the whole clip; runs stop at the first frame",
            "h2d/d2h bytes: host<->device copies on CUDA; 0 on the CPU, where there is no device memory to copy to",
            "render only: the renderer's render() alone (eager) on the batches of the offline run, windows and avatar indices computed beforehand: no features, paste-back, host copy or encoding",
            "fps_over_render_only: this row's fps / render-only fps; end_to_end_over_render_only uses the MP4 row (write_video: features, render, paste-back, host copy, encoding; the goal with the overlapped sink is >= 0.95), pipeline_offline_over_render_only the offline row (frames left on the device)",
            "pipeline to MP4: skipped (null ratio) where PyAV is not installed",
            "encode only: the offline run's frames, already on the host, written by the same VideoWriter (H.264 and AAC) as write_video; end_to_end_over_slowest_stage = MP4 fps / min(render-only fps, encode-only fps), the sink's overlap",
            "pipeline frames are consumed where they lie (no encoding, no host copy) in timed runs; the warm-up run's frames are copied out for the frame check",
        ],
        "results": rows,
        "ratios": ratios,
        "frame_check": checks,
    }

    title = f"Wav2Lip pipeline vs naive baseline: {pipe_off['frames']} frames ({audio_seconds:g} s at {avatar.fps} fps), {args.backend} {args.precision} on {result['machine']['device_name']} ({device}), batch {args.batch_size}"
    columns = ("variant", "total ms (median)", "fps", "fps / render-only", "TTFF ms (median)", "h2d bytes", "d2h bytes", "runs")
    table = results_table(
        title,
        [(column, "left" if column == "variant" else "right") for column in columns],
        (
            (
                row["variant"],
                "-" if row["total_ms_median"] is None else f"{row['total_ms_median']:.1f}",
                "-" if row["fps"] is None else f"{row['fps']:.1f}",
                "-" if row["fps_over_render_only"] is None else f"{row['fps_over_render_only']:.3f}",
                f"{row['ttff_ms_median']:.1f}",
                str(row["h2d_bytes"]) if "h2d_bytes" in row else "-",
                str(row["d2h_bytes"]) if "d2h_bytes" in row else "-",
                str(row["repeats"]),
            )
            for row in rows
        ),
    )
    lines = []
    if ratios["end_to_end_over_render_only"] is None:
        lines.append(f"end-to-end fps / render-only fps: not measured ({TO_MP4} skipped: no PyAV); offline pipeline (frames left on the device): {ratios['pipeline_offline_over_render_only']:.3f}")
    else:
        lines.append(f"end-to-end fps / render-only fps (MP4 via write_video; goal >= 0.95): {ratios['end_to_end_over_render_only']:.3f}; offline pipeline (frames left on the device): {ratios['pipeline_offline_over_render_only']:.3f}")
        lines.append(f"end-to-end fps / slowest stage's fps (min of render only, encode only): {ratios['end_to_end_over_slowest_stage']:.3f}")
    lines.append(f"throughput ratio (pipeline offline fps / baseline fps): {ratios['throughput_pipeline_offline_over_baseline']:.3f}")
    lines.append(f"TTFF ratio, burst (baseline / pipeline streaming): {ratios['ttff_baseline_over_pipeline_streaming_burst']:.2f}; baseline / pipeline offline: {ratios['ttff_baseline_over_pipeline_offline']:.2f}")
    if "ttff_paced_baseline_over_pipeline_streaming" in ratios:
        lines.append(f"TTFF ratio, paced (baseline / pipeline streaming): {ratios['ttff_paced_baseline_over_pipeline_streaming']:.2f}")
    for name, check in checks.items():
        lines.append(
            f"frame check {name}: max |diff| {check['max_abs_diff']} (outside boxes {check['max_abs_diff_outside_boxes']}, "
            f"mask core {check['max_abs_diff_mask_core']}), {check['pixels_differing']} of {check['pixels']} pixels differ, "
            f"{check['pixels_differing_by_more_than_1']} by more than 1"
        )
    if not cuda:
        lines.append("host<->device bytes are 0 on the CPU: there is no device to copy to")
    emit(result, table, args.json, width=150, lines=lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
