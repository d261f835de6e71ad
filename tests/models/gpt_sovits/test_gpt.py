"""GPT-SoVITS v2 GPT: strict loading of the official .ckpt layout, the cached step against a
full recompute, the sampler's rules, and the static-shape step through ONNX Runtime."""

from __future__ import annotations

import io

import pytest
import torch
from fake_checkpoints import fake_state_dict, key_listing

from talkrt.errors import TalkrtError
from talkrt.models.gpt_sovits.gpt import (
    EOS_MIN_STEPS,
    GPTConfig,
    GPTSampler,
    GPTStep,
    Text2SemanticGPT,
    generate,
    penalize_repetition,
    sample_next,
    seen_mask,
    write_step,
)
from talkrt.models.gpt_sovits.gpt_checkpoint import load_gpt
from talkrt.models.random_init import random_model

pytestmark = pytest.mark.filterwarnings("ignore")

LISTING = "gpt_sovits_s1_v2"
SMALL = GPTConfig.small()


def _small_model(seed: int = 0) -> Text2SemanticGPT:
    model = random_model(lambda: Text2SemanticGPT(SMALL), seed=seed)
    with torch.no_grad():  # alpha 1 everywhere would hide a swapped text/audio position scale
        model.ar_text_position.alpha.fill_(0.7)
        model.ar_audio_position.alpha.fill_(1.3)
    return model


def _inputs(text_len: int = 6, prompt_len: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, SMALL.phoneme_vocab_size, (1, text_len), generator=generator)
    bert = torch.randn(1, 1024, text_len, generator=generator)
    prompt = torch.randint(0, SMALL.eos, (1, prompt_len), generator=generator)
    return phones, bert, prompt


def _small_container(model: Text2SemanticGPT, config: GPTConfig = SMALL) -> dict:
    return {"weight": {"model." + k: v.half() for k, v in model.state_dict().items()}, "config": config.to_checkpoint_config()}


# ---------------------------------------------------------------- checkpoints


def test_official_layout_loads_strictly_from_fp16_file(tmp_path) -> None:
    """A file with every key and shape of the released v2 GPT, saved as the training code does (fp16)."""
    weight = {k: v.half() for k, v in fake_state_dict(LISTING).items()}
    config = GPTConfig().to_checkpoint_config() | {"train": {"epochs": 20}, "data": {"max_sec": 54}, "inference": {"top_k": 15}}
    path = tmp_path / "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
    torch.save({"weight": weight, "config": config}, path)
    model = load_gpt(path)
    assert model.config == GPTConfig() and not model.training
    state = model.state_dict()
    assert {"model." + k: tuple(v.shape) for k, v in state.items()} == {k: s for k, (s, _) in key_listing(LISTING).items()}
    assert all(v.dtype == torch.float32 for v in state.values())
    assert torch.equal(state["h.layers.23.linear1.weight"], weight["model.h.layers.23.linear1.weight"].float())


def test_missing_or_extra_key_fails_with_one_line() -> None:
    container = _small_container(_small_model())
    missing = {**container, "weight": {k: v for k, v in container["weight"].items() if k != "model.h.layers.1.norm2.bias"}}
    with pytest.raises(TalkrtError) as error:
        load_gpt(missing, source="gpt.ckpt")
    assert "1 missing" in str(error.value) and "h.layers.1.norm2.bias" in str(error.value) and "\n" not in str(error.value)
    extra = {**container, "weight": {**container["weight"], "model.ar_text_position.pe": torch.zeros(4, SMALL.d_model)}}
    with pytest.raises(TalkrtError, match="1 unexpected, e.g. ar_text_position.pe") as error:
        load_gpt(extra, source="gpt.ckpt")
    assert "\n" not in str(error.value)


def test_small_container_round_trips() -> None:
    model = _small_model()
    loaded = load_gpt(_small_container(model))
    phones, bert, prompt = _inputs()
    # fp16 storage rounds the weights; the loaded model is the rounded one
    expected = Text2SemanticGPT(SMALL).eval()
    expected.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    assert torch.equal(loaded.full_logits(phones, bert, prompt), expected.full_logits(phones, bert, prompt))


def test_v1_is_refused_in_one_line() -> None:
    v1 = GPTConfig.small(phoneme_vocab_size=512)
    container = _small_container(random_model(lambda: Text2SemanticGPT(v1)), v1)
    with pytest.raises(TalkrtError, match="v1 GPT .*not supported") as error:
        load_gpt(container, source="s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt")
    assert "\n" not in str(error.value)


