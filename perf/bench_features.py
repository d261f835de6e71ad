"""Audio features for a long clip: PyTorch eager against ONNX Runtime, in one run.

    python perf/bench_features.py [--seconds 60] [--device cpu|cuda] [--precision fp32|fp16] [--no-ort] [--json out.json]

Times (a) the Wav2Lip mel spectrogram and (b) HuBERT-base (preset
chinese-hubert-base, random weights: speed does not depend on the values) on a
synthetic speech-like signal at 16 kHz. Both graphs are exported to a temporary
directory first (export time is reported on its own), every backend runs once to
warm up, then the median of N timed runs is reported with the real-time factor
(compute time / audio duration) and the speed of ONNX Runtime relative to eager.
The whole clip goes through each model in one call.

``--precision fp16`` runs the PyTorch modules in half precision (the runtime's
torch.stft mel and the exported graphs stay fp32); every row's output is compared
with the fp32 module's, run once untimed. ``--no-ort`` times PyTorch alone and
skips the export (e.g. on a GPU whose onnxruntime has no CUDA provider).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from _machine import PRECISIONS, REPO, cpu_counters, cuda_problem, machine_info, other_cpu_share, torch_dtype  # noqa: E402  (perf/ is on sys.path when run as a script)
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from talkrt.models.registry import get_spec  # noqa: E402
from talkrt.export.onnx import export_onnx  # noqa: E402
from _report import cpu_share, emit, result_header, results_table  # noqa: E402  (imports talkrt)

SAMPLE_RATE = 16000
console = Console(stderr=True)


def speech_like_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced harmonics of a gliding, vibrato-modulated pitch under a syllable-rate
    envelope with pauses, plus breath noise: (S,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    num_samples = int(round(seconds * SAMPLE_RATE))
    t = np.arange(num_samples) / SAMPLE_RATE
    f0 = 120.0 + 25.0 * np.sin(2 * np.pi * 0.3 * t) + 6.0 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    # Harmonic amplitudes fall off like a glottal source; a slow formant-like tilt moves them.
    tilt = 1.0 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(k * phase + 0.3 * k) / k**tilt for k in range(1, 40))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0.0, None) ** 0.7
    phrases = (np.sin(2 * np.pi * 0.25 * t) > -0.6).astype(np.float64)  # pauses between phrases
    envelope = syllables * phrases
    noise = rng.standard_normal(num_samples) * (0.004 + 0.02 * envelope)
    wav = 0.25 * envelope * voiced / np.abs(voiced).max() * 3.0 + noise
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


EAGER = "PyTorch eager"


def time_runs(run: Callable[[], object], repeats: int, device: str, eager: bool) -> tuple[list[float], object]:
    """Warm up once, then time ``repeats`` runs in ms; CUDA eager runs are timed with events."""
    result = run()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if device == "cuda" and eager:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            result = run()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - begin) * 1000.0)
    return times, result


def ort_runner(path: Path, input_name: str, output_name: str, waveform: np.ndarray, device: str):
    """A zero-argument ORT run: on CUDA with input and output bound on the device (no host copies timed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if device == "cuda":
        session = ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(waveform, "cuda", 0))
        binding.bind_output(output_name, "cuda", 0)

        def run():
            session.run_with_iobinding(binding)
            return binding.get_outputs()[0]  # an OrtValue on the device; copied to the host after timing

        return run, session.get_providers()[0]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {input_name: waveform}
    return (lambda: session.run([output_name], feeds)[0]), "CPUExecutionProvider"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio duration (default 60)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the PyTorch modules in fp32 or fp16 (default fp32)")
    parser.add_argument("--no-ort", action="store_true", help="time PyTorch alone: no export, no ONNX Runtime")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--mel-repeats", type=int, default=5)
    parser.add_argument("--hubert-repeats", type=int, default=3)
    args = parser.parse_args(argv)

    device = args.device
    dtype = torch_dtype(args.precision)
    problem = cuda_problem(device, ort=not args.no_ort)
    if problem:
        console.print(f"[red]{problem}[/red]")
        return 2

    wav = speech_like_signal(args.seconds)
    audio_seconds = len(wav) / SAMPLE_RATE
    waveform = wav[None]  # (1, S)
    models = [
        ("Wav2Lip mel", get_spec("mel"), args.mel_repeats),
        ("HuBERT-base (chinese-hubert-base)", get_spec("hubert", preset="chinese-hubert-base"), args.hubert_repeats),
    ]

    rows, export_seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-") as tmp:
        built = []
        for label, spec, repeats in models:
            module = spec.build_module(None, seed=0)
            path = Path(tmp) / f"{spec.name}.onnx"
            if not args.no_ort:
                console.print(f"exporting {label} ...")
                report = export_onnx(spec, module, path)
                export_seconds[spec.name] = round(report.seconds, 2)
            built.append((label, spec, module, path, repeats))

        providers = []
        for label, spec, module, path, repeats in built:
            input_name, output_name = spec.inputs[0].name, spec.outputs[0].name
            eager_module = module.to(device).eval()
            eager_input = torch.from_numpy(waveform).to(device)
            fp32_output = None
            if dtype != torch.float32:  # the fp32 module's output, untimed: what half precision changes
                with torch.inference_mode():
                    fp32_output = eager_module(eager_input).float().cpu().numpy()
                eager_module = eager_module.to(dtype)
            eager_name = f"{EAGER} {args.precision}"
            # Factories, not runners: each backend is created just before it is timed and
            # released right after, so an idle ONNX Runtime thread pool never shares the
            # cores with a PyTorch run (its spinning workers slow PyTorch by several x).
            variants: list[tuple[str, Callable[[], tuple[Callable[[], object], str]], bool]] = []

            def eager_factory(m=eager_module, x=eager_input.to(dtype)):
                def run():
                    with torch.inference_mode():
                        return m(x)

                return run, eager_name if spec.family != "mel" else f"{eager_name} (Wav2LipMel: Conv STFT, as exported)"

            variants.append(("eager", eager_factory, True))
            if spec.family == "mel":
                # The runtime's own path (torch.stft); the exported module computes the STFT as a Conv.
                from talkrt.runtime.audio import wav2lip_mel

                def stft_factory(x=eager_input):
                    def run():
                        with torch.inference_mode():
                            return wav2lip_mel(x)

                    return run, f"{EAGER} fp32 (wav2lip_mel: torch.stft, the runtime path)"

                variants.append(("eager-stft", stft_factory, True))

            def ort_factory(path=path, names=(input_name, output_name)):
                run, provider = ort_runner(path, names[0], names[1], waveform, device)
                providers.append(provider)
                return run, f"ONNX Runtime fp32 ({provider.removesuffix('ExecutionProvider')})"

            if not args.no_ort:
                variants.append(("ONNX Runtime", ort_factory, False))

            outputs = {}
            reference = None
            for kind, factory, eager in variants:
                run, backend = factory()
                console.print(f"timing {label}: {backend} ({repeats} runs after one warm-up) ...")
                load_before = os.getloadavg()[0]
                cpu_before = cpu_counters()
                times, result = time_runs(run, repeats, device, eager)
                other_cpu = other_cpu_share(cpu_before, cpu_counters())
                if isinstance(result, torch.Tensor):
                    outputs[backend] = result.detach().float().cpu().numpy()
                else:
                    outputs[backend] = result.numpy() if hasattr(result, "numpy") else np.asarray(result)
                del run, result
                gc.collect()  # releases an ONNX Runtime session and its threads
                median = statistics.median(times)
                rows.append(
                    {
                        "feature": label,
                        "graph": spec.name,
                        "backend": backend,
                        "precision": args.precision if kind == "eager" else "fp32",
                        "repeats": repeats,
                        "ms_median": round(median, 2),
                        "ms_runs": [round(t, 2) for t in times],
                        "rtf": round(median / 1000.0 / audio_seconds, 5),
                        "output_shape": list(outputs[backend].shape),
                        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                        "other_processes_cpu_share": other_cpu,
                    }
                )
                if kind == "eager":
                    reference = backend
            eager_row = next(r for r in rows if r["graph"] == spec.name and r["backend"] == reference)
            fp32_output = outputs[reference] if fp32_output is None else fp32_output
            for row in rows:
                if row["graph"] != spec.name:
                    continue
                row["max_abs_diff_vs_fp32_eager"] = float(np.abs(outputs[row["backend"]] - fp32_output).max())
                row["speed_vs_eager"] = round(eager_row["ms_median"] / row["ms_median"], 2)

    result = {
        **result_header("audio features", machine_info(device, sorted(set(providers)))),
        "precision": args.precision,
        "audio_seconds": audio_seconds,
        "samples": len(wav),
        "signal": "synthetic speech-like: 39 harmonics of a gliding 120 Hz pitch with 5.5 Hz vibrato, syllable and phrase envelope, noise",
        "export_seconds": export_seconds,
        "note": (
            "speed_vs_eager = eager ms / this row's ms, eager being the PyTorch module that was exported, in --precision; "
            "max_abs_diff_vs_fp32_eager: against the fp32 module's output; "
            "other_processes_cpu_share: busy CPU time of other processes / all busy CPU time during the block (0 = the machine was ours)"
        ),
        "results": rows,
    }

    table = results_table(
        f"Audio features, {audio_seconds:g} s of audio, {device} ({result['machine']['device_name']}), PyTorch in {args.precision}",
        (("feature", "left"), ("backend", "left"), ("ms / run (median)", "right"), ("runs", "right"), ("RTF", "right"), ("speed vs eager", "right"), ("max |diff| vs fp32 eager", "right"), ("others' CPU", "right")),
        (
            (
                row["feature"],
                row["backend"],
                f"{row['ms_median']:.1f}",
                str(row["repeats"]),
                f"{row['rtf']:.4f}",
                f"{row['speed_vs_eager']:.2f}x",
                f"{row['max_abs_diff_vs_fp32_eager']:.1e}",
                cpu_share(row["other_processes_cpu_share"]),
            )
            for row in rows
        ),
        caption="speed vs eager: eager ms / this row's ms, eager = the exported PyTorch module; RTF = compute time / audio duration; max |diff| against the fp32 module",
    )
    lines = []
    if export_seconds:
        exports = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in export_seconds.items())
        lines.append(f"export (with validation), not timed above: {exports}")
    emit(result, table, args.json, width=180, lines=lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
