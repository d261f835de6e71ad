"""VITS export: encoder | length regulation | decoder against transformers' own VitsModel.forward.

Real exports, real ONNX Runtime sessions and real TensorRT-RTX builds (CPU-only,
ahead of time). transformers draws its two noises with torch.randn /
torch.randn_like; the tests make those calls return seeded noise and feed the
same tensors to the exported graphs as inputs.
"""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import numpy as np
import onnx
import pytest
import torch

from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.export.validate import onnx_session
from talkrt.models.vits.graphs import decoder_receptive_field, rational_quadratic_spline
from talkrt.models.vits.specs import (
    GRAPHS,
    TRACE_TOKENS,
    build_vits_graph,
    export_vits,
    vits_spec,
    vits_specs,
    vits_specs_for_model,
)
from talkrt.models.vits.model import build_random_vits
from talkrt.models.vits.synth import VitsSynthesizer

LENGTHS = (1, 2, 5, 6, 37, 200)


@contextlib.contextmanager
def transformers_noise(seed: int = 0):
    """Inside, VitsModel.forward's torch.randn (duration noise) and torch.randn_like (prior
    noise) return seeded normal noise; the dict records what they returned."""
    generator = torch.Generator().manual_seed(seed)
    drawn: dict[str, torch.Tensor] = {}
    real_randn = torch.randn

    def randn(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        drawn["duration_noise"] = real_randn(shape, generator=generator)
        return drawn["duration_noise"]

    def randn_like(tensor, **kwargs):
        drawn["latent_noise"] = real_randn(tuple(tensor.shape), generator=generator)
        return drawn["latent_noise"]

    with mock.patch.object(torch, "randn", randn), mock.patch.object(torch, "randn_like", randn_like):
        yield drawn


def reference(model, sequences, *, speaking_rate=0.8, zero_noise=False, speaker_id=None, seed=0):
    """transformers' VitsModel.forward on a padded batch: (waveform, sequence_lengths, noise drawn)."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    scales = (model.noise_scale, model.noise_scale_duration)
    if zero_noise:
        model.noise_scale = model.noise_scale_duration = 0.0
    try:
        with torch.no_grad(), transformers_noise(seed) as drawn:
            output = model(ids, attention_mask=mask, speaker_id=speaker_id, speaking_rate=speaking_rate)
    finally:
        model.noise_scale, model.noise_scale_duration = scales
    return output.waveform, output.sequence_lengths, drawn


def chain(synthesizer, model, sequences, drawn, *, speaking_rate=0.8, zero_noise=False, speaker_id=None):
    """The three-part chain with the noise transformers drew."""
    return synthesizer.infer(
        sequences,
        speaker_id=speaker_id,
        noise_scale=0.0 if zero_noise else model.noise_scale,
        noise_scale_w=0.0 if zero_noise else model.noise_scale_duration,
        length_scale=1.0 / speaking_rate,
        duration_noise=drawn.get("duration_noise"),
        latent_noise=drawn.get("latent_noise"),
    )


def random_tokens(count: int, vocab: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (count,), generator=generator).tolist()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("vits-tiny")
    manifest = export_vits(out, preset="tiny", seed=0)
    return out, manifest


@pytest.fixture(scope="module")
def tiny_model():
    return build_random_vits("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_ort(tiny_export):
    return VitsSynthesizer.from_manifest(tiny_export[0], backend="ort")


# ----------------------------------------------------------------------------- the spline


@pytest.mark.parametrize("reverse", [True, False])
def test_where_spline_equals_transformers_inside_and_outside_the_tail_bound(reverse) -> None:
    from transformers.models.vits.modeling_vits import _unconstrained_rational_quadratic_spline

    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, 1, 400, generator=generator) * 4.0  # about a fifth lies beyond +-5
    inputs[0, 0, :4] = torch.tensor([-5.0, 5.0, -7.5, 12.0])  # on and beyond both bounds
    widths, heights = torch.randn(2, 1, 400, 10, generator=generator), torch.randn(2, 1, 400, 10, generator=generator)
    derivatives = torch.randn(2, 1, 400, 9, generator=generator)
    expected, expected_logdet = _unconstrained_rational_quadratic_spline(inputs, widths, heights, derivatives.clone(), reverse=reverse, tail_bound=5.0)
    actual, actual_logdet = rational_quadratic_spline(inputs, widths, heights, derivatives, reverse=reverse, tail_bound=5.0)
    outside = inputs.abs() > 5.0
    assert outside.sum() > 100 and (~outside).sum() > 100
    assert torch.allclose(actual, expected, atol=1e-5, rtol=0) and torch.allclose(actual_logdet, expected_logdet, atol=1e-5, rtol=0)
    assert torch.equal(actual[outside], inputs[outside])


# ----------------------------------------------------------------------------- specs and files


def test_specs_and_registry() -> None:
    specs = vits_specs("tiny")
    assert set(specs) == set(GRAPHS)
    decoder = get_spec("vits", graph="decoder", preset="tiny")
    assert decoder.to_json() == specs["decoder"].to_json()
    assert decoder.derived_dims == {"samples": "frames * 16"}
    assert [t.name for t in decoder.inputs] == ["prior_means", "prior_log_variances", "latent_noise", "noise_scale", "output_mask"]
    encoder = vits_spec("encoder", preset="mms-tts-eng")
    assert [t.name for t in encoder.inputs] == ["input_ids", "input_lengths", "duration_noise", "noise_scale_w", "length_scale"]
    assert [t.name for t in encoder.outputs] == ["durations", "prior_means", "prior_log_variances", "input_mask"]
    assert encoder.outputs[1].shape == ("batch", 192, "tokens")
    assert encoder.dim("tokens").trace_size >= 6 and encoder.dim("batch").trace_size == 2
    assert {"Exp", "CumSum", "ReduceSum", "Softmax", "LayerNormalization", "Pow"} <= set(encoder.keep_fp32_ops)
    assert [(g.output, g.metric, g.threshold) for g in vits_spec("decoder").gates] == [("waveform", "snr", 30.0)]
    assert encoder.metadata["sample_rate"] == "16000" and encoder.metadata["hop"] == "256"
    assert decoder_receptive_field(build_random_vits("tiny").config) == int(decoder.metadata["decoder_receptive_field_frames"])
    vctk = vits_spec("decoder", preset="vctk-base")
    assert vctk.inputs[-1].name == "speaker_id" and vctk.metadata["n_speakers"] == "109" and vctk.metadata["sample_rate"] == "22050"


def test_export_writes_manifest_and_noise_free_graphs(tiny_export) -> None:
    out, manifest = tiny_export
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["files"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "full": "full.onnx"}
    assert (manifest["sample_rate"], manifest["hop"], manifest["num_speakers"], manifest["add_blank"]) == (16000, 16, 1, True)
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0 and manifest["source"] == "random"
    for graph in GRAPHS:
        model = onnx.load(str(out / f"{graph}.onnx"))
        ops = {node.op_type for node in model.graph.node}
        assert not ops & {"RandomNormalLike", "RandomNormal", "RandomUniformLike", "NonZero", "ScatterND"}, graph
        metadata = read_metadata(model)
        assert metadata["talkrt.family"] == "vits" and metadata["talkrt.graph"] == graph
        assert metadata["talkrt.sample_rate"] == "16000" and metadata["talkrt.hop"] == "16"
        assert metadata["talkrt.add_blank"] == "true" and metadata["talkrt.n_speakers"] == "1"
    decoder = onnx.load(str(out / "decoder.onnx"), load_external_data=False)
    assert [d.dim_param for d in decoder.graph.output[0].type.tensor_type.shape.dim] == ["batch", "", "samples"]


# ----------------------------------------------------------------------------- three-part chain vs transformers


@pytest.mark.parametrize("zero_noise", [True, False], ids=["noise-scales-0", "explicit-noise"])
def test_chain_equals_transformers_at_every_length(tiny_ort, tiny_model, zero_noise) -> None:
    worst = 0.0
    for index, length in enumerate(LENGTHS):
        tokens = random_tokens(length, tiny_model.config.vocab_size, seed=index)
        expected, lengths, drawn = reference(tiny_model, [tokens], zero_noise=zero_noise, seed=index)
        actual = chain(tiny_ort, tiny_model, [tokens], drawn, zero_noise=zero_noise)
        assert actual.sample_lengths.tolist() == lengths.tolist(), length
        assert actual.waveform.shape == expected.shape, length
        worst = max(worst, float((actual.waveform - expected).abs().max()))
    assert worst < 1e-4


@pytest.mark.parametrize("zero_noise", [True, False], ids=["noise-scales-0", "explicit-noise"])
def test_padded_batch_equals_transformers(tiny_ort, tiny_model, zero_noise) -> None:
    sequences = [random_tokens(23, 38, seed=7), random_tokens(9, 38, seed=8)]
    expected, lengths, drawn = reference(tiny_model, sequences, speaking_rate=2.0, zero_noise=zero_noise, seed=11)
    actual = chain(tiny_ort, tiny_model, sequences, drawn, speaking_rate=2.0, zero_noise=zero_noise)
    assert actual.sample_lengths.tolist() == lengths.tolist()
    assert lengths[0] != lengths[1]  # the items really differ in length
    assert actual.waveform.shape == expected.shape
    assert float((actual.waveform - expected).abs().max()) < 1e-4


def test_full_graph_runs_in_onnx_runtime(tiny_export, tiny_model) -> None:
    out, _ = tiny_export
    session = onnx_session(out / "full.onnx")
    sequences = [random_tokens(30, 38, seed=1), random_tokens(12, 38, seed=2)]
    expected, lengths, drawn = reference(tiny_model, sequences, seed=5)
    ids = np.zeros((2, 30), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
    latent = drawn["latent_noise"]
    extra = torch.randn(2, latent.shape[1], 50)  # more noise columns than frames: the graph cuts them
    feeds = {
        "input_ids": ids,
        "input_lengths": np.array([30, 12], dtype=np.int64),
        "duration_noise": drawn["duration_noise"].numpy(),
        "latent_noise": torch.cat([latent, extra], dim=2).numpy(),
        "noise_scale": np.array([tiny_model.noise_scale], dtype=np.float32),
        "noise_scale_w": np.array([tiny_model.noise_scale_duration], dtype=np.float32),
        "length_scale": np.array([1.25], dtype=np.float32),
    }
    waveform, sample_lengths = session.run(["waveform", "sample_lengths"], feeds)
    assert sample_lengths.tolist() == lengths.tolist()
    assert waveform.shape == (2, 1, expected.shape[1])
    assert np.abs(waveform[:, 0] - expected.numpy()).max() < 1e-4


def test_multi_speaker_and_plain_duration_predictor(tmp_path) -> None:
    """speaker_id (batch,) in both graphs; without the stochastic predictor no duration noise."""
    for overrides in ({"num_speakers": 3, "speaker_embedding_size": 8}, {"use_stochastic_duration_prediction": False}):
        model = build_random_vits("tiny", seed=2, **overrides)
        specs = vits_specs_for_model(model, "tiny")
        for graph in ("encoder", "decoder"):
            export_onnx(specs[graph], build_vits_graph(graph=graph, model=model), tmp_path / f"{graph}.onnx")
        names = [t.name for t in specs["encoder"].inputs]
        multi = "num_speakers" in overrides
        assert ("speaker_id" in names) == multi and ("duration_noise" in names) == model.config.use_stochastic_duration_prediction
        from talkrt.engines.runners import make_runner

        synthesizer = VitsSynthesizer(
            make_runner("ort", tmp_path / "encoder.onnx"),
            make_runner("ort", tmp_path / "decoder.onnx"),
            sample_rate=16000,
            hop_length=16,
            num_speakers=model.config.num_speakers,
            receptive_field=decoder_receptive_field(model.config),
        )
        sequences = [random_tokens(14, 38, seed=3), random_tokens(8, 38, seed=4)]
        speaker = 2 if multi else None
        expected, lengths, drawn = reference(model, sequences, speaker_id=speaker, seed=6)
        actual = chain(synthesizer, model, sequences, drawn, speaker_id=speaker)
        assert actual.sample_lengths.tolist() == lengths.tolist()
        assert float((actual.waveform - expected).abs().max()) < 1e-4


def test_mms_tts_eng_chain_equals_transformers(tmp_path) -> None:
    """The full-size MMS-TTS architecture (random weights): 192 channels, hop 256."""
    manifest = export_vits(tmp_path, preset="mms-tts-eng", graphs=("encoder", "decoder"), validate=False)
    assert manifest["hop"] == 256 and manifest["channels"] == 192
    model = build_random_vits("mms-tts-eng", seed=0)
    synthesizer = VitsSynthesizer.from_manifest(tmp_path, backend="ort")
    sequences = [random_tokens(TRACE_TOKENS + 9, 38, seed=9), random_tokens(6, 38, seed=10)]
    expected, lengths, drawn = reference(model, sequences, seed=12)
    actual = chain(synthesizer, model, sequences, drawn)
    assert actual.sample_lengths.tolist() == lengths.tolist()
    assert float((actual.waveform - expected).abs().max()) < 2e-4


# ----------------------------------------------------------------------------- TensorRT-RTX


def test_tensorrt_rtx_builds_encoder_and_decoder(tiny_export, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, build_engine, read_sidecar

    out, _ = tiny_export
    for graph in ("encoder", "decoder"):
        result = build_engine(out / f"{graph}.onnx", tmp_path / f"{graph}.engine", BuildOptions(backend="tensorrt-rtx", cache=False))
        sidecar = read_sidecar(result.engine)
        assert result.engine.stat().st_size > 100_000
        assert sidecar["family"] == "vits" and sidecar["graph"] == graph and sidecar["backend"]["name"] == "tensorrt-rtx"
        profile = sidecar["profiles"][0]
        if graph == "encoder":
            assert profile["input_ids"] == {"min": [1, 1], "opt": [1, 64], "max": [4, 400]}
            assert profile["duration_noise"]["max"] == [4, 2, 400]
        else:
            assert profile["latent_noise"] == {"min": [1, 16, 1], "opt": [1, 16, 256], "max": [4, 16, 4096]}
            assert [o["dims"] for o in sidecar["outputs"]] == [["batch", 1, "samples"]]
