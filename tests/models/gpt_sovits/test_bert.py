"""GPT-SoVITS BERT features: hidden_states[-3] per character, repeated per word2ph; strict loading of a
transformers checkpoint directory with the released key set; ONNX export with dynamic lengths."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fake_checkpoints import key_listing

from talkrt.errors import TalkrtError
from talkrt.models.gpt_sovits.bert import (
    BertPhoneFeatures,
    character_ids,
    expansion_index,
    large_config,
    load_bert,
    phone_features,
    random_bert,
    small_config,
)

LISTING = "chinese_roberta_wwm_ext_large"
SMALL = dict(hidden=32, layers=4, vocab_size=50)


def _small() -> tuple[torch.nn.Module, BertPhoneFeatures]:
    masked_lm = random_bert(small_config(**SMALL), seed=0)
    return masked_lm, BertPhoneFeatures(masked_lm).eval()


def test_expansion_index() -> None:
    assert expansion_index([2, 1, 2]).tolist() == [0, 0, 1, 2, 2]
    assert expansion_index([1, 0, 3]).tolist() == [0, 2, 2, 2]


@torch.no_grad()
def test_features_are_hidden_states_minus_3_repeated_per_word2ph() -> None:
    masked_lm, features = _small()
    word2ph = [2, 1, 2, 2, 1]
    ids = torch.tensor([[1, 7, 8, 9, 10, 11, 2]])
    out = features(ids, torch.ones_like(ids), expansion_index(word2ph))
    assert out.shape == (sum(word2ph), 32)
    reference = masked_lm(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[-3][0, 1:-1]
    expected = torch.cat([reference[i].repeat(n, 1) for i, n in enumerate(word2ph)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # Each character's row repeats exactly word2ph[i] times.
    assert torch.equal(out[0], out[1]) and torch.equal(out[3], out[4]) and not torch.equal(out[1], out[2])


@torch.no_grad()
def test_phone_features_layout_and_zeros_for_english() -> None:
    _, features = _small()
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "你": 4, "好": 5, ",": 6}
    assert character_ids("你好,呀", vocab).tolist() == [[1, 4, 5, 6, 3, 2]]
    out = phone_features(features, vocab, "你好,", [2, 2, 1], 5)
    assert out.shape == (32, 5)  # (hidden, n_phones) as the original returns it
    assert torch.count_nonzero(phone_features(features, vocab, "hello", None, 7, language="en")) == 0
    assert phone_features(None, None, "", None, 3, language="en").shape == (1024, 3)
    with pytest.raises(TalkrtError, match="sums to"):
        phone_features(features, vocab, "你好,", [2, 2, 1], 6)


def test_full_size_model_has_exactly_the_released_keys() -> None:
    from transformers import BertForMaskedLM

    with torch.device("meta"):
        model = BertForMaskedLM(large_config())
    state = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert state == key_listing(LISTING)


# The released key set at a small size: every width scaled down, all 24 layers kept.
_SCALE = {1024: 32, 4096: 64, 21128: 60, 512: 40}


def _fake_checkpoint(folder, drop=(), add=None, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, _dtype) in key_listing(LISTING).items():
        if key not in drop:
            state[key] = torch.randn(tuple(_SCALE.get(n, n) for n in shape), generator=generator) * 0.05
    # The MLM decoder is tied to the word embeddings (and its bias to the head's bias).
    for tied, source in (("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"), ("cls.predictions.decoder.bias", "cls.predictions.bias")):
        if tied in state:
            state[tied] = state[source]
    state.update(add or {})
    config = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": 60, "hidden_size": 32, "num_hidden_layers": 24,
              "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 40, "type_vocab_size": 2}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "你", "好"]), encoding="utf-8")
    return state


@torch.no_grad()
def test_fake_released_checkpoint_loads_strictly(tmp_path) -> None:
    state = _fake_checkpoint(tmp_path, add={"bert.pooler.dense.weight": torch.zeros(32, 32), "bert.embeddings.position_ids": torch.arange(40)[None]})
    model = load_bert(tmp_path)
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.23.output.dense.bias", "cls.predictions.transform.dense.weight"):
        assert torch.equal(model.state_dict()[key], state[key])
    features = BertPhoneFeatures(model)
    assert len(features.layers) == 22
    ids = torch.tensor([[2, 4, 5, 3]])
    out = features(ids, torch.ones_like(ids), expansion_index([2, 2]))
    reference = model(input_ids=ids, output_hidden_states=True).hidden_states[-3][0, 1:-1]
    torch.testing.assert_close(out, reference.repeat_interleave(2, dim=0), atol=1e-5, rtol=1e-5)


def test_tied_weights_may_be_omitted(tmp_path) -> None:
    _fake_checkpoint(tmp_path, drop=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"))
    load_bert(tmp_path)


@pytest.mark.parametrize(
    ("drop", "add", "pattern"),
    [
        (("bert.encoder.layer.7.attention.self.key.bias",), None, "1 missing .*layer.7.attention.self.key.bias"),
        ((), {"bert.encoder.layer.24.output.dense.bias": torch.zeros(32)}, "1 unexpected .*layer.24"),
        ((), {"bert.embeddings.LayerNorm.weight": torch.zeros(33)}, "mis-shaped .*LayerNorm.weight"),
    ],
)
def test_wrong_keys_fail_in_one_line(tmp_path, drop, add, pattern) -> None:
    _fake_checkpoint(tmp_path, drop=drop, add=add)
    with pytest.raises(TalkrtError, match=pattern) as err:
        load_bert(tmp_path)
    assert "\n" not in str(err.value)


def test_not_a_checkpoint_directory(tmp_path) -> None:
    with pytest.raises(TalkrtError, match="no config.json"):
        load_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4}))
    with pytest.raises(TalkrtError, match="no model.safetensors or pytorch_model.bin"):
        load_bert(tmp_path)


@torch.no_grad()
def test_exports_to_onnx_with_dynamic_lengths() -> None:
    ort = pytest.importorskip("onnxruntime")
    _, features = _small()
    generator = torch.Generator().manual_seed(1)

    def inputs(n_chars: int, word2ph: list[int]):
        ids = torch.randint(4, SMALL["vocab_size"], (1, n_chars + 2), generator=generator)
        return ids, torch.ones_like(ids), expansion_index(word2ph)

    buffer = io.BytesIO()
    names = ["input_ids", "attention_mask", "phone_to_char"]
    torch.onnx.export(
        features, inputs(6, [2, 2, 1, 2, 2, 1]), buffer, input_names=names, output_names=["features"], opset_version=17, dynamo=False,
        dynamic_axes={"input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"}, "phone_to_char": {0: "phones"}, "features": {0: "phones"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for n_chars, word2ph in ((3, [2, 1, 2]), (11, [2] * 5 + [1] + [2] * 5)):
        feed = inputs(n_chars, word2ph)
        (got,) = session.run(None, dict(zip(names, (t.numpy() for t in feed))))
        expected = features(*feed)
        assert got.shape == (sum(word2ph), 32)
        torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
