"""hubert-asr: HubertForCTC -> 50 Hz CTC emissions in torchaudio HUBERT_ASR_LARGE's 29-label order.

Reference values come from transformers' own HubertForCTC and Wav2Vec2FeatureExtractor;
the label order and the facebook/hubert-large-ls960-ft vocab are written out here.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.export.validate import onnx_session, validate_onnx
from talkrt.models.hubert.model import ENCODER_PRESETS, SpeechRecognizer, build_random, ctc_label_index, load_pretrained_ctc, num_frames, read_vocab

pytestmark = pytest.mark.filterwarnings("ignore")

PRESET = "tiny-hubert-asr"
# torchaudio.pipelines.HUBERT_ASR_LARGE.get_labels()
TORCHAUDIO_LABELS = ("-", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z")
# facebook/hubert-large-ls960-ft vocab.json; "<pad>" is the CTC blank
HF_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8, "N": 9, "I": 10, "H": 11, "S": 12, "R": 13, "D": 14, "L": 15, "U": 16, "M": 17, "W": 18, "C": 19, "F": 20, "G": 21, "Y": 22, "P": 23, "B": 24, "V": 25, "K": 26, "'": 27, "X": 28, "J": 29, "Q": 30, "Z": 31}
HF_INDEX = [0, *range(4, 32)]

runner = CliRunner()


def _speech(batch: int, samples: int, seed: int) -> np.ndarray:
    """Noise with an offset and a per-item scale, so the normalisation matters."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, samples)) * rng.uniform(0.05, 0.5, (batch, 1)) + 0.03).astype(np.float32)


def _reference_emissions(model, wav: np.ndarray) -> torch.Tensor:
    """transformers' own pipeline: feature extractor (do_normalize) -> HubertForCTC logits -> torchaudio's 29 labels."""
    from transformers import Wav2Vec2FeatureExtractor

    prepared = Wav2Vec2FeatureExtractor(do_normalize=True)(list(wav), sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        return model(prepared).logits[..., HF_INDEX]


def _write_ctc_checkpoint(directory, seed: int = 0, vocab: dict | None = HF_VOCAB, **config_overrides):
    """A facebook/hubert-large-ls960-ft style directory (legacy weight-norm names, as its files hold them)."""
    from safetensors.torch import save_file
    from transformers import HubertConfig, HubertForCTC

    torch.manual_seed(seed)
    config = HubertConfig(**{**ENCODER_PRESETS[PRESET].config, **config_overrides})
    model = HubertForCTC(config).eval()
    state = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v.contiguous() for k, v in model.state_dict().items()}
    directory.mkdir(parents=True)
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": ["HubertForCTC"]}))
    (directory / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000, "feature_size": 1}))
    if vocab is not None:
        (directory / "vocab.json").write_text(json.dumps(vocab))
    return model


def test_random_model_equals_transformers_ctc_logits() -> None:
    from transformers import HubertConfig, HubertForCTC

    ours = get_spec("hubert-asr", preset=PRESET).build_module(None, seed=5)
    assert isinstance(ours, SpeechRecognizer) and ours.normalize
    assert ours.index.tolist() == HF_INDEX and "index" not in ours.state_dict()
    reference = HubertForCTC(HubertConfig(**ENCODER_PRESETS[PRESET].config)).eval()
    reference.load_state_dict({k[len("model.") :]: v for k, v in ours.state_dict().items()}, strict=True)
    wav = _speech(2, 7777, seed=0)
    with torch.no_grad():
        emissions = ours(torch.from_numpy(wav))
    assert emissions.shape == (2, num_frames(7777), 29)
    torch.testing.assert_close(emissions, _reference_emissions(reference, wav), atol=1e-5, rtol=1e-5)


