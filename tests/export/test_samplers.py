"""Example inputs: each sampler kind, and the VITS decoder's output_mask as `build --precision auto` and `check` draw it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from talkrt.models.registry import get_spec
from talkrt.precision.check import check
from talkrt.precision.plan import SPEC_KEY, calibration_feeds
from talkrt.export.samplers import INTEGERS, NORMAL, UNIFORM, Sampler, default_sampler, lengths_over, mask_over, sample_inputs
from talkrt.export.spec import Dim, ExportSpec, TensorSpec, Tolerance
from talkrt.models.vits.specs import export_vits

pytestmark = pytest.mark.filterwarnings("ignore")


def assert_prefix_mask(mask: np.ndarray, frames: int) -> None:
    """Only 0 and 1; along frames 1 then 0 for each item; at least one 1 per item."""
    assert mask.dtype == np.float32 and mask.shape[1:] == (1, frames)
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    rows = mask[:, 0, :]
    lengths = rows.sum(axis=1)
    assert (lengths >= 1).all()
    expected = (np.arange(frames)[None, :] < lengths[:, None]).astype(np.float32)
    assert np.array_equal(rows, expected)


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("vits-tiny-decoder")
    export_vits(out, preset="tiny", seed=0, graphs=("decoder",))
    return out / "decoder.onnx"


@pytest.mark.parametrize("dims", [None, {"batch": 4, "frames": 37}], ids=["opt", "batch4-frames37"])
@pytest.mark.parametrize("seed", [0, 7])
def test_vits_decoder_calibration_mask_is_a_prefix_mask(tiny_decoder, dims, seed) -> None:
    # calibration_feeds is what plan_precision (build --precision auto) and check draw from
    feeds = calibration_feeds(tiny_decoder, dims=dims, seed=seed)
    frames = (dims or {}).get("frames", 256)
    mask = feeds["output_mask"]
    assert mask.shape[0] == (dims or {}).get("batch", 1)
    assert_prefix_mask(mask, frames)
    # the expanded prior is zero beyond each item's frames, as length regulation leaves it
    for name in ("prior_means", "prior_log_variances"):
        assert not (feeds[name] * (1.0 - mask)).any()


def test_check_scores_the_vits_decoder_on_a_prefix_mask(tiny_decoder, tmp_path) -> None:
    result = check(tiny_decoder, "fp16", save_inputs=tmp_path / "inputs.json")
    assert_prefix_mask(result.feeds["output_mask"], 256)


def test_file_without_samplers_draws_as_before(tiny_decoder, tmp_path) -> None:
    # a file exported before samplers: its inputs are drawn uniformly from their value ranges
    model = onnx.load(str(tiny_decoder))
    prop = next(p for p in model.metadata_props if p.key == SPEC_KEY)
    spec = json.loads(prop.value)
    assert spec["inputs"][4]["sampler"] == {"kind": "mask_from_lengths", "dim": "frames"}
    for tensor in spec["inputs"]:
        tensor.pop("sampler", None)
    prop.value = json.dumps(spec)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    feeds = calibration_feeds(old, seed=3)
    expected = legacy_numpy_draws(spec, seed=3)
    assert feeds.keys() == expected.keys()
    for name in feeds:
        assert np.array_equal(feeds[name], expected[name]), name


# ----------------------------------------------------------------------------- the draws as they were before samplers


def legacy_numpy_draws(spec: dict, seed: int, dims: dict | None = None) -> dict[str, np.ndarray]:
    """How precision plans drew a spec's inputs before samplers."""
    rng = np.random.default_rng(seed)
    sizes = {name: sizes[1] for name, sizes in spec["dims"].items()}
    sizes.update(dims or {})
    feeds = {}
    for tensor in spec["inputs"]:
        shape = tuple(sizes[s] if isinstance(s, str) else s for s in tensor["shape"])
        low, high = tensor["value_range"]
        dtype = np.dtype(tensor["dtype"])
        if np.issubdtype(dtype, np.integer):
            feeds[tensor["name"]] = rng.integers(int(low), int(high) + 1, shape).astype(dtype)
        else:
            feeds[tensor["name"]] = rng.uniform(low, high, shape).astype(dtype)
    return feeds


def legacy_torch_draws(spec: ExportSpec, point: dict, seed: int) -> dict[str, torch.Tensor]:
    """How ExportSpec.example_inputs drew before samplers."""
    point = {**spec.trace_point, **point}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for tensor in spec.inputs:
        low, high = tensor.value_range
        shape = spec.shape(tensor, point)
        if tensor.dtype.startswith("int"):
            tensors[tensor.name] = torch.randint(int(low), int(high) + 1, shape, generator=generator, dtype=getattr(torch, tensor.dtype))
        else:
            tensors[tensor.name] = torch.rand(shape, generator=generator, dtype=getattr(torch, tensor.dtype)) * (high - low) + low
    return tensors


