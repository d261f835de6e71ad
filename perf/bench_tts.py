"""VITS text to speech: PyTorch eager against ONNX Runtime, one-shot and streaming, in one run.

    python perf/bench_tts.py [--preset mms-tts-eng] [--seconds 10] [--device cpu|cuda] [--precision fp32|fp16]
                             [--no-ort] [--repeats 3] [--json out.json]

The preset is exported once with seeded random weights to a temporary directory
(export time, with parity validation, is reported on its own). Random weights
make the durations arbitrary, so the number of tokens is calibrated first: the
encoder runs on a guessed length of a fixed English passage and the length is
scaled until the utterance is about ``--seconds`` long. Duration noise and prior
noise are then drawn once from a fixed seed and passed explicitly, so every
variant decodes the same utterance.

For each backend (``torch``: the PyTorch modules that were exported, ``ort``: ONNX
Runtime on the exported encoder and decoder graphs, left out with ``--no-ort``;
``--precision fp16`` runs the PyTorch modules in half precision, the graphs stay
fp32) the synthesizer is created
just before it is timed and released right after (an idle ONNX Runtime thread
pool would otherwise share the cores with PyTorch). Each mode runs once to warm
up, then ``--repeats`` timed runs; medians are reported:

* one-shot (``synthesize``): the first audio is the whole utterance, so time to
  first audio = total time; RTF = compute time / audio duration.
* streaming (``stream`` with its default chunking): time until the first chunk
  is ready, total time over all chunks, RTF.

Checks: the concatenated stream equals the one-shot audio of the same backend
(max |diff|), and every backend's one-shot audio agrees with fp32 PyTorch's
(max |diff|; in fp16 the fp32 audio comes from one untimed run).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from _machine import PRECISIONS, REPO, cpu_counters, cuda_problem, machine_info, other_cpu_share, torch_dtype  # noqa: E402  (perf/ is on sys.path when run as a script)

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from talkrt.models.vits.specs import export_vits  # noqa: E402
from talkrt.models.vits.text import text_to_ids  # noqa: E402
from talkrt.models.vits.synth import VitsSynthesizer  # noqa: E402
from _report import cpu_share, emit, result_header, results_table  # noqa: E402  (imports talkrt)

console = Console(stderr=True)

BACKENDS = {"torch": "PyTorch eager", "ort": "ONNX Runtime"}
SEED = 1234  # duration noise and prior noise
PASSAGE = (
    "The north wind and the sun were disputing which was the stronger, when a traveler came along wrapped in a warm "
    "cloak. They agreed that the one who first succeeded in making the traveler take his cloak off should be considered "
    "stronger than the other. Then the north wind blew as hard as he could, but the more he blew the more closely did "
    "the traveler fold his cloak around him; and at last the north wind gave up the attempt. Then the sun shined out "
    "warmly, and immediately the traveler took off his cloak. And so the north wind was obliged to confess that the sun "
    "was the stronger of the two. "
)


def passage(chars: int) -> str:
    text = PASSAGE * (chars // len(PASSAGE) + 1)
    return text[:chars]


# ----------------------------------------------------------------------------- synthesizers and timing


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_synthesizer(directory: str, backend: str, device: str, dtype: torch.dtype) -> VitsSynthesizer:
    """The voice behind runners of ``backend``; PyTorch in ``dtype`` (float16 for the half-precision baseline)."""
    return VitsSynthesizer.from_manifest(directory, backend=backend, device=device, torch_dtype=dtype)


# ----------------------------------------------------------------------------- calibration


def calibrate(synth: VitsSynthesizer, manifest: dict, seconds: float, device: str) -> tuple[list[int], torch.Tensor, int]:
    """Token ids of the passage whose utterance lasts about ``seconds``, with their duration noise and frame count.

    Only the encoder and length regulation run here (cheap); the number of
    characters is scaled by target / measured duration until within 2 %.
    """
    frame_seconds = manifest["hop"] / manifest["sample_rate"]
    chars = max(8, int(seconds * 15))  # about 15 characters per second of real speech: only a first guess
    tried: dict[int, tuple] = {}
    for _ in range(8):
        ids = text_to_ids(passage(chars), manifest, skip_unknown=True)  # the passage's ';' is outside some vocabularies
        generator = torch.Generator().manual_seed(SEED)
        duration_noise = torch.randn(1, 2, len(ids), generator=generator).to(device) if synth.stochastic else None
        encoded = synth.encode(ids, duration_noise=duration_noise)
        frames = encoded.frames
        measured = frames * frame_seconds
        tried[chars] = (ids, duration_noise, frames, measured)
        console.print(f"calibration: {chars} characters, {len(ids)} tokens -> {frames} frames = {measured:.2f} s")
        if abs(measured - seconds) <= 0.02 * seconds:
            break
        new_chars = max(1, int(round(chars * seconds / max(measured, frame_seconds))))
        if new_chars in tried:
            break
        chars = new_chars
    best = min(tried.values(), key=lambda item: abs(item[3] - seconds))
    return best[0], best[1], best[2]


# ----------------------------------------------------------------------------- timing


def time_backend(synth: VitsSynthesizer, ids, kwargs: dict, repeats: int, device: str) -> dict:
    """Warm up and time one-shot and streaming; return timings (ms), audio and load figures."""

    def one_shot():
        begin = time.perf_counter()
        wav = synth.synthesize(ids, **kwargs)
        sync(device)
        return (time.perf_counter() - begin) * 1000.0, wav

    def streaming():
        chunks = []
        begin = time.perf_counter()
        first = None
        for chunk in synth.stream(ids, **kwargs):
            if first is None:
                sync(device)
                first = (time.perf_counter() - begin) * 1000.0
            chunks.append(chunk)
        sync(device)
        total = (time.perf_counter() - begin) * 1000.0
        return first, total, chunks

    result = {}
    one_shot()  # warm-up
    cpu_before = cpu_counters()
    runs = [one_shot() for _ in range(repeats)]
    result["one_shot_ms"] = [round(t, 2) for t, _ in runs]
    result["one_shot_other_cpu"] = other_cpu_share(cpu_before, cpu_counters())
    result["one_shot_audio"] = runs[-1][1].detach().float().cpu().numpy()

    streaming()  # warm-up
    cpu_before = cpu_counters()
    runs = [streaming() for _ in range(repeats)]
    result["stream_first_ms"] = [round(first, 2) for first, _, _ in runs]
    result["stream_total_ms"] = [round(total, 2) for _, total, _ in runs]
    result["stream_other_cpu"] = other_cpu_share(cpu_before, cpu_counters())
    chunks = runs[-1][2]
    result["stream_chunks"] = len(chunks)
    result["stream_first_chunk_samples"] = int(chunks[0].numel())
    result["stream_audio"] = torch.cat([c.detach().float().cpu() for c in chunks]).numpy()
    return result


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """(max |a - b| over the common length, whether the lengths are equal)."""
    n = min(len(a), len(b))
    return float(np.abs(a[:n] - b[:n]).max()) if n else 0.0, len(a) == len(b)


def stream_defaults() -> dict:
    parameters = inspect.signature(VitsSynthesizer.stream).parameters
    return {name: parameters[name].default for name in ("first_chunk_frames", "chunk_frames", "margin_frames")}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mms-tts-eng", help="VITS preset, random weights (default mms-tts-eng)")
    parser.add_argument("--seconds", type=float, default=10.0, help="target speech duration (default 10)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the PyTorch modules in fp32 or fp16 (default fp32)")
    parser.add_argument("--no-ort", action="store_true", help="time PyTorch alone, without ONNX Runtime")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode after one warm-up (default 3)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    device = args.device
    dtype = torch_dtype(args.precision)
    backends = {name: label for name, label in BACKENDS.items() if name == "torch" or not args.no_ort}
    problem = cuda_problem(device, ort=not args.no_ort)
    if problem:
        console.print(f"[red]{problem}[/red]")
        return 2

    rows, outputs, providers = [], {}, []
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-tts-") as tmp:
        console.print(f"exporting {args.preset} (random weights, seed 0): encoder and decoder graphs ...")
        begin = time.perf_counter()
        manifest = export_vits(tmp, preset=args.preset, seed=0, graphs=("encoder", "decoder"))
        export_seconds = round(time.perf_counter() - begin, 2)
        sample_rate, hop = manifest["sample_rate"], manifest["hop"]

        synth = VitsSynthesizer.from_manifest(tmp, backend="torch", device=device)
        ids, duration_noise, frames = calibrate(synth, manifest, args.seconds, device)
        channels = synth.channels or int(manifest["channels"])
        generator = torch.Generator().manual_seed(SEED + 1)
        latent_noise = torch.randn(1, channels, frames + 64, generator=generator).to(device)  # spare columns: a backend may round a frame differently
        kwargs = {"seed": SEED, "latent_noise": latent_noise}
        if duration_noise is not None:
            kwargs["duration_noise"] = duration_noise
        fp32_audio = None
        if dtype != torch.float32:  # fp32 PyTorch's audio, untimed, to measure what half precision changes
            fp32_audio = synth.synthesize(ids, **kwargs).detach().float().cpu().numpy()
        del synth
        gc.collect()
        audio_seconds = frames * hop / sample_rate
        defaults = stream_defaults()
        margin = manifest.get("decoder_receptive_field_frames") if defaults["margin_frames"] is None else defaults["margin_frames"]

        for backend, label in backends.items():
            synth = make_synthesizer(tmp, backend, device, dtype)
            precision = args.precision if backend == "torch" else "fp32"
            label = f"{label} {precision}"
            if backend == "ort":
                provider = synth.decoder.activate().session.get_providers()[0]
                providers.append(provider)
                label = f"{label} ({provider.removesuffix('ExecutionProvider')})"
            console.print(f"timing {label}: one-shot and streaming, {args.repeats} runs each after one warm-up ...")
            load_before = os.getloadavg()[0]
            timed = time_backend(synth, ids, kwargs, args.repeats, device)
            del synth
            gc.collect()  # releases ONNX Runtime sessions and their threads
            one_shot_audio, stream_audio = timed.pop("one_shot_audio"), timed.pop("stream_audio")
            outputs[backend] = one_shot_audio
            seconds_out = len(one_shot_audio) / sample_rate
            stream_diff, stream_same_length = max_abs_diff(stream_audio, one_shot_audio)
            one_shot_ms = statistics.median(timed["one_shot_ms"])
            first_ms = statistics.median(timed["stream_first_ms"])
            total_ms = statistics.median(timed["stream_total_ms"])
            rows.append(
                {
                    "backend": backend,
                    "label": label,
                    "precision": precision,
                    "repeats": args.repeats,
                    "audio_seconds": round(seconds_out, 4),
                    "one_shot_ms_median": round(one_shot_ms, 2),
                    "one_shot_first_audio_ms": round(one_shot_ms, 2),
                    "one_shot_rtf": round(one_shot_ms / 1000.0 / seconds_out, 4),
                    "stream_first_audio_ms_median": round(first_ms, 2),
                    "stream_total_ms_median": round(total_ms, 2),
                    "stream_rtf": round(total_ms / 1000.0 / seconds_out, 4),
                    "stream_vs_one_shot_max_abs_diff": stream_diff,
                    "stream_same_length": stream_same_length,
                    "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    **timed,
                }
            )

    fp32_audio = outputs["torch"] if fp32_audio is None else fp32_audio
    for row in rows:
        row["max_abs_diff_vs_fp32_torch"], row["same_length_as_fp32_torch"] = max_abs_diff(outputs[row["backend"]], fp32_audio)
    torch_row = next(r for r in rows if r["backend"] == "torch")
    ort_row = next((r for r in rows if r["backend"] == "ort"), None)
    ratios = {}
    ort_diff = ort_same_length = None
    if ort_row is not None:
        ort_diff, ort_same_length = max_abs_diff(outputs["ort"], outputs["torch"])
        ratios = {
            "ort_speed_vs_torch_one_shot": round(torch_row["one_shot_ms_median"] / ort_row["one_shot_ms_median"], 2),
            "ort_speed_vs_torch_stream_total": round(torch_row["stream_total_ms_median"] / ort_row["stream_total_ms_median"], 2),
            "ort_speed_vs_torch_stream_first_audio": round(torch_row["stream_first_audio_ms_median"] / ort_row["stream_first_audio_ms_median"], 2),
        }
    for row in rows:
        # how many times sooner the first audio arrives when streaming than one-shot
        ratios[f"{row['backend']}_first_audio_one_shot_over_stream"] = round(row["one_shot_ms_median"] / row["stream_first_audio_ms_median"], 2)
        ratios[f"{row['backend']}_stream_total_over_one_shot"] = round(row["stream_total_ms_median"] / row["one_shot_ms_median"], 2)

    result = {
        **result_header("VITS text to speech", machine_info(device, sorted(set(providers)))),
        "preset": args.preset,
        "precision": args.precision,
        "weights": "random (export_vits seed 0)",
        "target_seconds": args.seconds,
        "audio_seconds": round(audio_seconds, 4),
        "tokens": len(ids),
        "frames": frames,
        "sample_rate": sample_rate,
        "hop": hop,
        "noise_seed": SEED,
        "stream_chunking": {**defaults, "margin_frames_used": margin},
        "export_seconds": export_seconds,
        "export_note": "encoder and decoder graphs (what the synthesizer runs), each validated against PyTorch",
        "ort_vs_torch_max_abs_diff": ort_diff,
        "ort_vs_torch_same_length": ort_same_length,
        "ratios": ratios,
        "note": (
            "one-shot: time to first audio = total time; RTF = compute time / audio duration; medians over the repeats "
            "after one warm-up; ort_speed_vs_torch = torch ms / ort ms; first_audio_one_shot_over_stream = one-shot ms / "
            "streaming first-chunk ms; other_cpu: busy CPU time of other processes / all busy CPU time during the block; "
            "ort_vs_torch_max_abs_diff: ONNX Runtime against PyTorch in --precision (null without ONNX Runtime); "
            "max_abs_diff_vs_fp32_torch: one-shot audio against fp32 PyTorch's"
        ),
        "results": rows,
    }

    cells = []
    for row in rows:
        fp32_check = f"{row['max_abs_diff_vs_fp32_torch']:.1e} vs fp32 PyTorch" + ("" if row["same_length_as_fp32_torch"] else " (lengths differ)")
        cells.append((row["label"], "one-shot", f"{row['one_shot_ms_median']:.1f}", f"{row['one_shot_ms_median']:.1f}", f"{row['one_shot_rtf']:.3f}", str(row["repeats"]), fp32_check, cpu_share(row["one_shot_other_cpu"])))
        stream_check = f"{row['stream_vs_one_shot_max_abs_diff']:.1e} vs one-shot" + ("" if row["stream_same_length"] else " (lengths differ)")
        cells.append((row["label"], f"streaming ({row['stream_chunks']} chunks)", f"{row['stream_first_audio_ms_median']:.1f}", f"{row['stream_total_ms_median']:.1f}", f"{row['stream_rtf']:.3f}", str(row["repeats"]), stream_check, cpu_share(row["stream_other_cpu"])))
    table = results_table(
        f"VITS {args.preset} (random weights), {audio_seconds:.2f} s of speech ({len(ids)} tokens, {frames} frames), {device} ({result['machine']['device_name']}), PyTorch in {args.precision}",
        (
            ("backend", "left"), ("mode", "left"), ("first audio ms", "right"), ("total ms", "right"), ("RTF", "right"),
            ("runs", "right"), ("max |diff|", "right"), ("others' CPU", "right"),
        ),
        cells,
        caption="one-shot: first audio = total; RTF = compute time / audio duration; medians; max |diff|: streaming vs one-shot, one-shot vs fp32 PyTorch",
    )
    lines = [
        f"streaming chunks: first {defaults['first_chunk_frames']} frames, then {defaults['chunk_frames']}, margin {margin} frames each side (the decoder's receptive field)"
    ]
    if ort_row is not None:
        lines.append(
            f"ONNX Runtime vs PyTorch: one-shot {ratios['ort_speed_vs_torch_one_shot']:.2f}x, streaming total {ratios['ort_speed_vs_torch_stream_total']:.2f}x, "
            f"streaming first audio {ratios['ort_speed_vs_torch_stream_first_audio']:.2f}x (torch ms / ort ms); "
            f"audio max |diff| {ort_diff:.1e}" + ("" if ort_same_length else " (lengths differ)")
        )
    for row in rows:
        lines.append(
            f"{row['label']}: first audio {ratios[row['backend'] + '_first_audio_one_shot_over_stream']:.1f}x sooner streaming than one-shot; "
            f"streaming total / one-shot total {ratios[row['backend'] + '_stream_total_over_one_shot']:.2f}"
        )
    lines.append(f"export (encoder + decoder, with validation), not timed above: {export_seconds:.1f} s")
    emit(result, table, args.json, width=180, lines=lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