def test_sovits_file_given_as_gpt_is_named() -> None:
    sovits = {"weight": {"enc_p.ssl_proj.weight": torch.zeros(2, 2), "dec.conv_pre.bias": torch.zeros(2)}, "config": {"model": {}}}
    with pytest.raises(TalkrtError, match="SoVITS .*not a GPT"):
        load_gpt(sovits, source="s2G2333k.pth")
    with pytest.raises(TalkrtError, match="expected a dict with 'weight' and 'config'"):
        load_gpt({"state_dict": {"x": torch.zeros(1)}}, source="other.ckpt")


def test_keys_without_lightning_prefix_are_refused() -> None:
    container = _small_container(_small_model())
    bare = {**container, "weight": {k[len("model.") :]: v for k, v in container["weight"].items()}}
    with pytest.raises(TalkrtError, match="lack the 'model.' prefix"):
        load_gpt(bare)


# ---------------------------------------------------------------- prefill and step


def test_text_rows_do_not_see_the_audio() -> None:
    model = _small_model()
    phones, bert, prompt = _inputs()
    other_prompt = (prompt + 1) % SMALL.eos
    with torch.no_grad():
        a, b = model.full_logits(phones, bert, prompt), model.full_logits(phones, bert, other_prompt)
    text_len = phones.shape[1]
    assert torch.equal(a[:, :text_len], b[:, :text_len]) and not torch.allclose(a[:, text_len:], b[:, text_len:])


@pytest.mark.parametrize("prompt_len", [4, 0])  # 0: the original's reference-free mode
def test_cached_steps_equal_full_recompute(prompt_len: int) -> None:
    model = _small_model()
    phones, bert, prompt = _inputs(prompt_len=prompt_len)
    text_len, max_len, steps = phones.shape[1], 32, 12
    fed = torch.randint(0, SMALL.eos, (1, steps), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, k_cache, v_cache, filled = model.prefill(phones, bert, prompt, max_len)
        assert filled == text_len + prompt_len and k_cache.shape == (SMALL.layers, 1, max_len, SMALL.d_model)
        assert torch.count_nonzero(k_cache[:, :, filled:]) == 0
        assert torch.allclose(logits, model.full_logits(phones, bert, prompt)[:, -1], atol=1e-5, rtol=0)
        for i in range(steps):
            position = torch.tensor([filled + i])
            logits, k_new, v_new = model.step(fed[:, i : i + 1], position, k_cache, v_cache, torch.tensor([text_len]))
            assert k_new.shape == v_new.shape == (SMALL.layers, 1, 1, SMALL.d_model)
            write_step(k_cache, v_cache, position, k_new, v_new)
            full = model.full_logits(phones, bert, torch.cat([prompt, fed[:, : i + 1]], dim=1))
            assert (logits - full[:, -1]).abs().max() < 1e-5, f"step {i}"
            assert torch.count_nonzero(k_cache[:, :, filled + i + 1 :]) == 0  # later slots untouched
        # the cache rows the steps wrote are those a full pass computes
        _, keys, values, _ = model.prefill(phones, bert, torch.cat([prompt, fed], dim=1), max_len)
        assert torch.allclose(k_cache, keys, atol=1e-5) and torch.allclose(v_cache, values, atol=1e-5)


def test_cache_past_the_position_table_is_refused() -> None:
    model = _small_model()
    phones, bert, prompt = _inputs()
    with pytest.raises(ValueError, match="position table"):
        model.prefill(phones, bert, prompt, phones.shape[1] + SMALL.max_positions + 1)
    with pytest.raises(ValueError, match="more than the cache"):
        model.prefill(phones, bert, prompt, 5)


def test_stale_cache_slots_are_not_read() -> None:
    """Garbage from ``position`` on (e.g. from an earlier, longer utterance) changes nothing."""
    model = _small_model()
    phones, bert, prompt = _inputs()
    with torch.no_grad():
        _, k_cache, v_cache, filled = model.prefill(phones, bert, prompt, 24)
        token, position, text_len = torch.tensor([[7]]), torch.tensor([filled]), torch.tensor([phones.shape[1]])
        clean = model.step(token, position, k_cache, v_cache, text_len)
        k_dirty, v_dirty = k_cache.clone(), v_cache.clone()
        k_dirty[:, :, filled:] = 5.0
        v_dirty[:, :, filled:] = -3.0
        dirty = model.step(token, position, k_dirty, v_dirty, text_len)
        assert all(torch.equal(a, b) for a, b in zip(dirty, clean))


# ---------------------------------------------------------------- sampler


def _uniforms(vocab: int, seed: int) -> torch.Tensor:
    return torch.rand(1, vocab, generator=torch.Generator().manual_seed(seed))


def test_sampler_is_a_function_of_its_uniforms() -> None:
    logits = torch.randn(1, SMALL.vocab_size, generator=torch.Generator().manual_seed(0))
    seen = torch.zeros_like(logits, dtype=torch.bool)
    picks = [sample_next(logits, seen, _uniforms(SMALL.vocab_size, s), 20, top_k=50)[0].item() for s in range(12)]
    again = [sample_next(logits, seen, _uniforms(SMALL.vocab_size, s), 20, top_k=50)[0].item() for s in range(12)]
    assert picks == again and len(set(picks)) > 1


def test_top_k_one_is_argmax() -> None:
    logits = torch.randn(3, SMALL.vocab_size, generator=torch.Generator().manual_seed(1))
    seen = torch.zeros_like(logits, dtype=torch.bool)
    for seed in range(5):
        token, _ = sample_next(logits, seen, torch.rand(3, SMALL.vocab_size, generator=torch.Generator().manual_seed(seed)), 20, top_k=1)
        assert torch.equal(token, logits.argmax(-1))


def test_repetition_penalty_rule() -> None:
    """Seen negative logits are multiplied by the penalty, seen positive ones divided; a token seen twice is penalized once."""
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -4.0]])
    seen = seen_mask(torch.tensor([[0, 0, 1, 1]]), 5)
    assert seen.tolist() == [[True, True, False, False, False]]
    assert penalize_repetition(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0, -4.0]]
    assert torch.equal(penalize_repetition(logits, seen, 1.0), logits)
    # through the sampler: token 0 leads unpenalized, token 3 leads once 0 is seen (2.9 > 3.0 / 1.35)
    near = torch.tensor([[3.0, -1.0, 0.5, 2.9, -4.0]])
    unseen = torch.zeros_like(seen)
    assert sample_next(near, unseen, torch.full((1, 5), 0.5), 20, top_k=1, eos=4)[0].item() == 0
    assert sample_next(near, seen, torch.full((1, 5), 0.5), 20, top_k=1, eos=4)[0].item() == 3


