"""The AR step as CUDA graphs: when the synthesizer captures it and why not (CPU), the kept loop
tensors with generations that overlap, and on a GPU the replayed step against eager, token for
token, with no host synchronisation per token. Tiny sizes, random weights."""

from __future__ import annotations

import pytest
import torch

from talkrt.engines.runners import make_runner
from talkrt.export.onnx import export_onnx
from talkrt.models.gpt_sovits.specs import build_graph, gpt_sovits_specs, load_models
from talkrt.models.gpt_sovits.synth import GptSovitsSynthesizer, step_capture_plan
from talkrt.runtime.pipeline import CapturePlan

pytestmark = pytest.mark.filterwarnings("ignore")

VOCAB = 1025


def _inputs(text_len: int, prompt_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, 732, (1, text_len), generator=generator)
    bert = torch.randn(1, 1024, text_len, generator=generator)
    prompt = torch.randint(0, VOCAB - 1, (1, prompt_len), generator=generator)
    return phones, bert, prompt


def _uniforms(steps: int, seed: int) -> torch.Tensor:
    return torch.rand(steps, 1, VOCAB, generator=torch.Generator().manual_seed(seed)).clamp_min(1e-6)


@pytest.fixture(scope="module")
def cpu_synth() -> GptSovitsSynthesizer:
    return GptSovitsSynthesizer.from_models(load_models("tiny", seed=0))


def test_the_plan_says_why_the_step_is_not_captured(cpu_synth, tmp_path) -> None:
    assert cpu_synth.capture == CapturePlan(False, "not on a GPU")
    cpu_synth.generate(*_inputs(4, 3, seed=1), seed=1, max_new_tokens=5)
    assert not cpu_synth.cuda_graph_used and not cpu_synth.capture.use
    cuda, step = torch.device("cuda", 0), cpu_synth.runners["step"]
    assert step_capture_plan(cuda, step).use
    assert step_capture_plan(cuda, step, enabled=False) == CapturePlan(False, "CUDA graphs turned off")
    models = load_models("tiny", seed=0)
    export_onnx(gpt_sovits_specs(sizes=models.sizes)["step"], build_graph(graph="step", models=models), tmp_path / "step.onnx", validate=False)
    assert step_capture_plan(cuda, make_runner("ort", tmp_path / "step.onnx")) == CapturePlan(False, "ONNX Runtime synchronises inside its run call")


def _interleaved(synth: GptSovitsSynthesizer, cases: list[tuple]) -> list[torch.Tensor]:
    """Run the generations of ``cases`` at once, one yield of each in turn; their final tokens."""
    streams = [synth.generate_chunks(*inputs, every=3, uniforms=uniforms) for inputs, uniforms in cases]
    last: list[torch.Tensor | None] = [None] * len(streams)
    while any(stream is not None for stream in streams):
        for index, stream in enumerate(streams):
            if stream is not None:
                decoded = next(stream, None)
                if decoded is None:
                    streams[index] = None
                else:
                    last[index] = decoded.tokens
    return last


def _overlapping_generations_match_one_at_a_time(synth: GptSovitsSynthesizer) -> None:
    cases = [(_inputs(5, 3, seed=2), _uniforms(20, seed=2)), (_inputs(7, 4, seed=3), _uniforms(17, seed=3))]
    alone = [synth.generate(*inputs, uniforms=uniforms).tokens for inputs, uniforms in cases]
    together = _interleaved(synth, cases)
    for ours, expected in zip(together, alone):
        assert torch.equal(ours, expected)
    again = synth.generate(*cases[0][0], uniforms=cases[0][1]).tokens  # the kept tensors are free again
    assert torch.equal(again, alone[0])


def test_overlapping_generations_match_one_at_a_time(cpu_synth) -> None:
    """The second of two interleaved generations gets tensors of its own: same tokens as alone."""
    _overlapping_generations_match_one_at_a_time(cpu_synth)


@pytest.mark.gpu
def test_the_captured_step_gives_the_eager_tokens_and_waveform() -> None:
    from torch.profiler import ProfilerActivity, profile

    models = load_models("tiny", seed=0)
    eager = GptSovitsSynthesizer.from_models(models, device="cuda", cuda_graphs=False)
    graphs = GptSovitsSynthesizer.from_models(models, device="cuda")
    assert eager.capture == CapturePlan(False, "CUDA graphs turned off") and graphs.capture.use
    phones, bert, prompt = _inputs(5, 3, seed=5)
    uniforms = _uniforms(40, seed=5)
    expected = eager.generate(phones, bert, prompt, uniforms=uniforms)
    first = graphs.generate(phones, bert, prompt, uniforms=uniforms)  # captures after its prefill
    assert graphs.cuda_graph_used, graphs.capture.reason
    second = graphs.generate(phones, bert, prompt, uniforms=uniforms)  # replays only
    for decoded in (first, second):
        assert torch.equal(decoded.tokens, expected.tokens) and decoded.steps == expected.steps

    # drawn on the device from a seed, other settings and lengths: the same as eager
    other = _inputs(9, 6, seed=6)
    settings = {"top_k": 0, "top_p": 0.8, "temperature": 0.7}
    assert torch.equal(graphs.generate(*other, seed=3, **settings).tokens, eager.generate(*other, seed=3, **settings).tokens)

    # per token nothing comes back to the host: one read per end-flag check (and the final count)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        decoded = graphs.generate(*other, seed=4, max_new_tokens=40)
        torch.cuda.synchronize()
    reads = [e.name for e in trace.events() if "Memcpy DtoH" in e.name]
    assert len(reads) <= decoded.host_checks + 2 < decoded.steps, reads

    _overlapping_generations_match_one_at_a_time(graphs)  # the overlapping one runs eagerly beside the graphs

    generator = torch.Generator().manual_seed(7)
    reference = (0.1 * torch.randn(32000, generator=generator)).cuda()
    ge = eager.reference_style(eager.spectrogram(reference))
    noise = torch.randn(1, eager.inter_channels, 2 * expected.tokens.shape[1], generator=generator).cuda()
    wave = eager.decode(expected.tokens, phones[:, 2:], ge, noise=noise)
    assert wave.numel() > 0 and torch.allclose(graphs.decode(second.tokens, phones[:, 2:], ge, noise=noise), wave, rtol=0, atol=1e-6)
