"""HuBERT-ASR features streamed on a sliding context, against the whole utterance, for several contexts.

    python perf/bench_context.py [--asr DIR] [--mapper FILE] [--generator FILE] [--preset NAME]
                                 [--left-ms 250,500,1000,2000,4000] [--lookahead-ms 0,80,160] [--step-ms 200]
                                 [--worst 16] [--device cpu|cuda] [--json out.json]

DINet_optimized's features (HuBERT-ASR CTC emissions, every second frame, through the
mapper) come from a transformer that attends to its whole input, so a stream computes
them on a sliding window (talkrt.runtime.align.SlidingContext). For each context this
measures, on spoken sentences (espeak-ng; a synthetic voice without it):

* the cosine of every 25 Hz emission frame against the whole-utterance emission frame
  (gate: hubert-asr's emission cosine), and the same for the mapped features (gate:
  dinet-mapper's feature cosine);
* downstream, DINet's faces for the ``--worst`` frames whose mapped features stray the
  most, rendered from the streamed windows and from the whole-utterance windows, compared
  on the mouth (gate: DINet's mouth PSNR).

The gates are the ones an FP16 engine must pass against FP32, read from the graphs'
ExportSpecs: a context is good enough when it costs no more than half precision does.
The smallest context that passes every gate is the one to declare as the default.
Without ``--asr`` / ``--mapper`` / ``--generator`` the models have random weights; a
random transformer mixes its whole input far more evenly than a trained one, so those
numbers are an upper bound on the deviation, not the trained model's.

The models run in PyTorch on ``--device`` (fp32; on CUDA without TF32, whose rounding
would add to the deviation measured); their outputs come back to the host to be compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

from _machine import REPO, cuda_problem, machine_info  # noqa: E402  (perf/ is on sys.path when run as a script)
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from _report import emit, result_header, results_table  # noqa: E402  (imports talkrt)
from talkrt.models.dinet.alignment import CTC_25HZ  # noqa: E402
from talkrt.models.registry import get_spec  # noqa: E402
from talkrt.precision.gates import gate_value  # noqa: E402
from talkrt.runtime.align import SlidingContext, gather_windows, num_video_frames  # noqa: E402
from talkrt.runtime.audio import resample  # noqa: E402
from talkrt.runtime.context_deviation import frame_cosines, measure_contexts, smallest_passing  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402

SENTENCES = (
    "The quick brown fox jumps over the lazy dog, then reads the evening news aloud.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
)
FPS = 25


def spoken(seconds_fallback: float) -> tuple[torch.Tensor, str]:
    """The sentences spoken by espeak-ng at 16 kHz, with short pauses; synthetic speech without espeak-ng."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return torch.from_numpy(synthetic_speech(seconds_fallback, seed=3)), f"synthetic speech, {seconds_fallback:g} s"
    pieces = []
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-context-") as folder:
        for index, sentence in enumerate(SENTENCES):
            path = Path(folder) / f"{index}.wav"
            subprocess.run([espeak, "-w", str(path), sentence], check=True, capture_output=True, timeout=60)
            with wave.open(str(path), "rb") as handle:
                pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
                rate = handle.getframerate()
            pieces += [resample(torch.from_numpy(pcm), rate, 16000), torch.zeros(4000)]
    wav = torch.cat(pieces)
    return wav, f"espeak-ng, {len(SENTENCES)} sentences, {len(wav) / 16000:.1f} s"


def models(args, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, str]:
    asr = get_spec("hubert-asr", preset=args.preset).build_module(args.asr, seed=0)
    mapper = get_spec("dinet-mapper").build_module(args.mapper, seed=1)
    generator = get_spec("dinet").build_module(args.generator, seed=2)
    weights = "trained" if args.asr and args.mapper and args.generator else "random (upper bound)" if not (args.asr or args.mapper or args.generator) else "mixed"
    return asr.eval().to(device), mapper.eval().to(device), generator.eval().to(device), weights