def test_label_index_rules() -> None:
    assert list(ctc_label_index(32)) == HF_INDEX
    assert list(ctc_label_index(29)) == list(range(29))  # a head already in torchaudio's order
    shuffled = {token: 31 - i for token, i in HF_VOCAB.items()}
    assert [31 - i for i in ctc_label_index(32, shuffled)] == HF_INDEX  # looked up by token, not position
    with pytest.raises(TalkrtError, match=r"40 classes is not supported; supported: 32 .* or 29"):
        ctc_label_index(40)
    with pytest.raises(TalkrtError, match="two CTC labels the same index"):
        ctc_label_index(32, {**HF_VOCAB, "Z": 5})
    with pytest.raises(TalkrtError, match=r"'Z'=32 outside the 32 classes"):
        ctc_label_index(32, {**HF_VOCAB, "Z": 32})


def test_checkpoint_directory_loads_strictly_with_its_head(tmp_path) -> None:
    from transformers import HubertForCTC

    reference = _write_ctc_checkpoint(tmp_path / "hubert-large-ls960-ft", seed=3)
    assert read_vocab(tmp_path / "hubert-large-ls960-ft") == HF_VOCAB
    spec = get_spec("hubert-asr", checkpoint=str(tmp_path / "hubert-large-ls960-ft"))
    assert spec.metadata["vocab_index"] == ",".join(map(str, HF_INDEX)) and spec.metadata["source"] == "hubert-large-ls960-ft"
    ours = spec.build_module(str(tmp_path / "hubert-large-ls960-ft"))
    assert ours.index.tolist() == HF_INDEX
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.model.state_dict()[key], value), key
    theirs = HubertForCTC.from_pretrained(str(tmp_path / "hubert-large-ls960-ft")).eval()
    wav = _speech(1, 6400, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(torch.from_numpy(wav)), _reference_emissions(theirs, wav), atol=1e-5, rtol=1e-5)


def test_bad_checkpoints_are_refused_in_one_line(tmp_path) -> None:
    _write_ctc_checkpoint(tmp_path / "no-q", vocab={k: v for k, v in HF_VOCAB.items() if k != "Q"})
    _write_ctc_checkpoint(tmp_path / "vocab40", vocab=None, vocab_size=40)
    for directory, pattern in ((tmp_path / "no-q", r"vocab\.json lacks 'Q'"), (tmp_path / "vocab40", r"40 classes is not supported; supported: 32")):
        for load in (lambda d: get_spec("hubert-asr", checkpoint=str(d)), lambda d: load_pretrained_ctc(d)):
            with pytest.raises(TalkrtError, match=pattern) as info:
                load(directory)
            assert "\n" not in str(info.value)
    # an encoder checkpoint has no CTC head
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    from safetensors.torch import save_file
    from transformers import HubertConfig

    save_file(build_random(ENCODER_PRESETS[PRESET]).state_dict(), str(encoder / "model.safetensors"))
    (encoder / "config.json").write_text(json.dumps(HubertConfig(**ENCODER_PRESETS[PRESET].config).to_dict()))
    with pytest.raises(TalkrtError, match=r"has no CTC head \(no lm_head\.weight\)"):
        load_pretrained_ctc(encoder)
    with pytest.raises(TalkrtError, match="has no HuBERT CTC head; hubert-asr presets: hubert-large-ls960-ft, tiny-hubert-asr"):
        get_spec("hubert-asr", preset="tiny-hubert")


def test_normalize_follows_the_preprocessor_config(tmp_path) -> None:
    _write_ctc_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert get_spec("hubert-asr", checkpoint=str(tmp_path / "ckpt")).metadata["normalize"] == "none"
    assert get_spec("hubert-asr", checkpoint=str(tmp_path / "ckpt"), normalize=True).metadata["normalize"] == "inside graph"
    assert get_spec("hubert-asr").metadata["normalize"] == "inside graph"  # the hubert-large-ls960-ft preset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    spec = get_spec("hubert-asr", preset=PRESET)
    module = spec.build_module(None, seed=7)
    path = tmp_path_factory.mktemp("asr") / "hubert-asr.onnx"
    report = export_onnx(spec, module, path)
    return spec, module, path, report


