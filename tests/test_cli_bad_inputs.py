"""Bad inputs a new user types, each kept as a regression: exit 2, one line, no traceback, no
"internal error", nothing left behind, and every input byte-identical afterwards.

The commands run in-process through `talkrt.cli.main` (the console entry point, so usage
mistakes are checked as users see them); one exported Wav2Lip graph serves every case.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talkrt.cli import main

UNWRITABLE = Path("/sys/talkrt-test")  # a read-only mount on Linux, for root too


def _stand_in(path: Path, metadata: dict[str, str], family: str | None = None) -> None:
    """A small graph with Wav2Lip's inputs and talkrt's metadata: what the checks read, without
    the 139 MiB of weights that every case would otherwise copy and hash."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("face_sequences", TensorProto.FLOAT, ["batch", 6, 96, 96]), helper.make_tensor_value_info("audio_sequences", TensorProto.FLOAT, ["batch", 1, 80, 16])]
    output = helper.make_tensor_value_info("generated_faces", TensorProto.FLOAT, ["batch", 6, 96, 96])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["face_sequences"], ["generated_faces"])], "stand_in", inputs, [output]))
    props = dict(metadata)
    if family is not None:
        spec = json.loads(props["talkrt.spec"])
        spec.update(family=family, graph=family)
        props.update({"talkrt.spec": json.dumps(spec), "talkrt.family": family})
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory, wav2lip_onnx) -> dict[str, Path]:
    """Inputs shared by the cases (copied into each case's folder, which is checked afterwards)."""
    from talkrt.export.onnx import read_metadata
    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.media import write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    root = tmp_path_factory.mktemp("inputs")
    write_wav(root / "speech.wav", synthetic_speech(1.0, seed=2), 16000)
    synthetic_avatar(num_frames=3).save(root / "avatar.npz")
    metadata = read_metadata(wav2lip_onnx)
    _stand_in(root / "wav2lip.onnx", metadata)
    _stand_in(root / "hubert.onnx", metadata, family="hubert")  # a talkrt graph of another family
    data = (root / "wav2lip.onnx").read_bytes()
    (root / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (root / "text.onnx").write_text("this is not a model\n")
    (root / "boxes.json").write_text("[[10, 10, 60, 60]]\n")
    (root / "w.pth").write_bytes(b"PK\x03\x04 stands in for an official checkpoint")
    (root / "wav2lip.engine").write_bytes(os.urandom(4096))
    return {path.name: path for path in root.iterdir()}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def invoke(args: list[str], capsys) -> tuple[int, str]:
    before = signal.getsignal(signal.SIGTERM)
    try:
        code = main(args)
    finally:
        signal.signal(signal.SIGTERM, before)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


RUN = ["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "wav2lip.onnx", "--audio", "speech.wav"]

CASES = {
    # data loss: an output that is one of the inputs
    "out_eq_audio": (RUN + ["--out", "speech.wav"], "--out speech.wav is the input --audio speech.wav"),
    "out_eq_avatar": (["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "wav2lip.onnx", "--audio", "speech.wav", "--out", "avatar.npz"], "is the input --avatar"),
    "out_eq_model": (RUN + ["--out", "wav2lip.onnx"], "is the input --model"),
    "out_eq_link": (RUN + ["--out", "link.wav"], "is the input --audio"),
    "out_eq_build": (["build", "wav2lip.onnx", "--out", "wav2lip.onnx", "--no-cache"], "is the input ONNX_FILE"),
    "out_eq_export": (["export", "wav2lip", "--checkpoint", "w.pth", "--out", "w.pth"], "is the input --checkpoint"),
    "out_eq_avatar_prepare": (["avatar", "prepare", "speech.wav", "--out", "speech.wav"], "is the input SOURCE"),
    "out_eq_report": (["profile", *RUN[1:], "--boxes", "boxes.json", "--out", "o.mp4", "--report", "boxes"], "--report boxes.json is the input --boxes boxes.json"),
    # outputs that cannot be written, found before any work
    "out_isdir": (RUN + ["--out", "existing_dir"], "is a directory"),
    "out_parent_is_file": (RUN + ["--out", "afile/o.mp4"], "cannot create its folder"),
    "out_ro": (RUN + ["--out", str(UNWRITABLE / "o.mp4")], "cannot write into /sys"),
    "export_ro": (["export", "wav2lip", "--random-init", "--out", str(UNWRITABLE / "w.onnx")], "cannot write into /sys"),
    "build_ro": (["build", "wav2lip.onnx", "--out", str(UNWRITABLE / "e.engine"), "--no-cache"], "cannot write into /sys"),
    "avatar_ro": (["avatar", "prepare", "speech.wav", "--out", str(UNWRITABLE / "a.npz")], "cannot write into /sys"),
    "profile_ro_report": (["profile", *RUN[1:], "--out", "o.mp4", "--report", str(UNWRITABLE / "prof")], "cannot write into /sys"),
    "demo_out_is_file": (["demo", "--out-dir", "speech.wav"], "is a file, not a folder"),
    # mistakes that used to be "internal error" (exit 1)
    "fps_zero": (RUN + ["--fps", "0"], "--fps '0'"),
    "fps_neg": (RUN + ["--fps", "-25"], "--fps '-25'"),
    "fps_abc": (RUN + ["--fps", "abc"], "give a frame rate"),
    "fps_huge": (RUN + ["--fps", "1000"], "at most 120"),
    "device_bad": (RUN + ["--device", "tpu"], "unknown device 'tpu'"),
    "sc_nan": (RUN + ["--stream-chunk-ms", "nan"], "--stream-chunk-ms nan"),
    "sc_inf": (RUN + ["--stream-chunk-ms", "inf"], "--stream-chunk-ms inf"),
    "sc_neg": (RUN + ["--stream-chunk-ms", "-40"], "--stream-chunk-ms -40"),
    "sc_zero": (RUN + ["--stream-chunk-ms", "0"], "--stream-chunk-ms 0"),
    "ox_run_trunc": (["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "trunc.onnx", "--audio", "speech.wav"], "trunc.onnx is not a valid ONNX file"),
    "ox_run_text": (["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "text.onnx", "--audio", "speech.wav"], "text.onnx is not a valid ONNX file"),
    "ox_run_engine_as_ort": (["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "wav2lip.engine", "--audio", "speech.wav"], "is a TensorRT engine: run it with --backend trt"),
    "ox_run_hubert_as_w2l": (["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "hubert.onnx", "--audio", "speech.wav"], "is talkrt's hubert graph, not the wav2lip graph"),
    "chk_trunc": (["check", "trunc.onnx"], "trunc.onnx is not a valid ONNX file"),
    "inspect_text": (["inspect", "text.onnx"], "text.onnx is not a valid ONNX file"),
    "inspect_dir": (["inspect", "existing_dir"], "file existing_dir is a directory"),
    "mdl_onnx_as_trt": (["run", "--avatar", "avatar.npz", "--backend", "trt", "--model", "wav2lip.onnx", "--audio", "speech.wav"], "--out wav2lip.engine"),
    "mdl_dir": (["run", "--avatar", "avatar.npz", "--backend", "ort", "--model", "existing_dir", "--audio", "speech.wav"], "is a directory"),
    # broken JSON beside a model: one line naming the file, not a traceback
    "json_hubert_config": (["export", "hubert", "--checkpoint", "hubert_dir", "--out", "h.onnx"], "hubert_dir/config.json is not valid JSON"),
    "json_voice_manifest": (["tts", "hello", "--onnx", "voice_dir"], "voice_dir/manifest.json is not valid JSON"),
    # profiles
    "bp_shared_dim": (["build", "wav2lip.onnx", "--no-cache", "--profile", "face_sequences:1x6x96x96,2x6x96x96,4x6x96x96", "--profile", "batch:1,8,16"], "the inputs share that dim"),
    "bp_huge": (["build", "wav2lip.onnx", "--no-cache", "--profile", "batch:1,8,1000000"], "max 1000000 is over 16x"),
    # usage mistakes: one line instead of typer's box
    "bs_zero": (RUN + ["--batch-size", "0"], "Invalid value for '--batch-size'"),
    "bp_optlevel": (["build", "wav2lip.onnx", "--opt-level", "9"], "Invalid value for '--opt-level'"),
    "no_such_option": (RUN + ["--nope"], "No such option"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_destroys_nothing(case, files, tmp_path, capsys, monkeypatch) -> None:
    args, message = CASES[case]
    for path in files.values():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "existing_dir").mkdir()
    (tmp_path / "afile").write_text("a file, not a folder\n")
    (tmp_path / "link.wav").symlink_to(tmp_path / "speech.wav")
    for folder, name in (("hubert_dir", "config.json"), ("voice_dir", "manifest.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text('{"model_type": "hubert",\n')
    before = _digest(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, output = invoke(args, capsys)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert message in lines[0], lines[0]
    assert "internal error" not in output and "Traceback" not in output
    assert _digest(tmp_path) == before  # inputs byte-identical, nothing written, nothing left behind


def test_a_shared_dim_set_through_one_input_reaches_the_others() -> None:
    from talkrt.engines.profiles import resolve_profile
    from talkrt.export.spec import TensorSpec

    inputs = [TensorSpec("face_sequences", ("batch", 6, 96, 96), "float32"), TensorSpec("audio_sequences", ("batch", 1, 80, 16), "float32")]
    from talkrt.engines.profiles import parse_profile_override

    profile = resolve_profile(inputs, {"batch": (1, 8, 128)}, [parse_profile_override("face_sequences:1x6x96x96,2x6x96x96,4x6x96x96")])
    assert profile["audio_sequences"] == ((1, 1, 80, 16), (2, 1, 80, 16), (4, 1, 80, 16))
    assert profile["face_sequences"][2] == (4, 6, 96, 96)


def test_sigterm_cleans_up_like_ctrl_c(files, tmp_path) -> None:
    """SIGTERM mid-render: exit 143, one line, no hidden temporary file left beside the output."""
    from talkrt.runtime.media import write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    write_wav(tmp_path / "long.wav", synthetic_speech(30.0, seed=1), 16000)
    shutil.copy(files["avatar.npz"], tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "talkrt", "run", "--avatar", "avatar.npz", "--backend", "torch", "--device", "cpu", "--batch-size", "2", "--audio", "long.wav", "--out", "out/final.mp4"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while not list(out.glob(".final.mp4.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it was writing: " + process.stderr.read()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "terminated"
    assert list(out.iterdir()) == []