def test_top_p_keeps_the_mass_up_to_p() -> None:
    """Sorted probabilities 0.5, 0.3, 0.2: p 0.6 keeps the first only, p 0.85 the first two (the original drops the crossing token)."""
    logits = torch.log(torch.tensor([[0.3, 0.5, 0.2, 1e-9]]))
    seen = torch.zeros_like(logits, dtype=torch.bool)
    # uniforms near 0 make the exponential noise huge (that token loses), near 1 make it tiny (it wins)
    prefer = lambda i: torch.tensor([[1 - 1e-7 if j == i else 0.01 for j in range(4)]])  # noqa: E731
    assert sample_next(logits, seen, prefer(0), 20, top_k=0, top_p=0.6, eos=3)[0].item() == 1
    assert sample_next(logits, seen, prefer(0), 20, top_k=0, top_p=0.85, eos=3)[0].item() == 0
    assert sample_next(logits, seen, prefer(2), 20, top_k=0, top_p=0.85, eos=3)[0].item() != 2
    assert sample_next(logits, seen, prefer(2), 20, top_k=0, top_p=1.0, eos=3)[0].item() == 2


def test_eos_masked_in_the_first_steps() -> None:
    eos = SMALL.eos
    logits = torch.zeros(1, SMALL.vocab_size)
    logits[0, eos], logits[0, 3] = 10.0, 1.0
    seen = torch.zeros_like(logits, dtype=torch.bool)
    uniforms = torch.full_like(logits, 0.5)
    for step in range(EOS_MIN_STEPS):
        token, stop = sample_next(logits, seen, uniforms, step, top_k=15)
        assert token.item() != eos and not stop.item()
    token, stop = sample_next(logits, seen, uniforms, EOS_MIN_STEPS, top_k=15)
    assert token.item() == eos and stop.item()


def test_stop_when_eos_is_argmax_even_if_not_sampled() -> None:
    eos = SMALL.eos
    logits = torch.zeros(1, SMALL.vocab_size)
    logits[0, eos], logits[0, 3] = 2.0, 1.9
    uniforms = torch.full_like(logits, 0.5)
    uniforms[0, eos] = 1e-30  # EOS gets huge noise: token 3 is sampled
    token, stop = sample_next(logits, torch.zeros_like(logits, dtype=torch.bool), uniforms, 30, top_k=15)
    assert token.item() == 3 and stop.item()


