"""`talkrt check`: the FP16 plan passes the task gates; a damaged graph fails them, with a verdict table and exit code 4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec
from talkrt.precision.check import check
from talkrt.export.onnx import export_onnx
from talkrt.precision.plan import calibration_feeds, run_onnx
from talkrt.precision.rewrite import convert_to_mixed

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


# --------------------------------------------------------------------------- Polygraphy files


def _load_saved(inputs, outputs):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    return load_json(str(inputs)), RunResults.load(str(outputs))


def _polygraphy_run(model, inputs, outputs, atol: float, rtol: float) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("polygraphy")
    command = [str(script), "run", str(model), "--onnxrt", "--load-inputs", str(inputs), "--load-outputs", str(outputs), "--atol", str(atol), "--rtol", str(rtol)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_saved_files_load_with_polygraphy(hubert_onnx, tmp_path) -> None:
    result = check(hubert_onnx, "fp16", save_inputs=tmp_path / "inputs.json", save_outputs=tmp_path / "outputs.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs.json", "outputs.json"]  # no temporary files left
    inputs, outputs = _load_saved(tmp_path / "inputs.json", tmp_path / "outputs.json")
    feeds = calibration_feeds(hubert_onnx)  # what the fp16 plan was scored on
    assert len(inputs) == 1 and inputs[0].keys() == feeds.keys()
    for name, values in feeds.items():
        np.testing.assert_array_equal(inputs[0][name], values)
    assert list(outputs.keys()) == ["onnxruntime-fp32", "onnxruntime-fp16"]
    saved_fp32, saved_fp16 = outputs["onnxruntime-fp32"][0], outputs["onnxruntime-fp16"][0]
    np.testing.assert_array_equal(saved_fp32["features"], run_onnx(hubert_onnx, feeds)["features"])
    np.testing.assert_array_equal(saved_fp16["features"], result.runs["onnxruntime-fp16"]["features"])
    difference = np.abs(saved_fp16["features"] - saved_fp32["features"]).max()
    assert 0 < difference < 0.05  # the mixed graph really ran in FP16, close to FP32


def test_polygraphy_run_reproduces_the_comparison(hubert_onnx, tmp_path) -> None:
    """A fresh ONNX Runtime run matches the saved FP32 run; Polygraphy then compares that run with the candidate."""
    from talkrt.engines.sanitize import fold_constants

    folded = tmp_path / "folded.onnx"  # an FP32 candidate: the graph as talkrt build parses it
    onnx.save(fold_constants(onnx.load(str(hubert_onnx))), str(folded))
    fp32 = check(hubert_onnx, str(folded), save_inputs=tmp_path / "inputs.json", save_outputs=tmp_path / "fp32.json")
    assert list(fp32.runs) == ["onnxruntime-fp32", "onnxruntime:folded.onnx"]
    run = _polygraphy_run(hubert_onnx, tmp_path / "inputs.json", tmp_path / "fp32.json", atol=1e-5, rtol=1e-5)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "vs. onnxruntime-fp32 | Passed: 1/1" in run.stdout and "onnxruntime-fp32 vs. onnxruntime:folded.onnx | Passed: 1/1" in run.stdout

    fp16 = check(hubert_onnx, "fp16", save_inputs=tmp_path / "inputs.json", save_outputs=tmp_path / "fp16.json")
    runs = fp16.runs
    difference = float(np.abs(runs["onnxruntime-fp16"]["features"] - runs["onnxruntime-fp32"]["features"]).max())
    strict = _polygraphy_run(hubert_onnx, tmp_path / "inputs.json", tmp_path / "fp16.json", atol=1e-5, rtol=1e-5)
    assert strict.returncode != 0 and "onnxruntime-fp32 vs. onnxruntime-fp16 | Passed: 0/1" in strict.stdout
    assert _polygraphy_run(hubert_onnx, tmp_path / "inputs.json", tmp_path / "fp16.json", atol=2 * difference, rtol=0).returncode == 0


@pytest.mark.parametrize("option", ["--save-inputs", "--save-outputs"])
def test_saving_over_the_model_is_refused(hubert_onnx, option) -> None:
    before = hubert_onnx.read_bytes()
    result = runner.invoke(app, ["check", str(hubert_onnx), option, str(hubert_onnx)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"error: {option} {hubert_onnx} is the input ONNX_FILE {hubert_onnx}" in " ".join(result.output.split())
    assert hubert_onnx.read_bytes() == before


def test_cli_saves_both_files(hubert_onnx, tmp_path) -> None:
    inputs, outputs = tmp_path / "in.json", tmp_path / "out.json"
    result = runner.invoke(app, ["check", str(hubert_onnx), "--save-inputs", str(inputs), "--save-outputs", str(outputs)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "wrote outputs of onnxruntime-fp32, onnxruntime-fp16" in result.output
    assert list(_load_saved(inputs, outputs)[1].keys()) == ["onnxruntime-fp32", "onnxruntime-fp16"]
    same = runner.invoke(app, ["check", str(hubert_onnx), "--save-inputs", str(inputs), "--save-outputs", str(inputs)])
    assert same.exit_code == 2 and "is also the output of --save-inputs" in " ".join(same.output.split())
