"""StoredSpec: the one reader of the spec an exported graph carries, and every reader built on it."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from talkrt.engines.model_files import check_model_file, onnx_spec
from talkrt.engines.profiles import spec_dims
from talkrt.engines.runners import GraphIO
from talkrt.errors import TalkrtError
from talkrt.export.onnx import export_onnx
from talkrt.export.samplers import Sampler
from talkrt.export.spec import SPEC_KEY, Dim, ExportSpec, Gate, StoredSpec, TensorSpec, Tolerance
from talkrt.precision.gates import gates_from_spec_json
from talkrt.precision.plan import DEFAULT_COSINE, calibration_feeds, task_gates

pytestmark = pytest.mark.filterwarnings("ignore")


class Toy(nn.Module):
    """A masked projection, and every other frame of it (a derived dim)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.proj(x) * mask.transpose(1, 2)
        return y, y[:, 0::2]


def toy_spec() -> ExportSpec:
    return ExportSpec(
        family="toy",
        graph="reader",
        build_module=lambda *args, **kwargs: Toy(),
        inputs=(
            TensorSpec("x", ("batch", "frames", 4), convention="features in [-2, 2]", value_range=(-2.0, 2.0)),
            TensorSpec("mask", ("batch", 1, "frames"), sampler=Sampler("mask_from_lengths", dim="frames")),
        ),
        outputs=(
            TensorSpec("y", ("batch", "frames", 2), convention="projected features"),
            TensorSpec("half", ("batch", "half", 2)),
        ),
        dims=(Dim("batch", 1, 2, 8), Dim("frames", 2, 6, 32)),
        derived_dims={"half": "floor((frames + 1) / 2)"},
        opset=18,
        exporter="dynamo",
        exporter_reason="test",
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        validation_points=({"batch": 3, "frames": 7},),
        keep_fp32_ops=("Softmax",),
        keep_fp32_reason="softmax logits overflow in FP16",
        gates=(
            Gate("y", "cosine", 0.999),
            Gate("half", "psnr", 40.0, region=((None, None), (0, 1)), peak=2.0, description="PSNR of the first feature"),
        ),
        metadata={"sample_rate": "16000", "fps": "25"},
    )


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    spec = toy_spec()
    path = tmp_path_factory.mktemp("spec-reader") / "toy.onnx"
    export_onnx(spec, spec.build_module(None, False), path)
    return path


def without_spec(path, out):
    """The same graph with its talkrt.spec property removed (a graph talkrt did not export)."""
    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != SPEC_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


def assert_reads_back(stored: StoredSpec, spec: ExportSpec) -> None:
    assert stored.data == spec.to_json()
    assert (stored.family, stored.graph, stored.opset, stored.exporter) == (spec.family, spec.graph, spec.opset, spec.exporter)
    assert stored.inputs == spec.inputs and stored.outputs == spec.outputs  # conventions, value ranges and samplers too
    assert stored.dims == {d.name: (d.min, d.opt, d.max) for d in spec.dims}
    assert stored.derived_dims == dict(spec.derived_dims)
    assert stored.gates == spec.gates
    assert stored.keep_fp32_ops == spec.keep_fp32_ops and stored.keep_fp32_reason == spec.keep_fp32_reason
    assert stored.tolerance == spec.tolerance
    assert stored.metadata == dict(spec.metadata)


def test_the_reader_returns_what_the_export_spec_wrote(toy_onnx) -> None:
    spec = toy_spec()
    from_path = StoredSpec.from_onnx(toy_onnx)
    assert from_path is not None
    assert_reads_back(from_path, spec)
    from_model = StoredSpec.from_onnx(onnx.load(str(toy_onnx)))
    assert from_model == from_path and from_model.properties[SPEC_KEY] == spec.onnx_metadata()[SPEC_KEY]
    # the property's value, as text or parsed
    text = spec.onnx_metadata()[SPEC_KEY]
    assert StoredSpec.from_json(text).inputs == StoredSpec.from_json(json.loads(text)).inputs == spec.inputs


def test_the_wav2lip_graph_reads_back(wav2lip_onnx) -> None:
    from talkrt.models.wav2lip.specs import wav2lip_spec

    stored = StoredSpec.from_onnx(wav2lip_onnx)
    assert stored is not None
    assert_reads_back(stored, wav2lip_spec())


def test_every_reader_agrees_with_the_spec(toy_onnx) -> None:
    spec = toy_spec()
    model = onnx.load(str(toy_onnx))
    stored = onnx_spec(model, toy_onnx)
    assert stored == StoredSpec.from_onnx(model)
    assert check_model_file(toy_onnx, "ort", ("toy", "reader")) == stored
    with pytest.raises(TalkrtError, match="is talkrt's toy reader graph, not the toy other graph"):
        check_model_file(toy_onnx, "ort", ("toy", "other"))
    assert spec_dims(model) == {"batch": (1, 2, 8), "frames": (2, 6, 32)}
    assert GraphIO.from_onnx(toy_onnx) == GraphIO.from_spec(spec)
    assert GraphIO.from_onnx(toy_onnx).output_shapes({"x": (3, 7, 4), "mask": (3, 1, 7)}) == {"y": (3, 7, 2), "half": (3, 4, 2)}
    assert task_gates(toy_onnx) == list(spec.gates)
    assert gates_from_spec_json(spec.onnx_metadata()[SPEC_KEY]) == list(spec.gates)
    feeds = calibration_feeds(toy_onnx, seed=1)
    assert feeds["x"].shape == (2, 6, 4) and feeds["mask"].shape == (2, 1, 6)
    assert set(feeds["mask"].ravel().tolist()) <= {0.0, 1.0}


def test_a_graph_without_the_property(toy_onnx, tmp_path) -> None:
    foreign = without_spec(toy_onnx, tmp_path / "foreign.onnx")
    model = onnx.load(str(foreign))
    assert StoredSpec.from_onnx(foreign) is None and StoredSpec.from_onnx(model) is None
    assert spec_dims(model) == {}
    message = f"{foreign} was not exported by talkrt \\(no {SPEC_KEY} metadata\\); export it with `talkrt export`"
    with pytest.raises(TalkrtError, match=message):
        onnx_spec(model, foreign)
    with pytest.raises(TalkrtError, match=message):
        check_model_file(foreign, "ort")
    with pytest.raises(TalkrtError, match=message):
        GraphIO.from_onnx(foreign)
    # the default gate: cosine on every float output
    assert [(g.output, g.metric, g.threshold) for g in task_gates(model)] == [("y", "cosine", DEFAULT_COSINE), ("half", "cosine", DEFAULT_COSINE)]


def test_a_partial_spec_serves_the_readers_that_need_only_its_keys() -> None:
    stored = StoredSpec.from_json(json.dumps({"dims": {"n": [1, 2, 4]}}))
    assert stored.dims == {"n": (1, 2, 4)}
    assert stored.gates == () and stored.keep_fp32_ops == () and stored.derived_dims == {} and stored.tolerance is None
    assert stored.family is None and stored.metadata == {}
    with pytest.raises(KeyError):
        stored.inputs
    assert StoredSpec.from_json({}).dims == {}