SPECS_WITHOUT_SAMPLERS = [
    ("wav2lip", {}),
    ("mel", {}),
    ("dinet", {}),
    ("dinet-mapper", {}),
    ("hubert", {"preset": "tiny-hubert"}),
    ("dhlive-render", {"graph": "generator"}),
    ("dhlive-render", {"graph": "reference"}),
    ("dhlive-audio", {}),
]


@pytest.mark.parametrize("family,options", SPECS_WITHOUT_SAMPLERS, ids=lambda v: v if isinstance(v, str) else "-".join(v.values()))
def test_inputs_without_samplers_are_drawn_bit_for_bit_as_before(family, options) -> None:
    spec = get_spec(family, **options)
    assert all(t.sampler is None for t in spec.inputs) and all("sampler" not in t for t in spec.to_json()["inputs"])
    for index, point in enumerate((spec.trace_point, *spec.validation_points)):
        actual, expected = spec.example_inputs(point, seed=index), legacy_torch_draws(spec, point, seed=index)
        for name in expected:
            assert torch.equal(actual[name], expected[name]), (name, point)
    stub = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    stub.metadata_props.add(key=SPEC_KEY, value=json.dumps(spec.to_json()))
    for dims in (None, {"batch": 2}):
        actual, expected = calibration_feeds(stub, dims=dims, seed=5), legacy_numpy_draws(spec.to_json(), seed=5, dims=dims)
        for name in expected:
            assert np.array_equal(actual[name], expected[name]) and actual[name].dtype == expected[name].dtype, name


# ----------------------------------------------------------------------------- each kind, on both generators


def tensor(name: str, shape: tuple, dtype: str = "float32", value_range=(0.0, 1.0), sampler: Sampler | None = None) -> TensorSpec:
    return TensorSpec(name, shape, dtype, value_range=value_range, sampler=sampler)


def as_numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else value


GENERATORS = {"torch": lambda seed: torch.Generator().manual_seed(seed), "numpy": np.random.default_rng}


@pytest.mark.parametrize("backend", GENERATORS)
def test_uniform_and_integers_stay_in_their_ranges(backend) -> None:
    inputs = (tensor("x", ("batch", 500), value_range=(-2.0, 3.0), sampler=UNIFORM), tensor("ids", ("batch", 500), "int64", (4, 9)))
    drawn = {k: as_numpy(v) for k, v in sample_inputs(inputs, {"batch": 3}, GENERATORS[backend](0)).items()}
    assert drawn["x"].shape == (3, 500) and drawn["x"].dtype == np.float32
    assert -2.0 <= drawn["x"].min() and drawn["x"].max() <= 3.0 and drawn["x"].std() > 1.0
    assert drawn["ids"].dtype == np.int64 and set(np.unique(drawn["ids"]).tolist()) == set(range(4, 10))  # both ends included


@pytest.mark.parametrize("backend", GENERATORS)
def test_normal_is_standard_normal(backend) -> None:
    # the value range is only what readers without samplers fall back to
    inputs = (tensor("noise", (4, 5000), value_range=(-3.0, 3.0), sampler=NORMAL),)
    noise = as_numpy(sample_inputs(inputs, {}, GENERATORS[backend](1))["noise"])
    assert noise.dtype == np.float32 and abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05
    assert np.abs(noise).max() > 3.0


@pytest.mark.parametrize("backend", GENERATORS)
def test_lengths_fill_the_first_item_and_stay_in_range(backend) -> None:
    inputs = (tensor("lengths", ("batch",), "int64", (1, 64), lengths_over("tokens")),)
    for seed in range(5):
        lengths = as_numpy(sample_inputs(inputs, {"batch": 6, "tokens": 9}, GENERATORS[backend](seed))["lengths"])
        assert lengths.shape == (6,) and lengths.dtype == np.int64
        assert lengths[0] == 9 and lengths.min() >= 1 and lengths.max() <= 9  # the range follows the dim, not value_range


@pytest.mark.parametrize("backend", GENERATORS)
def test_mask_from_its_own_lengths_is_a_prefix_mask(backend) -> None:
    inputs = (tensor("mask", ("batch", 1, "frames"), sampler=mask_over("frames")),)
    for seed in range(5):
        mask = as_numpy(sample_inputs(inputs, {"batch": 5, "frames": 11}, GENERATORS[backend](seed))["mask"])
        assert_prefix_mask(mask, 11)
        assert mask[0].all()  # the first item fills the padded width
    one = as_numpy(sample_inputs(inputs, {"batch": 2, "frames": 1}, GENERATORS[backend](0))["mask"])
    assert one.tolist() == [[[1.0]], [[1.0]]]


