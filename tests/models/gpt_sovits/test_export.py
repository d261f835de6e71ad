"""GPT-SoVITS export and runtime: the specs, `talkrt export gpt-sovits` (random weights and a
checkpoint directory), the on-device AR loop against ``gpt.generate`` token for token
(ONNX Runtime and PyTorch runners), the SoVITS graphs against PyTorch, the v2Pro speaker
graph, and TensorRT-RTX builds of the step, decoder and speaker graphs (CPU-only, ahead of
time). Tiny sizes, random weights."""

from __future__ import annotations

import dataclasses
import json

import onnx
import pytest
import torch

from talkrt.errors import TalkrtError
from talkrt.export.named import export_named
from talkrt.export.onnx import export_onnx
from talkrt.models.gpt_sovits.gpt import generate
from talkrt.models.gpt_sovits.sovits import build_random_sovits
from talkrt.models.gpt_sovits.specs import (
    GRAPHS,
    PRESETS,
    SPEAKER,
    TINY_CACHE_LEN,
    TINY_SOVITS,
    Models,
    build_graph,
    build_random_gpt,
    export_gpt_sovits,
    gpt_sovits_specs,
    load_models,
)
from talkrt.models.gpt_sovits.synth import GptSovitsSynthesizer, manifest_of
from talkrt.models.registry import get_spec

pytestmark = pytest.mark.filterwarnings("ignore")

VOCAB = 1025
EOS = 1024


def _inputs(text_len: int, prompt_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, 732, (1, text_len), generator=generator)
    bert = torch.randn(1, 1024, text_len, generator=generator)
    prompt = torch.randint(0, EOS, (1, prompt_len), generator=generator)
    return phones, bert, prompt


def _uniforms(steps: int, seed: int) -> torch.Tensor:
    return torch.rand(steps, 1, VOCAB, generator=torch.Generator().manual_seed(seed)).clamp_min(1e-6)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt-sovits-tiny")
    # the CLI's path: `talkrt export gpt-sovits --random-init --preset tiny --out-dir OUT`
    done = export_named("gpt-sovits", out_dir=out, preset="tiny", random_init=True, seed=0)
    return out, json.loads((out / "manifest.json").read_text()), done.headline


