"""GPT-SoVITS on one device: the GPT's prefill once, its step graph once per token, then the SoVITS decoder.

Every graph is a runner (ONNX Runtime, TensorRT / TensorRT-RTX, or PyTorch; see
``specs``). The autoregressive loop keeps its state on the device: the step graph
samples in-graph, and its outputs (token, seen-token mask) are the next step's
inputs, so two sets of buffers go round (outputs are never written over the inputs
they are computed from). The KV caches are one pair: the step only reads them and
gives the token's new rows, which are written in at its slot (one row per layer,
not a copy of the caches). Per token the host only queues work: a copy of the
step's uniforms, the step, the rows' write, two one-element copies into the token
and end-flag records and the position increment. It reads the end flags back every
``check_every`` tokens (one synchronisation); the tokens decoded after the first
end flag are discarded, so the result does not depend on ``check_every``.
``generate_chunks`` yields the tokens known at each of those reads (for streaming);
``generate`` is its last yield.

The loop's tensors (``_Decoding``) are kept from one generation to the next at fixed
addresses. On a GPU with a capturable step runner (PyTorch, TensorRT) the first
generation captures the step in two CUDA graphs, one per direction of the two buffer
sets, and every token after that is one graph replay (``capture`` says whether and why
not).

With the same uniforms the tokens are those of ``gpt.generate`` step for step.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from talkrt.engines.devices import normalize_device
from talkrt.engines.runners.base import TORCH_DTYPES
from talkrt.errors import TalkrtError
from talkrt.models.family import read_manifest as read_family_manifest
from talkrt.models.gpt_sovits.gpt import write_step
from talkrt.models.gpt_sovits.specs import ALL_GRAPHS, EXPORT_FORMAT, GRAPHS, MANIFEST, PACKAGE, SAMPLING, Models, build_graph, gpt_sovits_specs, load_models
from talkrt.runtime.pipeline import CapturePlan, abandon_capture, plan_capture

CHECK_EVERY = 8
# Eager steps on the capture stream before capturing: lazy set-up (kernel modules, library
# handles and their per-stream workspaces) must not happen inside the capture.
CAPTURE_WARMUP = 3


@dataclass
class Decoded:
    """Semantic tokens of one utterance and what producing them took."""

    tokens: torch.Tensor  # (1, N) int64 on the device, EOS excluded
    steps: int  # decoding steps run, including those after the end flag (discarded)
    host_checks: int  # end-flag reads (host synchronisations)
    stopped: bool  # an end flag was raised (else the step limit ended decoding)
    done: bool = True  # False: tokens so far, from generate_chunks before decoding ended


def step_capture_plan(device: torch.device, step_runner, enabled: bool = True) -> CapturePlan:
    """Whether the decoding step replays as CUDA graphs on ``device``, and why not."""
    return plan_capture(device, enabled, [step_runner], "the step is captured at the first generation and replayed per token")


class _Decoding:
    """The AR loop's tensors, at fixed addresses. Two sets of the step's outputs take turns as the
    step's inputs and outputs: the prefill writes set 0, step ``i`` reads set ``(i - 1) % 2`` and
    writes set ``i % 2``. The KV caches are one pair: the prefill fills them, each step reads them
    and its new rows are written in at its position. The step's other inputs (position, lengths,
    settings, uniforms) are one tensor each, written in place on the device, so a captured step
    replays on them all (two graphs, one per direction of the sets)."""

    def __init__(self, synth: "GptSovitsSynthesizer") -> None:
        device = synth.device

        def scalar(dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(1, dtype=dtype, device=device)

        self.k_cache = torch.empty(synth.cache_shape, device=device)
        self.v_cache = torch.empty(synth.cache_shape, device=device)
        self.sets = (synth._buffers(), synth._buffers())
        # the prefill writes set 0's token, flag, logits and seen mask, and the whole caches
        self.prefill_outputs = {
            **{name: self.sets[0][name] for name in ("next_token", "stop", "logits", "seen_out")},
            "k_cache_out": self.k_cache,
            "v_cache_out": self.v_cache,
        }
        self.position, self.text_len, self.prefix_len = scalar(torch.int64), scalar(torch.int64), scalar(torch.int64)
        self.settings = {"top_k": scalar(torch.int64), "top_p": scalar(torch.float32), "temperature": scalar(torch.float32), "repetition_penalty": scalar(torch.float32)}
        self.uniforms = torch.ones(1, synth.vocab_size, device=device)
        self.feeds = tuple(self._feed(source) for source in self.sets)
        self.graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None

    def _feed(self, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step's inputs when it reads ``source``."""
        return {
            "token": source["next_token"],
            "position": self.position,
            "k_cache": self.k_cache,
            "v_cache": self.v_cache,
            "text_len": self.text_len,
            "prefix_len": self.prefix_len,
            "seen": source["seen_out"],
            "uniforms": self.uniforms,
            **self.settings,
        }

    def start(self, text_len: int, filled: int, top_k: int, top_p: float, temperature: float, repetition_penalty: float) -> None:
        """Set one utterance's scalars (fills queued on the device, no synchronisation)."""
        self.position.fill_(filled)
        self.prefix_len.fill_(filled)
        self.text_len.fill_(text_len)
        for name, value in (("top_k", int(top_k)), ("top_p", float(top_p)), ("temperature", float(temperature)), ("repetition_penalty", float(repetition_penalty))):
            self.settings[name].fill_(value)

    def step(self, index: int, run: Callable[[dict, dict], None]) -> dict[str, torch.Tensor]:
        """Decoding step ``index`` (>= 1): a graph replay when captured, else ``advance``; its outputs."""
        turn = (index - 1) % 2
        if self.graphs is not None:
            self.graphs[turn].replay()
        else:
            self.advance(turn, run)
        return self.sets[1 - turn]

    def advance(self, turn: int, run: Callable[[dict, dict], None]) -> None:
        """The step reading set ``turn`` (``run(inputs, outputs)``), then its new K/V rows written
        into the caches at the position: what a captured graph replays."""
        out = self.sets[1 - turn]
        run(self.feeds[turn], out)
        write_step(self.k_cache, self.v_cache, self.position, out["k_new"], out["v_new"])