def test_onnx_parity_at_other_lengths(exported) -> None:
    spec, module, path, report = exported
    assert [r.point for r in report.validation] == [{"batch": 1, "samples": 400}, {"batch": 3, "samples": 12345}]
    assert all(r.ok for r in report.validation)
    results = validate_onnx(spec, module, path, points=({"batch": 2, "samples": 16001}, {"batch": 1, "samples": 48000}), seed=20)
    assert all(r.ok for r in results), [r.describe() for r in results]
    session = onnx_session(path)
    for samples in (719, 720, 32000):  # last sample before / at a new frame, and the traced length
        wav = _speech(1, samples, seed=samples)
        (actual,) = session.run(["emissions"], {"input_values": wav})
        with torch.no_grad():
            expected = module(torch.from_numpy(wav)).numpy()
        assert actual.shape == (1, num_frames(samples), 29)
        np.testing.assert_allclose(actual, expected, atol=spec.tolerance.atol, rtol=spec.tolerance.rtol)


def test_rtx_build(exported, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, build_engine

    _, _, path, _ = exported
    result = build_engine(path, tmp_path / "hubert-asr.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.9",)))
    assert result.engine.stat().st_size > 0
    assert [t["name"] for t in result.metadata["outputs"]] == ["emissions"]


def test_dinet_pipeline_runs_from_the_asr_and_mapper_graphs(exported, tmp_path) -> None:
    """DINet_optimized's feature chain through ONNX Runtime: emissions -> every second frame -> mapper."""
    from talkrt.engines.runners import make_runner
    from talkrt.models.dinet.renderer import CtcFeatures
    from talkrt.models.dinet.alignment import CTC_25HZ

    _, asr_module, asr_path, _ = exported
    mapper_spec = get_spec("dinet-mapper")
    mapper_module = mapper_spec.build_module(None, seed=3)
    mapper_path = tmp_path / "dinet-mapper.onnx"
    export_onnx(mapper_spec, mapper_module, mapper_path, validate=False)
    source = CtcFeatures(make_runner("ort", asr_path), make_runner("ort", mapper_path))
    wav = torch.from_numpy(_speech(1, 8000, seed=1)[0])
    features = source(wav)
    assert features.shape == (29, CTC_25HZ.num_feature_frames(8000)) and source.alignment is CTC_25HZ
    with torch.no_grad():
        expected = mapper_module(asr_module(wav[None])[:, ::2])[0].T
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_graph_dims_and_metadata(exported) -> None:
    _, _, path, _ = exported
    model = onnx.load(str(path))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)]
    assert dims == [["batch", "samples"], ["batch", "frames", 29]]
    meta = read_metadata(path)
    assert meta["talkrt.family"] == "hubert-asr"
    assert meta["talkrt.labels"] == "".join(TORCHAUDIO_LABELS) and len(meta["talkrt.labels"]) == 29
    assert meta["talkrt.blank"] == "0" and meta["talkrt.feature_rate"] == "50" and meta["talkrt.sample_rate"] == "16000"
    assert "HUBERT_ASR_LARGE" in meta["talkrt.tensor.emissions"]
    stored = json.loads(meta["talkrt.spec"])
    assert stored["derived_dims"] == {"frames": "floor((samples - 400) / 320) + 1"}
    assert stored["gates"][0]["output"] == "emissions" and stored["gates"][0]["threshold"] == 0.995


def test_cli_export_from_checkpoint_directory(tmp_path) -> None:
    checkpoint = tmp_path / "hubert-large-ls960-ft"
    _write_ctc_checkpoint(checkpoint, seed=2)
    out = tmp_path / "asr.onnx"
    result = runner.invoke(app, ["export", "hubert-asr", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    meta = read_metadata(out)
    assert meta["talkrt.source"] == "hubert-large-ls960-ft" and meta["talkrt.labels"] == "".join(TORCHAUDIO_LABELS)

    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["export", "hubert-asr", "--checkpoint", str(missing), "--out", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 2 and "no config.json" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "bad.onnx").exists()
    result = runner.invoke(app, ["export", "hubert-asr", "--out", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 2 and "exactly one of --checkpoint PATH or --random-init" in result.output
