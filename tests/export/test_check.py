"""`talkrt check`: the FP16 plan passes the task gates; a damaged graph fails them, with a verdict table and exit code 4."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.errors import TalkrtError
from talkrt.export import get_spec
from talkrt.export.check import check
from talkrt.export.onnx import export_onnx
from talkrt.export.precision import convert_to_mixed

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def hubert_onnx(tmp_path_factory):
    spec = get_spec("hubert", preset="tiny-hubert")
    path = tmp_path_factory.mktemp("check") / "hubert.onnx"
    export_onnx(spec, spec.build_module(None, seed=3), path)
    return path


def _damaged_fp16(source, out, scale: float):
    """The FP16 graph talkrt would build, with one projection's weights scaled: a conversion bug's signature."""
    mixed, _ = convert_to_mixed(onnx.load(str(source)), keep_fp32_ops=("LayerNormalization", "Softmax"))
    largest = max(mixed.graph.initializer, key=lambda t: np.prod(t.dims))
    values = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array((values * scale).astype(values.dtype), largest.name))
    onnx.save(mixed, str(out))
    return out


def test_fp16_plan_passes(hubert_onnx) -> None:
    result = check(hubert_onnx, "fp16")
    assert result.passed
    assert [row["metric"] for row in result.rows] == ["cosine"]
    assert result.rows[0]["value"] > 0.999


def test_undamaged_fp16_graph_passes_and_damaged_one_fails(hubert_onnx, tmp_path) -> None:
    fine = check(hubert_onnx, str(_damaged_fp16(hubert_onnx, tmp_path / "fine.onnx", 1.0)))
    assert fine.passed
    damaged = check(hubert_onnx, str(_damaged_fp16(hubert_onnx, tmp_path / "damaged.onnx", 1.5)))
    assert not damaged.passed and damaged.rows[0]["value"] < 0.995


def test_cli_verdict_and_exit_code(hubert_onnx, tmp_path) -> None:
    result = runner.invoke(app, ["check", str(hubert_onnx)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "pass" in result.output and "as good as FP32" in result.output
    damaged = _damaged_fp16(hubert_onnx, tmp_path / "damaged.onnx", 1.5)
    result = runner.invoke(app, ["check", str(hubert_onnx), "--candidate", str(damaged)], env={"COLUMNS": "160"})
    assert result.exit_code == 4
    assert "FAIL" in result.output and "fails 1 of 1 gates against FP32" in result.output


def test_wav2lip_mouth_gate(wav2lip_onnx, tmp_path) -> None:
    """The renderer is judged on PSNR of the mouth region and of the whole face."""
    result = check(wav2lip_onnx, "fp16")
    assert [row["metric"] for row in result.rows] == ["psnr", "psnr"] and result.passed
    mixed, _ = convert_to_mixed(onnx.load(str(wav2lip_onnx)))
    # Damage only the last conv's bias: the mouth PSNR must drop below its 40 dB gate.
    last_conv = [n for n in mixed.graph.node if n.op_type == "Conv"][-1]
    bias = next(t for t in mixed.graph.initializer if t.name == last_conv.input[2])
    bias.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(bias) + 0.5).astype(np.float16), bias.name))
    onnx.save(mixed, str(tmp_path / "bad.onnx"))
    bad = check(wav2lip_onnx, str(tmp_path / "bad.onnx"))
    assert not bad.passed and bad.rows[0]["value"] < 40


def test_candidate_of_another_graph(hubert_onnx, wav2lip_onnx) -> None:
    with pytest.raises(TalkrtError, match="is not a version of the same graph"):
        check(hubert_onnx, str(wav2lip_onnx))
    with pytest.raises(TalkrtError, match="candidate not found"):
        check(hubert_onnx, "missing.engine")