class GptSovitsSynthesizer:
    """Phones + BERT features + prompt tokens -> semantic tokens -> 32 kHz waveform, with runners
    named by graph: ``prefill``, ``step``, ``decoder`` and optionally ``reference``, ``latent``, ``hubert``."""

    def __init__(
        self, runners: Mapping[str, object], manifest: Mapping, device: str | torch.device = "cpu", check_every: int = CHECK_EVERY, cuda_graphs: bool = True
    ) -> None:
        missing = [graph for graph in ("prefill", "step", "decoder") if graph not in runners]
        if missing:
            raise TalkrtError(f"GPT-SoVITS needs the {', '.join(missing)} graph(s)")
        if check_every < 1:
            raise TalkrtError(f"check_every must be at least 1, got {check_every}")
        self.runners = dict(runners)
        self.manifest = dict(manifest)
        self.device = normalize_device(device)
        self.check_every = int(check_every)
        self.cache_len = int(manifest["cache_len"])
        self.vocab_size = int(manifest["vocab_size"])
        self.sample_rate = int(manifest["sample_rate"])
        self.samples_per_token = int(manifest["samples_per_token"])
        self.inter_channels = int(manifest["inter_channels"])
        cache = next(t for t in self.runners["step"].io.inputs if t.name == "k_cache")
        self.cache_shape = tuple(int(size) for size in cache.shape)
        self.capture = step_capture_plan(self.device, self.runners["step"], cuda_graphs)
        self._decoding: _Decoding | None = None  # kept between generations (and captured on a GPU)
        self._decoding_busy = False
        self._stream: torch.cuda.Stream | None = None  # the step runner's stream once capture bound it

    @property
    def cuda_graph_used(self) -> bool:
        """Whether the step now replays as CUDA graphs (``capture`` says why not)."""
        return self._decoding is not None and self._decoding.graphs is not None

    # --- construction

    @classmethod
    def from_models(
        cls, models: Models, device: str | torch.device = "cpu", check_every: int = CHECK_EVERY, torch_dtype: torch.dtype = torch.float32, cuda_graphs: bool = True
    ) -> "GptSovitsSynthesizer":
        """PyTorch runners around loaded models (the reference backend)."""
        from talkrt.engines.runners import make_runner

        specs = gpt_sovits_specs(sizes=models.sizes)
        runners = {
            graph: make_runner("torch", spec=specs[graph], module=build_graph(graph=graph, models=models), device=device, torch_dtype=torch_dtype)
            for graph in GRAPHS
        }
        return cls(runners, manifest_of(models), device, check_every, cuda_graphs)

    @classmethod
    def from_manifest(
        cls,
        directory: str | os.PathLike,
        backend: str = "ort",
        device: str | torch.device = "cpu",
        trust: bool = False,
        check_every: int = CHECK_EVERY,
        cuda_graphs: bool = True,
    ) -> "GptSovitsSynthesizer":
        """The graphs of ``directory/manifest.json``: ``ort`` its ONNX files, ``trt`` the engines
        ``build_gpt_sovits_engines`` recorded, ``torch`` the models rebuilt from its preset and seed
        (or checkpoint directory)."""
        from talkrt.engines.runners import make_runner

        directory = Path(directory)
        manifest = read_manifest(directory)
        if backend == "torch":
            models = load_models(manifest.get("preset"), manifest.get("checkpoint"), trust, int(manifest.get("seed") or 0), int(manifest["cache_len"]))
            return cls.from_models(models, device, check_every, cuda_graphs=cuda_graphs)
        if manifest.get("format", 1) != EXPORT_FORMAT:
            raise TalkrtError(
                f"{directory} was exported by another talkrt version (format {manifest.get('format', 1)}, this one reads {EXPORT_FORMAT}): "
                f"export it again with talkrt export gpt-sovits --out-dir {directory}"
            )
        if backend == "ort":
            paths = {graph: directory / name for graph, name in manifest["files"].items()}
        elif backend == "trt":
            engines = manifest.get("engines") or {}
            missing = [graph for graph in ("prefill", "step", "decoder") if graph not in engines or not (directory / engines[graph]).is_file()]
            if missing:
                raise TalkrtError(f"{directory} has no {', '.join(missing)} engine; build them with `talkrt build {directory}` (or use the ort backend)")
            paths = {graph: directory / name for graph, name in engines.items()}
        else:
            raise TalkrtError(f"unknown backend {backend!r}; choose ort, trt or torch")
        runners = {graph: make_runner(backend, path, device=device) for graph, path in paths.items()}
        return cls(runners, manifest, device, check_every, cuda_graphs)

    # --- helpers

    def _staged(self, tensor: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``tensor`` on the device, contiguous and at the start of its own memory (engines
        need aligned addresses: a view at an offset, such as a slice, is copied)."""
        tensor = tensor.to(self.device, dtype)
        return tensor if tensor.is_contiguous() and tensor.storage_offset() == 0 else tensor.clone(memory_format=torch.contiguous_format)

    def _ids(self, values, what: str) -> torch.Tensor:
        tensor = torch.as_tensor(values, dtype=torch.int64).reshape(1, -1)
        if tensor.shape[1] == 0:
            raise TalkrtError(f"{what} is empty")
        return self._staged(tensor, torch.int64)

    def _float(self, value: float) -> torch.Tensor:
        return torch.tensor([float(value)], dtype=torch.float32, device=self.device)

    def _buffers(self) -> dict[str, torch.Tensor]:
        """One set of the step's outputs (static shapes)."""
        return {t.name: torch.empty(t.shape, dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.runners["step"].io.outputs}

    # --- the GPT

    def generate(
        self,
        phones,
        bert_features: torch.Tensor,
        prompt_tokens,
        *,
        uniforms: torch.Tensor | None = None,
        seed: int | None = None,
        top_k: int = SAMPLING["top_k"],
        top_p: float = SAMPLING["top_p"],
        temperature: float = SAMPLING["temperature"],
        repetition_penalty: float = SAMPLING["repetition_penalty"],
        max_new_tokens: int | None = None,
    ) -> Decoded:
        """Decode semantic tokens for one utterance: the prefill, then one step graph per token.

        ``phones`` (T,) or (1, T) ids of prompt text + target text, ``bert_features``
        (1, 1024, T), ``prompt_tokens`` (P,) or (1, P) with P >= 1. ``uniforms``
        (steps, 1, vocab) in (0, 1] fixes the sampler's randomness (as ``gpt.generate``
        takes it); without it they are drawn on the device (from ``seed``). Decoding
        stops at the first end flag, after ``max_new_tokens`` steps, or when the
        cache is full (``cache_len`` slots for text, prompt and new tokens).
        """
        chunks = self.generate_chunks(
            phones, bert_features, prompt_tokens, every=self.check_every, uniforms=uniforms, seed=seed, top_k=top_k, top_p=top_p,
            temperature=temperature, repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens,
        )
        for decoded in chunks:  # one loop for both: the last yield is the result
            pass
        return decoded

    def generate_chunks(
        self,
        phones,
        bert_features: torch.Tensor,
        prompt_tokens,
        *,
        every: int | None = None,
        uniforms: torch.Tensor | None = None,
        seed: int | None = None,
        top_k: int = SAMPLING["top_k"],
        top_p: float = SAMPLING["top_p"],
        temperature: float = SAMPLING["temperature"],
        repetition_penalty: float = SAMPLING["repetition_penalty"],
        max_new_tokens: int | None = None,
    ) -> Iterator[Decoded]:
        """``generate`` as it goes: at each end-flag check (every ``every`` tokens, default
        ``check_every``) with no flag raised yet, the tokens so far (``done`` False); last, the
        result ``generate`` returns (``done`` True). Each yield extends the previous one, and the
        tokens do not depend on ``every``. The yielded tensors are views of one buffer whose
        prefix is never rewritten, so earlier yields stay valid.
        """
        every = self.check_every if every is None else int(every)
        if every < 1:
            raise TalkrtError(f"every must be at least 1, got {every}")
        phones, prompt = self._ids(phones, "phones"), self._ids(prompt_tokens, "prompt_tokens")
        bert = self._staged(bert_features.reshape(1, -1, phones.shape[1]))
        text_len, filled = phones.shape[1], phones.shape[1] + prompt.shape[1]
        # the step at slot filled + i - 1 gives the logits of step i; the last slot is cache_len - 1
        steps = self.cache_len - filled + 1
        if steps < 1:
            raise TalkrtError(f"text ({text_len}) + prompt ({prompt.shape[1]}) fill {filled} slots; the cache has {self.cache_len}")
        if max_new_tokens is not None:
            steps = min(steps, int(max_new_tokens))
        if uniforms is not None:
            uniforms = uniforms.to(self.device, torch.float32).reshape(-1, 1, self.vocab_size)
            steps = min(steps, uniforms.shape[0])
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        decoding = self._take_decoding()
        try:
            drawn = decoding.uniforms

            def draw(index: int) -> torch.Tensor:
                if uniforms is not None:
                    return drawn.copy_(uniforms[index])
                torch.rand(drawn.shape, generator=generator, device=self.device, out=drawn)
                return drawn.neg_().add_(1.0)  # (0, 1]: -log(u) stays finite

            decoding.start(text_len, filled, top_k, top_p, temperature, repetition_penalty)
            first = decoding.sets[0]
            self.runners["prefill"].run({"phones": phones, "bert_features": bert, "prompt_tokens": prompt, "uniforms": draw(0), **decoding.settings}, decoding.prefill_outputs)
            if decoding is self._decoding and decoding.graphs is None and self.capture.use:
                self._capture(decoding)
            tokens = torch.empty(steps, dtype=torch.int64, device=self.device)
            stops = torch.empty(steps, dtype=torch.int64, device=self.device)
            tokens[0:1].copy_(first["next_token"].reshape(1))
            stops[0:1].copy_(first["stop"])
            ran, checks = 1, 0
            while ran < steps:
                if ran % every == 0:
                    checks += 1
                    if bool(stops[:ran].any()):  # the one host synchronisation every `every` tokens
                        break
                    # no flag among them: all ran tokens are final, the caller may use them now
                    yield Decoded(tokens[:ran].reshape(1, -1), ran, checks, False, done=False)
                draw(ran)
                out = decoding.step(ran, self._run_step)
                # launches sliced by a host index, not synchronisations
                tokens[ran : ran + 1].copy_(out["next_token"].reshape(1))
                stops[ran : ran + 1].copy_(out["stop"])
                decoding.position.add_(1)
                ran += 1
            checks += 1
            flags = stops[:ran].nonzero()
            count = int(flags[0, 0]) if flags.numel() else ran
            yield Decoded(tokens[:count].reshape(1, -1), ran, checks, bool(flags.numel()))
        finally:
            self._release_decoding(decoding)

    def _take_decoding(self) -> _Decoding:
        """The kept loop tensors, or new ones for a generation that overlaps the one holding them
        (a server interleaves its sessions' streams on one voice)."""
        if self._decoding is None:
            self._decoding = _Decoding(self)
        if self._decoding_busy:
            return _Decoding(self)
        self._decoding_busy = True
        return self._decoding

    def _release_decoding(self, decoding: _Decoding) -> None:
        if decoding is self._decoding:
            self._decoding_busy = False

    def _run_step(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """One eager step. Once capture has bound the step runner to its own stream, that stream waits
        for the caller's queued work and the caller's stream for the step: no host synchronisation."""
        if self._stream is None:
            self.runners["step"].run(inputs, outputs)
            return
        with self._on_capture_stream():
            self.runners["step"].run(inputs, outputs)

    @contextlib.contextmanager
    def _on_capture_stream(self) -> Iterator[None]:
        caller = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(caller)
        with torch.cuda.stream(self._stream):
            yield
        caller.wait_stream(self._stream)

    def _capture(self, decoding: _Decoding) -> None:
        """Capture the step on ``decoding``'s tensors, one graph per direction. Called after the
        prefill: the warm-up steps read its outputs (set 0) and write set 1 and the cache rows at
        the first position, which step 1 writes again with the same values. When capture fails the
        loop stays eager and ``capture`` says why."""
        runner = self.runners["step"]
        self._stream = torch.cuda.Stream(self.device)
        runner.activate(self._stream)  # a graph records the stream the runner launches on; not the default stream
        with self._on_capture_stream():
            for _ in range(CAPTURE_WARMUP):
                decoding.advance(0, runner.run)
        graphs: list[torch.cuda.CUDAGraph] = []
        try:
            # The outer stream context restores the caller's stream even if ending a capture raises.
            with torch.cuda.stream(self._stream):
                for turn in (0, 1):
                    graphs.append(torch.cuda.CUDAGraph())
                    # One memory pool for both: a step's temporaries are dead when it ends and the
                    # graphs never run at once. thread_local: other threads' CUDA calls (a server's
                    # encoder, say) stay legal while this thread captures.
                    pool = graphs[0].pool() if turn else None
                    with torch.cuda.graph(graphs[turn], pool=pool, stream=self._stream, capture_error_mode="thread_local"):
                        decoding.advance(turn, runner.run)
        except Exception as error:  # eager is correct, only slower: say why
            self.capture = abandon_capture(graphs, self.device, error)
            return
        decoding.graphs = (graphs[0], graphs[1])

    # --- SoVITS

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """The reference's linear spectrogram (1, bins, frames) from a 32 kHz waveform (samples,) or (1, samples)."""
        from talkrt.models.gpt_sovits.sovits import linear_spectrogram

        stft = self.manifest["spectrogram"]
        return self._staged(linear_spectrogram(waveform.to(self.device, torch.float32).reshape(1, -1), stft["n_fft"], stft["hop"], stft["win"]))

    def reference_style(self, ref_spectrogram: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        """ge (1, gin, 1) from the reference spectrogram (and, for v2Pro, its speaker embedding)."""
        if "reference" not in self.runners:
            raise TalkrtError("this synthesizer has no reference graph")
        inputs = {"ref_spectrogram": self._staged(ref_spectrogram)}
        if "sv_emb" in self.runners["reference"].input_names:
            if sv_emb is None:
                raise TalkrtError(f"this voice ({self.manifest.get('sovits_version')}) needs the speaker-verification embedding sv_emb")
            inputs["sv_emb"] = self._staged(sv_emb.reshape(1, -1))
        return self.runners["reference"].run(inputs)["ge"]

    def prompt_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The reference's semantic tokens (1, P) from its HuBERT features (1, frames, ssl_dim)."""
        if "latent" not in self.runners:
            raise TalkrtError("this synthesizer has no latent graph")
        return self.runners["latent"].run({"features": self._staged(features)})["codes"][0]

    def decode(
        self, codes: torch.Tensor, phones, ge: torch.Tensor, *, noise: torch.Tensor | None = None, noise_scale: float = SAMPLING["noise_scale"], seed: int | None = None
    ) -> torch.Tensor:
        """Waveform (samples,) at ``sample_rate`` from semantic tokens (N,) or (1, N), the target
        text's phones and ``ge``. ``noise`` (1, inter_channels, 2 * N) standard normal, drawn
        (from ``seed``) when not given."""
        codes = self._staged(codes.reshape(1, 1, -1), torch.int64)
        count = codes.shape[2]
        if count == 0:
            return torch.zeros(0, device=self.device)
        if noise is None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
            noise = torch.randn(1, self.inter_channels, 2 * count, generator=generator, device=self.device)
        if tuple(noise.shape) != (1, self.inter_channels, 2 * count):
            raise TalkrtError(f"noise must be (1, {self.inter_channels}, {2 * count}), got {tuple(noise.shape)}")
        inputs = {
            "codes": codes,
            "phones": self._ids(phones, "phones"),
            "ge": self._staged(ge),
            "noise": self._staged(noise.reshape(1, self.inter_channels, count, 2)),
            "noise_scale": self._float(noise_scale),
        }
        return self.runners["decoder"].run(inputs)["waveform"][0, 0]


def manifest_of(models: Models) -> dict:
    """The manifest facts the runtime reads, for models not exported (the torch backend)."""
    sizes, sov = models.sizes, models.sizes.sovits
    return {
        "family": PACKAGE,
        "cache_len": sizes.cache_len,
        "vocab_size": sizes.gpt.vocab_size,
        "eos": sizes.gpt.eos,
        "sample_rate": sov.sampling_rate,
        "samples_per_token": sov.samples_per_token,
        "inter_channels": sov.inter_channels,
        "sovits_version": sov.version,
        "spectrogram": {"n_fft": sov.filter_length, "hop": sov.hop_length, "win": sov.win_length},
    }


# ----------------------------------------------------------------------------- manifest and engines


def read_manifest(directory: str | os.PathLike) -> dict:
    return read_family_manifest(directory, PACKAGE, "gpt-sovits", "GPT-SoVITS")


def build_gpt_sovits_engines(directory: str | os.PathLike, options=None, graphs: Sequence[str] | None = None) -> dict:
    """Build an engine for each graph in the manifest (default: all of them) and record them in it."""
    from talkrt.engines.build import BuildOptions, build_engine
    from talkrt.fileio import write_text_atomic

    directory = Path(directory)
    manifest = read_manifest(directory)
    options = options or BuildOptions()
    chosen = tuple(manifest["files"]) if graphs is None else tuple(graphs)
    unknown = [graph for graph in chosen if graph not in manifest["files"]]
    if unknown:
        raise TalkrtError(f"{directory} has no {', '.join(unknown)} graph; it has {', '.join(manifest['files'])}")
    engines = dict(manifest.get("engines") or {})
    for graph in (g for g in ALL_GRAPHS if g in chosen):
        result = build_engine(directory / manifest["files"][graph], directory / f"{graph}.engine", options)
        engines[graph] = result.engine.name
    manifest["engines"] = engines
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