@pytest.fixture(scope="module")
def tiny_models() -> Models:
    return load_models("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_ort(tiny_export):
    return GptSovitsSynthesizer.from_manifest(tiny_export[0], backend="ort")


# ----------------------------------------------------------------------------- specs


def test_specs_are_in_the_registry_with_shapes_dims_and_gates() -> None:
    step = get_spec("gpt-sovits", graph="step", preset="tiny")
    assert step.name == "gpt-sovits-step" and step.dims == ()
    assert [t.name for t in step.inputs] == [
        "token", "position", "k_cache", "v_cache", "text_len", "prefix_len", "seen", "uniforms", "top_k", "top_p", "temperature", "repetition_penalty",
    ]
    assert [t.name for t in step.outputs] == ["next_token", "stop", "logits", "k_new", "v_new", "seen_out"]
    assert step.inputs[2].shape == (2, 1, TINY_CACHE_LEN, 64) and step.outputs[3].shape == (2, 1, 1, 64)
    assert [(g.output, g.metric) for g in step.gates] == [("logits", "cosine")] and "CumSum" in step.keep_fp32_ops
    prefill = get_spec("gpt-sovits", graph="prefill", preset="tiny")
    assert [d.name for d in prefill.dims] == ["text", "prompt"]
    assert prefill.dim("text").max + prefill.dim("prompt").max < TINY_CACHE_LEN
    assert [t.name for t in prefill.outputs] == ["next_token", "stop", "logits", "k_cache_out", "v_cache_out", "seen_out"]
    assert prefill.outputs[3].shape == step.inputs[2].shape
    decoder = get_spec("gpt-sovits", graph="decoder", preset="tiny")
    assert decoder.derived_dims == {"samples": "tokens * 1280"} and decoder.inputs[3].shape == (1, 16, "tokens", 2)
    assert [(g.output, g.metric, g.threshold) for g in decoder.gates] == [("waveform", "snr", 30.0)]
    full = gpt_sovits_specs()  # the released v2 sizes, no weights loaded
    assert full["step"].inputs[2].shape == (24, 1, 1500, 512) and full["decoder"].metadata["sample_rate"] == "32000"
    assert [t.name for t in gpt_sovits_specs("v2Pro")["reference"].inputs] == ["ref_spectrogram", "sv_emb"]
    speaker = get_spec("gpt-sovits", graph=SPEAKER, preset="v2ProPlus")
    assert (speaker.name, speaker.inputs[0].shape, speaker.outputs[0].shape) == ("gpt-sovits-speaker", (1, "sv_frames", 80), (1, 20480))
    assert speaker.metadata["sovits_version"] == "v2ProPlus" and [(g.output, g.metric) for g in speaker.gates] == [("sv_emb", "cosine")]
    assert SPEAKER not in gpt_sovits_specs("v2") and SPEAKER not in full
    with pytest.raises(TalkrtError, match="the speaker graph is for v2Pro / v2ProPlus; this SoVITS is v2"):
        get_spec("gpt-sovits", graph=SPEAKER, preset="tiny")


def test_export_writes_the_graphs_and_manifest(tiny_export) -> None:
    out, manifest, headline = tiny_export
    assert manifest["files"] == {graph: f"{graph}.onnx" for graph in (*GRAPHS, "hubert")}
    assert (manifest["family"], manifest["cache_len"], manifest["sample_rate"], manifest["samples_per_token"]) == ("gpt_sovits", TINY_CACHE_LEN, 32000, 1280)
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0 and manifest["source"] == "random" and manifest["hubert_missing"] is None
    assert "prefill.onnx" in headline and "32000 Hz" in headline
    for graph in GRAPHS:
        model = onnx.load(str(out / f"{graph}.onnx"))
        ops = {node.op_type for node in model.graph.node}
        assert not ops & {"RandomNormalLike", "RandomNormal", "RandomUniform", "RandomUniformLike", "Multinomial"}, graph
        metadata = {p.key: p.value for p in model.metadata_props}
        assert metadata["talkrt.family"] == "gpt-sovits" and metadata["talkrt.graph"] == graph
    step = onnx.load(str(out / "step.onnx"))
    assert all(d.dim_value > 0 for value in (*step.graph.input, *step.graph.output) for d in value.type.tensor_type.shape.dim)


def test_checkpoint_directory_is_the_weights_source(tmp_path) -> None:
    tiny_gpt = PRESETS["tiny"].gpt
    gpt = build_random_gpt(tiny_gpt, seed=3)
    with torch.no_grad():  # the file holds float16, as released ones do: compare with the rounded weights
        for parameter in gpt.parameters():
            parameter.copy_(parameter.half().float())
    sovits = build_random_sovits(TINY_SOVITS, seed=3)
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({"weight": {"model." + k: v.half() for k, v in gpt.state_dict().items()}, "config": tiny_gpt.to_checkpoint_config()}, weights / "voice-e15.ckpt")
    config = {k: v for k, v in dataclasses.asdict(TINY_SOVITS).items() if k != "version"}
    torch.save({"weight": sovits.state_dict(), "config": {"model": config}, "info": "8epoch_96iteration"}, weights / "voice_e8_s96.pth")
    with pytest.raises(TalkrtError, match="not a single file"):
        export_named("gpt-sovits", out_dir=tmp_path / "x", checkpoint=weights / "voice-e15.ckpt")
    out = tmp_path / "out"
    export_named("gpt-sovits", out_dir=out, checkpoint=weights, validate=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == set(GRAPHS) and "chinese-hubert-base/" in manifest["hubert_missing"]
    assert manifest["source"] == "voice-e15.ckpt + voice_e8_s96.pth" and manifest["checkpoint"] == str(weights)
    # the checkpoint's weights, loaded strictly, are what the graphs run
    synth = GptSovitsSynthesizer.from_manifest(out, backend="ort")
    phones, bert, prompt = _inputs(6, 4, seed=1)
    uniforms = _uniforms(14, seed=1)
    expected = generate(gpt, phones, bert, prompt, uniforms)
    assert torch.equal(synth.generate(phones, bert, prompt, uniforms=uniforms).tokens, expected)
    (weights / "other.ckpt").write_bytes(b"")
    with pytest.raises(TalkrtError, match="exactly one GPT"):
        load_models(checkpoint=str(weights))


def test_v2pro_export_writes_the_speaker_graph(tmp_path) -> None:
    """`--random-init --preset v2Pro`: speaker.onnx at the released size, listed in the manifest
    (only that graph here: the GPT and SoVITS graphs are the v2 ones, tested above)."""
    manifest = export_gpt_sovits(tmp_path, preset="v2Pro", graphs=(SPEAKER,), validate=False)
    assert manifest["files"] == {SPEAKER: "speaker.onnx"} and manifest["sv_dim"] == 20480
    model = onnx.load(str(tmp_path / "speaker.onnx"), load_external_data=False)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["talkrt.family"] == "gpt-sovits" and metadata["talkrt.graph"] == SPEAKER
    assert [i.name for i in model.graph.input] == ["features"] and [o.name for o in model.graph.output] == ["sv_emb"]


def test_pro_checkpoint_directory_exports_its_sv_weights(tmp_path) -> None:
    """A Pro checkpoint directory: the speaker graph runs sv/'s weights (the released network's
    size); without sv/ the export is refused in one line before any graph is written."""
    from talkrt.engines.runners import make_runner
    from talkrt.models.gpt_sovits.speaker import SV_CHECKPOINT, SV_DIM, SV_FOLDER, build_speaker_encoder, speaker_spec

    sizes = PRESETS["tiny-pro"]
    sovits_config = dataclasses.replace(sizes.sovits, sv_dim=SV_DIM)  # a checkpoint's SoVITS takes the released sv_emb
    weights = tmp_path / "weights"
    weights.mkdir()
    gpt, sovits = build_random_gpt(sizes.gpt, seed=4), build_random_sovits(sovits_config, seed=4)
    torch.save({"weight": {"model." + k: v for k, v in gpt.state_dict().items()}, "config": sizes.gpt.to_checkpoint_config()}, weights / "pro-e15.ckpt")
    torch.save({"weight": sovits.state_dict(), "config": {"model": dataclasses.asdict(sovits_config)}}, weights / "pro_e8_s96.pth")
    out = tmp_path / "out"
    with pytest.raises(TalkrtError, match=r"copy pretrained_models/sv/pretrained_eres2netv2w24s4ep4\.ckpt to .*weights/sv/") as err:
        export_named("gpt-sovits", out_dir=out, checkpoint=weights, validate=False)
    assert "\n" not in str(err.value) and not list(out.glob("*.onnx"))
    speaker = build_speaker_encoder(seed=5)
    (weights / SV_FOLDER).mkdir()
    torch.save(speaker.state_dict(), weights / SV_FOLDER / SV_CHECKPOINT)
    export_named("gpt-sovits", out_dir=out, checkpoint=weights, validate=False)
    assert json.loads((out / "manifest.json").read_text())["files"][SPEAKER] == "speaker.onnx"
    features = torch.randn(1, 120, 80, generator=torch.Generator().manual_seed(6)) - 6.0
    with torch.no_grad():
        expected = speaker(features)
    tolerance = speaker_spec().tolerance
    emb = make_runner("ort", out / "speaker.onnx").run({"features": features})["sv_emb"]
    torch.testing.assert_close(emb, expected, atol=tolerance.atol, rtol=tolerance.rtol)


# ----------------------------------------------------------------------------- the AR loop


CASES = [
    (5, 3, {}),
    (12, 20, {"top_k": 0, "top_p": 0.8, "temperature": 0.7}),
    (1, 1, {"top_k": 1, "repetition_penalty": 2.0}),
]


@pytest.mark.parametrize("text_len, prompt_len, settings", CASES)
def test_onnx_runtime_loop_equals_generate_token_for_token(tiny_ort, tiny_models, text_len, prompt_len, settings) -> None:
    phones, bert, prompt = _inputs(text_len, prompt_len, seed=text_len)
    uniforms = _uniforms(30, seed=text_len)
    expected = generate(tiny_models.gpt, phones, bert, prompt, uniforms, **settings)
    decoded = tiny_ort.generate(phones, bert, prompt, uniforms=uniforms, **settings)
    assert expected.shape[1] == 30  # no EOS in these runs: every step compared
    assert torch.equal(decoded.tokens, expected)
    assert decoded.steps == 30 and decoded.host_checks == 30 // 8 + 1 and not decoded.stopped


def test_torch_runners_equal_generate_and_seeds_reproduce(tiny_export, tiny_models) -> None:
    synth = GptSovitsSynthesizer.from_models(tiny_models)
    phones, bert, prompt = _inputs(7, 5, seed=4)
    uniforms = _uniforms(20, seed=4)
    expected = generate(tiny_models.gpt, phones, bert, prompt, uniforms)
    assert torch.equal(synth.generate(phones, bert, prompt, uniforms=uniforms).tokens, expected)
    rebuilt = GptSovitsSynthesizer.from_manifest(tiny_export[0], backend="torch")  # the manifest's preset and seed
    assert torch.equal(rebuilt.generate(phones, bert, prompt, uniforms=uniforms).tokens, expected)
    first = synth.generate(phones, bert, prompt, seed=5, max_new_tokens=12).tokens
    assert first.shape == (1, 12) and torch.equal(first, synth.generate(phones, bert, prompt, seed=5, max_new_tokens=12).tokens)


def test_tokens_after_the_end_flag_are_discarded(tmp_path) -> None:
    """A GPT that wants EOS as soon as it may (step 11): decoding stops there whatever check_every is."""
    models = load_models("tiny", seed=2)
    gpt = models.gpt
    with torch.no_grad():
        last = gpt.h.layers[-1]
        last.norm2.bias.fill_(1.0)
        gpt.ar_predict_layer.weight[EOS].fill_(1.0)  # EOS logit ~ d_model, the others ~ 1
    specs = gpt_sovits_specs(sizes=models.sizes)
    from talkrt.engines.runners import make_runner

    runners = {}
    for graph in ("prefill", "step", "decoder"):
        export_onnx(specs[graph], build_graph(graph=graph, models=models), tmp_path / f"{graph}.onnx", validate=False)
        runners[graph] = make_runner("ort", tmp_path / f"{graph}.onnx")
    phones, bert, prompt = _inputs(4, 6, seed=3)
    uniforms = _uniforms(40, seed=3)
    expected = generate(gpt, phones, bert, prompt, uniforms)
    assert expected.shape == (1, 11)
    for check_every, steps in ((1, 12), (8, 16), (5, 15)):
        decoded = GptSovitsSynthesizer(runners, manifest_of(models), check_every=check_every).generate(phones, bert, prompt, uniforms=uniforms)
        assert torch.equal(decoded.tokens, expected) and decoded.stopped
        assert decoded.steps == steps, check_every  # ran on to the next check, then cut


# ----------------------------------------------------------------------------- SoVITS graphs


def test_reference_and_decoder_equal_pytorch(tiny_ort, tiny_models) -> None:
    sovits = tiny_models.sovits
    generator = torch.Generator().manual_seed(8)
    reference = 0.1 * torch.randn(32000, generator=generator)
    spec = tiny_ort.spectrogram(reference)
    assert spec.shape == (1, 1025, 50)
    with torch.no_grad():
        ge_torch = sovits.reference_style(spec)
    ge = tiny_ort.reference_style(spec)
    assert float((ge - ge_torch).abs().max()) < 1e-4
    phones, bert, prompt = _inputs(9, 6, seed=9)
    tokens = tiny_ort.generate(phones, bert, prompt, uniforms=_uniforms(25, seed=9)).tokens
    noise = torch.randn(1, TINY_SOVITS.inter_channels, 2 * tokens.shape[1], generator=generator)
    target = phones[:, 3:]
    waveform = tiny_ort.decode(tokens, target, ge, noise=noise, noise_scale=0.5)
    with torch.no_grad():
        expected = sovits.decode(tokens.reshape(1, 1, -1), target, ge_torch, noise, 0.5)[0, 0]
    assert waveform.shape == (tokens.shape[1] * 1280,)
    assert float((waveform - expected).abs().max()) < 2e-4
    assert tiny_ort.decode(tokens[:, :0], target, ge).numel() == 0


def test_hubert_graph_feeds_the_latent_graph(tiny_export, tiny_ort, tiny_models) -> None:
    """The reference's prompt tokens: the hubert family's graph, then gpt-sovits-latent."""
    from talkrt.engines.runners import make_runner

    out, manifest, _ = tiny_export
    wave = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(2))
    features = make_runner("ort", out / manifest["files"]["hubert"]).run({"input_values": wave})["features"]
    assert features.shape == (1, 49, TINY_SOVITS.ssl_dim)
    codes = tiny_ort.prompt_tokens(features)
    with torch.no_grad():
        expected = tiny_models.sovits.extract_latent(features.transpose(1, 2))[0]
    assert codes.shape == (1, 24) and torch.equal(codes, expected)


# ----------------------------------------------------------------------------- TensorRT-RTX


def test_tensorrt_rtx_builds_the_speaker_graph(tmp_path) -> None:
    """The tiny-pro speaker graph (a few seconds; the released size is not built here)."""
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, read_sidecar
    from talkrt.models.gpt_sovits.synth import build_gpt_sovits_engines

    export_gpt_sovits(tmp_path, preset="tiny-pro", graphs=(SPEAKER,))
    manifest = build_gpt_sovits_engines(tmp_path, BuildOptions(backend="tensorrt-rtx", cache=False))
    assert manifest["engines"] == {SPEAKER: "speaker.engine"}
    sidecar = read_sidecar(tmp_path / "speaker.engine")
    assert sidecar["graph"] == SPEAKER and sidecar["profiles"][0]["features"] == {"min": [1, 10, 80], "opt": [1, 500, 80], "max": [1, 3000, 80]}


def test_tensorrt_rtx_builds_step_and_decoder(tiny_export) -> None:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, read_sidecar
    from talkrt.models.gpt_sovits.synth import build_gpt_sovits_engines

    out, _, _ = tiny_export
    manifest = build_gpt_sovits_engines(out, BuildOptions(backend="tensorrt-rtx", cache=False), graphs=("step", "decoder"))
    assert manifest["engines"] == {"step": "step.engine", "decoder": "decoder.engine"}
    assert json.loads((out / "manifest.json").read_text())["engines"] == manifest["engines"]
    with pytest.raises(TalkrtError, match="has no prefill engine"):
        GptSovitsSynthesizer.from_manifest(out, backend="trt")
    for graph in ("step", "decoder"):
        sidecar = read_sidecar(out / f"{graph}.engine")
        assert sidecar["family"] == "gpt-sovits" and sidecar["graph"] == graph and sidecar["backend"]["name"] == "tensorrt-rtx"
        if graph == "decoder":
            assert sidecar["profiles"][0]["noise"] == {"min": [1, 16, 1, 2], "opt": [1, 16, 250, 2], "max": [1, 16, 1500, 2]}


def test_fp16_plans_hold_the_gpt_gates(tiny_export) -> None:
    """`talkrt check --candidate fp16`: the spec's FP32 ops and gates on the GPT and style graphs."""
    from talkrt.precision.check import check

    out, _, _ = tiny_export
    for graph in ("prefill", "step", "reference", "latent"):
        result = check(out / f"{graph}.onnx", "fp16")
        assert result.passed, (graph, result.rows)