def mouth_psnr(generator, windows_whole: torch.Tensor, windows_streamed: torch.Tensor, gate) -> float:
    """The DINet gate's PSNR between faces rendered from the two sets of windows (same face inputs)."""
    spec = get_spec("dinet")
    device = next(generator.parameters()).device
    inputs = {name: value.to(device) for name, value in spec.example_inputs({"batch": len(windows_whole)}, seed=4).items()}
    faces = []
    for windows in (windows_whole, windows_streamed):
        with torch.no_grad():
            faces.append(generator(inputs["source_image"], inputs["reference_images"], windows.to(device)).cpu().numpy())
    return gate_value(gate, faces[0], faces[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asr", type=Path, help="hubert-large-ls960-ft as a transformers directory (default: random weights)")
    parser.add_argument("--mapper", type=Path, help="DINet_optimized's mapper checkpoint (default: random weights)")
    parser.add_argument("--generator", type=Path, help="DINet's generator checkpoint (default: random weights)")
    parser.add_argument("--preset", default="hubert-large-ls960-ft")
    parser.add_argument("--left-ms", default="250,500,1000,2000,4000")
    parser.add_argument("--lookahead-ms", default="0,80,160")
    parser.add_argument("--step-ms", type=float, default=200.0)
    parser.add_argument("--worst", type=int, default=16, help="frames rendered downstream (the most deviating)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    problem = cuda_problem(args.device, ort=False)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions would round the whole and the streamed features differently

    wav, speech = spoken(12.0)
    asr, mapper, generator, weights = models(args, device)
    emission_gate = get_spec("hubert-asr", preset=args.preset).gates[0]
    feature_gate = get_spec("dinet-mapper").gates[0]
    mouth_gate = get_spec("dinet").gates[0]

    def emissions(samples: torch.Tensor) -> torch.Tensor:  # (29, T) at 25 Hz on the host: every second 50 Hz emission
        with torch.no_grad():
            return asr(samples.to(device).reshape(1, -1))[0, ::2].T.contiguous().cpu()

    def mapped(columns: torch.Tensor) -> torch.Tensor:  # on the host: .cpu() also waits for the GPU
        with torch.no_grad():
            return mapper(columns.to(device).T[None])[0].T.cpu()

    contexts = [SlidingContext.of_ms(left, args.step_ms, ahead, CTC_25HZ.hop) for left in map(float, args.left_ms.split(",")) for ahead in map(float, args.lookahead_ms.split(","))]
    begin = time.perf_counter()
    whole, deviations = measure_contexts(emissions, CTC_25HZ, wav, contexts)
    whole_mapped = mapped(whole)
    frames = num_video_frames(len(wav), FPS)
    indices = CTC_25HZ.window_indices(whole.shape[-1], frames, FPS)
    rows, records = [], []
    for deviation in deviations:
        context = deviation.context
        alignment = dataclasses.replace(CTC_25HZ, context=context)
        streamed_emissions = deviation.streamed
        streamed_mapped = mapped(streamed_emissions)
        feature_cosines = frame_cosines(whole_mapped, streamed_mapped)
        emission_min = gate_value(emission_gate, whole.T.numpy(), streamed_emissions.T.numpy())
        feature_min = gate_value(feature_gate, whole_mapped.T.numpy(), streamed_mapped.T.numpy())
        worst = np.argsort(np.array([feature_cosines[row].min() for row in indices.numpy()]), kind="stable")[: args.worst]
        pick = indices[torch.from_numpy(np.sort(worst))]
        psnr = mouth_psnr(generator, gather_windows(whole_mapped, pick), gather_windows(streamed_mapped, pick), mouth_gate)
        passed = emission_gate.passes(emission_min) and feature_gate.passes(feature_min) and mouth_gate.passes(psnr)
        records.append({"context": context.describe(alignment), "left_ms": context.left / 16, "lookahead_ms": context.lookahead / 16,
                        "step_ms": context.step * CTC_25HZ.hop / 16, "emission_cosine_min": emission_min, "emission_cosine_mean": deviation.mean_cosine,
                        "feature_cosine_min": feature_min, "mouth_psnr_db_worst_frames": psnr, "passed": passed})
        rows.append((f"{context.left / 16:g}", f"{context.lookahead / 16:g}", f"{emission_min:.5f}", f"{deviation.mean_cosine:.5f}",
                     f"{feature_min:.5f}", f"{psnr:.1f}", "pass" if passed else "fail"))
    chosen = smallest_passing((deviation.context, record["passed"]) for deviation, record in zip(deviations, records))
    wall = time.perf_counter() - begin
    choice = chosen.describe(dataclasses.replace(CTC_25HZ, context=chosen)) if chosen else "none passes"
    result = {
        **result_header("context", machine_info(args.device, [])),
        "device": args.device, "speech": speech, "weights": weights, "preset": args.preset, "step_ms": args.step_ms, "worst_frames": args.worst,
        "gates": {"emissions": emission_gate.to_json(), "features": feature_gate.to_json(), "mouth": mouth_gate.to_json()},
        "contexts": records, "smallest_passing": choice, "wall_s": round(wall, 1),
    }
    table = results_table(
        f"sliding context against the whole utterance ({args.preset}, {weights} weights; {speech}; {args.step_ms:g} ms steps; torch on {args.device})",
        [("left ms", "right"), ("lookahead ms", "right"), (f"emission cos min (>= {emission_gate.threshold})", "right"), ("emission cos mean", "right"),
         (f"feature cos min (>= {feature_gate.threshold})", "right"), (f"mouth PSNR dB, {args.worst} worst (>= {mouth_gate.threshold})", "right"), ("", "left")],
        rows,
    )
    emit(result, table, args.json, width=150, lines=[f"smallest context passing every gate: {choice}", f"wall {wall:.0f} s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