def test_generate_is_deterministic_and_stops() -> None:
    model = _small_model()
    phones, bert, prompt = _inputs()
    uniforms = torch.rand(25, 1, SMALL.vocab_size, generator=torch.Generator().manual_seed(3))
    first = generate(model, phones, bert, prompt, uniforms)
    assert first.shape == (1, 25) and torch.equal(first, generate(model, phones, bert, prompt, uniforms))
    assert generate(model, phones, bert, prompt, uniforms, early_stop_num=5).shape == (1, 6)  # the original keeps the 6th
    with torch.no_grad():  # a constant last hidden state with EOS far ahead: stops when EOS is first allowed
        last = model.h.layers[-1].norm2
        last.weight.zero_()
        last.bias.copy_(torch.linspace(-1, 1, SMALL.d_model))
        model.ar_predict_layer.weight[SMALL.eos] = 10 * last.bias
    assert generate(model, phones, bert, prompt, uniforms).shape == (1, EOS_MIN_STEPS)


# ---------------------------------------------------------------- ONNX


def test_step_exports_to_onnx_and_runs_in_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _small_model()
    phones, bert, prompt = _inputs()
    max_len = 24
    with torch.no_grad():
        _, k_cache, v_cache, filled = model.prefill(phones, bert, prompt, max_len)
    text_len = torch.tensor([phones.shape[1]])
    example = (torch.tensor([[11]]), torch.tensor([filled]), k_cache, v_cache, text_len)
    buffer = io.BytesIO()
    names = ["token", "position", "k_cache", "v_cache", "text_len"]
    with torch.no_grad():
        torch.onnx.export(
            GPTStep(model).eval(), example, buffer, input_names=names, output_names=["logits", "k_new", "v_new"], opset_version=17, dynamo=False
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    k_torch, v_torch, k_ort, v_ort = k_cache, v_cache.clone(), k_cache.clone(), v_cache.clone()
    # One graph for every step: feed it several positions in turn, each step's rows written into its caches.
    for i, token in enumerate([11, 500, 3, 1000]):
        inputs = (torch.tensor([[token]]), torch.tensor([filled + i]))
        with torch.no_grad():
            logits, k_new, v_new = model.step(*inputs, k_torch, v_torch, text_len)
        write_step(k_torch, v_torch, inputs[1], k_new, v_new)
        feed = dict(zip(names, (inputs[0].numpy(), inputs[1].numpy(), k_ort.numpy(), v_ort.numpy(), text_len.numpy())))
        logits_ort, k_new_ort, v_new_ort = map(torch.from_numpy, session.run(None, feed))
        write_step(k_ort, v_ort, inputs[1], k_new_ort, v_new_ort)
        assert abs(logits_ort - logits).max() < 1e-4, f"step {i}"
        assert abs(k_new_ort - k_new).max() < 1e-5 and abs(v_new_ort - v_new).max() < 1e-5
        assert k_new_ort.shape == (SMALL.layers, 1, 1, SMALL.d_model)


def test_sampler_exports_to_onnx_with_its_settings_as_inputs() -> None:
    ort = pytest.importorskip("onnxruntime")
    vocab = SMALL.vocab_size
    generator = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(1, vocab, generator=generator)
    seen = seen_mask(torch.randint(0, SMALL.eos, (1, 30), generator=generator), vocab)
    names = ["logits", "seen", "uniforms", "step", "top_k", "top_p", "temperature", "repetition_penalty"]
    settings = lambda step, k, p, t, r: (torch.tensor(step), torch.tensor(k), torch.tensor(p), torch.tensor(t), torch.tensor(r))  # noqa: E731
    example = (logits, seen, _uniforms(vocab, 0), *settings(20, 15, 1.0, 1.0, 1.35))
    buffer = io.BytesIO()
    torch.onnx.export(GPTSampler(SMALL.eos), example, buffer, input_names=names, output_names=["token", "stop"], opset_version=17, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for seed, setting in enumerate([(20, 15, 1.0, 1.0, 1.35), (3, 50, 0.7, 0.6, 1.35), (30, 0, 0.9, 1.3, 1.0), (12, 1, 1.0, 1.0, 2.0)]):
        args = (logits, seen, _uniforms(vocab, seed), *settings(*setting))
        token, stop = sample_next(*args, eos=SMALL.eos)
        token_ort, stop_ort = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
        assert token_ort.tolist() == token.tolist() and stop_ort.tolist() == stop.tolist(), setting