@pytest.mark.parametrize("backend", GENERATORS)
def test_mask_agrees_with_a_lengths_input_and_masks_other_inputs(backend) -> None:
    inputs = (
        tensor("values", ("batch", 3, "tokens"), value_range=(1.0, 2.0), sampler=Sampler("uniform", masked_by="mask")),
        tensor("mask", ("batch", 3, "tokens"), sampler=mask_over("tokens", lengths="lengths")),  # drawn after the lengths it reads
        tensor("lengths", ("batch",), "int64", sampler=lengths_over("tokens")),
    )
    drawn = {k: as_numpy(v) for k, v in sample_inputs(inputs, {"batch": 4, "tokens": 7}, GENERATORS[backend](2)).items()}
    expected = (np.arange(7)[None, None, :] < drawn["lengths"][:, None, None]) & np.ones((4, 3, 7), bool)
    assert np.array_equal(drawn["mask"], expected.astype(np.float32)) and drawn["mask"].flags.c_contiguous
    assert np.array_equal(drawn["values"] != 0, expected)  # drawn in [1, 2], zero exactly where masked


def test_a_mask_reading_an_input_draws_nothing() -> None:
    # adding such a mask (or masked_by) leaves the other inputs' values as they were
    plain = (tensor("a", (2, 3)), tensor("lengths", (2,), "int64", sampler=lengths_over("n")), tensor("b", (2, 4)))
    masked = (plain[0], plain[1], tensor("m", (2, "n"), sampler=mask_over("n", lengths="lengths")), plain[2])
    for make in GENERATORS.values():
        first, second = sample_inputs(plain, {"n": 5}, make(0)), sample_inputs(masked, {"n": 5}, make(0))
        for name in ("a", "lengths", "b"):
            assert np.array_equal(as_numpy(first[name]), as_numpy(second[name]))


def test_default_sampler_follows_the_dtype() -> None:
    assert default_sampler("int64") == INTEGERS and default_sampler("int32") == INTEGERS
    assert default_sampler("float32") == UNIFORM and default_sampler("float16") == UNIFORM


def test_samplers_travel_in_the_spec_json() -> None:
    samplers = [UNIFORM, INTEGERS, NORMAL, lengths_over("tokens"), mask_over("frames"), mask_over("tokens", "lengths"), Sampler("uniform", masked_by="m")]
    for sampler in samplers:
        assert Sampler.from_json(json.loads(json.dumps(sampler.to_json()))) == sampler
    decoder = get_spec("vits", graph="decoder", preset="tiny")
    stored = json.loads(decoder.onnx_metadata()[SPEC_KEY])
    assert [TensorSpec.from_json(t) for t in stored["inputs"]] == list(decoder.inputs)
    assert {t["name"]: t.get("sampler") for t in stored["inputs"]} == {
        "prior_means": {"kind": "uniform", "masked_by": "output_mask"},
        "prior_log_variances": {"kind": "uniform", "masked_by": "output_mask"},
        "latent_noise": {"kind": "normal"},
        "noise_scale": None,
        "output_mask": {"kind": "mask_from_lengths", "dim": "frames"},
    }


def test_vits_validation_inputs_are_masked_and_gaussian() -> None:
    for graph in ("encoder", "decoder"):
        spec = get_spec("vits", graph=graph, preset="tiny")
        for index, point in enumerate(spec.validation_points):
            point = {**spec.trace_point, **point}
            inputs = spec.example_inputs(point, seed=index)
            if graph == "encoder":
                lengths = inputs["input_lengths"]
                assert lengths[0] == point["tokens"] and 1 <= int(lengths.min()) and int(lengths.max()) <= point["tokens"]
            else:
                mask = inputs["output_mask"].numpy()
                assert_prefix_mask(mask, point["frames"])
                assert not (inputs["prior_means"].numpy() * (1.0 - mask)).any()


@pytest.mark.parametrize(
    "sampler,message",
    [
        (lengths_over("nope"), "not one of its dims"),
        (mask_over("batch"), "no such axis"),
        (mask_over("n", lengths="missing"), "not another input"),
        (Sampler("uniform", masked_by="x"), "not another input"),
        (Sampler("uniform", masked_by="y"), "not a mask"),
    ],
)
def test_spec_refuses_samplers_that_cannot_be_drawn(sampler, message) -> None:
    with pytest.raises(ValueError, match=message):
        ExportSpec(
            family="toy", graph="toy", build_module=lambda *a, **k: None,
            inputs=(TensorSpec("x", (2, "n"), sampler=sampler), TensorSpec("y", (2, "n"))),
            outputs=(TensorSpec("z", (2, "n")),), dims=(Dim("batch", 1, 1, 2), Dim("n", 1, 4, 8)),
            opset=17, exporter="legacy", exporter_reason="", tolerance=Tolerance(1e-5, 1e-5), validation_points=({"n": 2},),
        )


@pytest.mark.parametrize("bad", [{"kind": "poisson"}, {"kind": "lengths"}, {"kind": "uniform", "dim": "n"}, {"kind": "lengths", "dim": "n", "lengths": "x"}])
def test_malformed_samplers_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        Sampler.from_json(bad)
